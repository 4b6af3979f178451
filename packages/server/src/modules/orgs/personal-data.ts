import type { Transaction } from 'kysely';
import type { PersonalDataSource } from '../../core/personal-data.ts';
import { purgeAfter, type RetentionPolicy } from '../../core/retention.ts';
import type { Database } from '../../db/schema.ts';

/**
 * What the organizations module holds about a person, for a data export: their memberships, and the invitations
 * they sent — without the invitee's address, which is someone else's data.
 */
export const orgPersonalData: PersonalDataSource[] = [
  {
    name: 'memberships',
    async export(db, userId) {
      const rows = await db
        .selectFrom('memberships')
        .innerJoin('organizations', 'organizations.id', 'memberships.org_id')
        .select([
          'memberships.org_id',
          'organizations.name as org_name',
          'memberships.role',
          'memberships.created_at',
          'memberships.updated_at',
        ])
        .where('memberships.user_id', '=', userId)
        .orderBy('memberships.created_at')
        .execute();
      return rows.map((r) => ({
        orgId: r.org_id,
        orgName: r.org_name,
        role: r.role,
        joinedAt: r.created_at,
        updatedAt: r.updated_at,
      }));
    },
    /**
     * Organizations the person is the only member of go with them (everything they own cascades; their audit log
     * stays, pseudonymised by the audit module's eraser). Their other memberships go with the account.
     */
    async erase(db, subject) {
      for (const orgId of await soleMemberOrgs(db, subject.userId)) {
        await db.deleteFrom('organizations').where('id', '=', orgId).execute();
      }
    },
    /** Refuses to erase the only owner of an organization that has other members: ownership must move first. */
    async blockers(db, userId) {
      const owned = await db
        .selectFrom('memberships')
        .innerJoin('organizations', 'organizations.id', 'memberships.org_id')
        .select(['memberships.org_id', 'organizations.name'])
        .where('memberships.user_id', '=', userId)
        .where('memberships.role', '=', 'owner')
        .execute();
      const blocked: string[] = [];
      for (const org of owned) {
        const others = await db
          .selectFrom('memberships')
          .select([
            (eb) => eb.fn.countAll<number>().as('members'),
            (eb) =>
              eb.fn.sum<number>(eb.case().when('role', '=', 'owner').then(1).else(0).end()).as('owners'),
          ])
          .where('org_id', '=', org.org_id)
          .where('user_id', '!=', userId)
          .executeTakeFirstOrThrow();
        if (Number(others.members) > 0 && Number(others.owners ?? 0) === 0) {
          blocked.push(
            `the only owner of "${org.name}" (${org.org_id}), which has other members: make another member owner, or delete it`,
          );
        }
      }
      return blocked;
    },
  },
  {
    name: 'invitationsSent',
    async export(db, userId) {
      const rows = await db
        .selectFrom('invitations')
        .select(['id', 'org_id', 'role', 'created_at', 'expires_at', 'accepted_at', 'revoked_at'])
        .where('invited_by', '=', userId)
        .orderBy('created_at')
        .execute();
      return rows.map((r) => ({
        id: r.id,
        orgId: r.org_id,
        role: r.role,
        createdAt: r.created_at,
        expiresAt: r.expires_at,
        acceptedAt: r.accepted_at,
        revokedAt: r.revoked_at,
      }));
    },
    /** Invitations addressed to the person hold their address: they go. Those they sent lose their sender (FK). */
    async erase(db, subject) {
      await db.deleteFrom('invitations').where('email', '=', subject.email).execute();
    },
  },
];

/** The organizations whose only member is the user. */
async function soleMemberOrgs(db: Transaction<Database>, userId: string): Promise<string[]> {
  const mine = await db.selectFrom('memberships').select('org_id').where('user_id', '=', userId).execute();
  const sole: string[] = [];
  for (const { org_id } of mine) {
    const others = await db
      .selectFrom('memberships')
      .select('id')
      .where('org_id', '=', org_id)
      .where('user_id', '!=', userId)
      .executeTakeFirst();
    if (!others) sole.push(org_id);
  }
  return sole;
}

/** Invitations, once accepted, revoked or expired, are kept this long (docs/operations.md). */
export const invitationRetention: RetentionPolicy = {
  name: 'invitations',
  description: 'invitations once accepted, revoked or expired',
  days: 30,
  apply: purgeAfter({ table: 'invitations', after: ['accepted_at', 'revoked_at', 'expires_at'] }),
};
