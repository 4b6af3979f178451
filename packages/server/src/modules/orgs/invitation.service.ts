import { apiKeyErrors, type Invitation, orgErrors } from '@plinth/shared';
import type { Selectable } from 'kysely';
import { randomToken, sha256Hex } from '../../core/crypto.ts';
import { AppError } from '../../core/errors.ts';
import { newId } from '../../core/ids.ts';
import { type ListSpec, type NoFilters, paginate } from '../../core/pagination.ts';
import { isUniqueViolation } from '../../db/errors.ts';
import type { InvitationsTable } from '../../db/schema.ts';
import { type AuditContext, fieldChanges, recordAuditEvent } from '../audit/record.ts';
import { findUserByEmail, normalizeEmail, type Principal, prepareInvitedAccount } from '../auth/index.ts';
import { mailTemplates, sendInBackground } from '../mail/index.ts';
import { assertCanGrant, lockOrgAccess, type OrgAccess, requireRolePermissions } from '../rbac/index.ts';
import type { OrgDeps } from './deps.ts';
import { memberInTransaction } from './member.service.ts';
import { findOrg } from './org.repo.ts';

function toInvitation(row: Selectable<InvitationsTable>): Invitation {
  return {
    id: row.id,
    email: row.email,
    role: row.role,
    invitedBy: row.invited_by,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
  };
}

export const invitationsList: ListSpec<'createdAt' | 'email', NoFilters> = {
  sort: { createdAt: 'created_at', email: 'email' },
  defaultSort: '-createdAt',
};

/** The organization's pending invitations: neither accepted, revoked nor expired. */
export async function listInvitations(
  deps: OrgDeps,
  access: OrgAccess,
  query: { limit: number; cursor?: string | undefined; sort: string },
): Promise<{ data: Invitation[]; nextCursor: string | null }> {
  const now = deps.clock.now().toISOString();
  const page = await deps.database.withTenant(access.orgId, (db) =>
    paginate(
      db
        .selectFrom('invitations')
        .selectAll()
        .where('accepted_at', 'is', null)
        .where('revoked_at', 'is', null)
        .where('expires_at', '>', now),
      query,
      invitationsList,
    ),
  );
  return { data: page.data.map(toInvitation), nextCursor: page.nextCursor };
}

/**
 * Invites an address with a role the caller could grant. An earlier pending invitation of the same address is
 * replaced (its link stops working). The link carries the token in its fragment, which never reaches a server log.
 */
export async function createInvitation(
  deps: OrgDeps,
  access: OrgAccess,
  input: { email: string; role: string },
  audit: AuditContext,
): Promise<Invitation> {
  // Invitations come from people: the mail names the inviter.
  if (access.principal.type !== 'user') throw new AppError(apiKeyErrors.API_KEY_NOT_ALLOWED);
  const inviterId = access.principal.userId;
  const email = normalizeEmail(input.email);
  const now = deps.clock.now();
  const token = randomToken(32);
  const row = {
    id: newId(),
    org_id: access.orgId,
    email,
    role: input.role,
    token_hash: sha256Hex(token),
    invited_by: inviterId,
    created_at: now.toISOString(),
    expires_at: new Date(now.getTime() + deps.config.orgs.invitationTtlSeconds * 1000).toISOString(),
    accepted_at: null,
    accepted_by: null,
    revoked_at: null,
  };
  const existing = await findUserByEmail(deps.auth, email);
  await deps.database.withTenant(access.orgId, async (db) => {
    await lockOrgAccess(db, deps.database.dialect, access.orgId);
    assertCanGrant(access, await requireRolePermissions(deps, db, input.role));
    if (existing) {
      const member = await db
        .selectFrom('memberships')
        .select('id')
        .where('user_id', '=', existing.id)
        .executeTakeFirst();
      if (member) throw new AppError(orgErrors.ALREADY_MEMBER);
    }
    await db
      .updateTable('invitations')
      .set({ revoked_at: row.created_at })
      .where('email', '=', email)
      .where('accepted_at', 'is', null)
      .where('revoked_at', 'is', null)
      .execute();
    await db.insertInto('invitations').values(row).execute();
    await recordAuditEvent(db, audit, {
      action: 'invitation.created',
      target: { type: 'invitation', id: row.id },
      changes: fieldChanges(null, { email, role: input.role }),
    });
    await deps.events.publish(db, {
      orgId: access.orgId,
      type: 'invitation.created',
      data: toInvitation(row),
    });
  });

  const [org, inviter] = await Promise.all([
    findOrg(deps.database.db, access.orgId),
    deps.database.db.selectFrom('users').select('name').where('id', '=', inviterId).executeTakeFirst(),
  ]);
  const url = `${deps.config.publicUrl}/accept-invitation#token=${token}`;
  const mail = mailTemplates.invitation({
    orgName: org?.name ?? '',
    inviterName: inviter?.name ?? '',
    role: input.role,
    url,
    expiresInDays: Math.round(deps.config.orgs.invitationTtlSeconds / 86_400),
  });
  sendInBackground(deps.mailer, { to: email, ...mail, actionUrl: url }, deps.log);
  deps.log.info({ orgId: access.orgId, invitationId: row.id }, 'invitation sent');
  return toInvitation(row);
}

export async function revokeInvitation(
  deps: OrgDeps,
  access: OrgAccess,
  invitationId: string,
  audit: AuditContext,
): Promise<void> {
  await deps.database.withTenant(access.orgId, async (db) => {
    const revoked = await db
      .updateTable('invitations')
      .set({ revoked_at: deps.clock.now().toISOString() })
      .where('id', '=', invitationId)
      .where('accepted_at', 'is', null)
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    if (Number(revoked.numUpdatedRows) === 0) throw new AppError(orgErrors.INVITATION_NOT_FOUND);
    await recordAuditEvent(db, audit, {
      action: 'invitation.revoked',
      target: { type: 'invitation', id: invitationId },
    });
  });
}

/**
 * Accepts an invitation. Signed in, the account's address must be the invited one. Not signed in: if the
 * address has an account, its owner must sign in first (401); otherwise `name` and `password` create the account,
 * verified, in the same transaction as the membership. The token works once.
 */
export async function acceptInvitation(
  deps: OrgDeps,
  principal: Principal | undefined,
  input: { token: string; name?: string | undefined; password?: string | undefined },
  audit: (orgId: string, userId: string) => AuditContext,
): Promise<{ orgId: string; role: string; userId: string; accountCreated: boolean }> {
  if (principal?.type === 'apikey') throw new AppError(apiKeyErrors.API_KEY_NOT_ALLOWED);
  const now = deps.clock.now().toISOString();
  // Across organizations, because the token is all that identifies the invitation (and so its organization).
  const invitation = await deps.database.acrossTenants((db) =>
    db
      .selectFrom('invitations')
      .selectAll()
      .where('token_hash', '=', sha256Hex(input.token))
      .where('accepted_at', 'is', null)
      .where('revoked_at', 'is', null)
      .where('expires_at', '>', now)
      .executeTakeFirst(),
  );
  if (!invitation) throw new AppError(orgErrors.INVALID_INVITATION);

  let userId: string;
  let newAccount: Awaited<ReturnType<typeof prepareInvitedAccount>> | undefined;
  const account = await findUserByEmail(deps.auth, invitation.email);
  if (principal) {
    if (account?.id !== principal.userId) throw new AppError(orgErrors.INVITATION_FOR_ANOTHER_ACCOUNT);
    userId = principal.userId;
  } else if (account) {
    throw new AppError(orgErrors.SIGN_IN_TO_ACCEPT, { headers: { 'www-authenticate': 'Bearer' } });
  } else {
    if (input.name === undefined || input.password === undefined) {
      throw new AppError(orgErrors.INVALID_INVITATION, {
        detail: 'There is no account for the invited address yet: send name and password to create it.',
      });
    }
    newAccount = await prepareInvitedAccount(deps.auth, {
      email: invitation.email,
      name: input.name,
      password: input.password,
    });
    userId = newAccount.id;
  }

  // The invitation is spent first, so that of two acceptances at once only one gets further.
  await deps.database.withTenant(invitation.org_id, async (db) => {
    await lockOrgAccess(db, deps.database.dialect, invitation.org_id);
    const spent = await db
      .updateTable('invitations')
      .set({ accepted_at: now, accepted_by: newAccount ? null : userId })
      .where('id', '=', invitation.id)
      .where('accepted_at', 'is', null)
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    if (Number(spent.numUpdatedRows) === 0) throw new AppError(orgErrors.INVALID_INVITATION);
    if (newAccount) {
      await newAccount.insert(db).catch((error: unknown) => {
        // Someone signed up with the address in the meantime: that account's owner must sign in to accept.
        throw isUniqueViolation(error) ? new AppError(orgErrors.SIGN_IN_TO_ACCEPT) : error;
      });
      await db
        .updateTable('invitations')
        .set({ accepted_by: userId })
        .where('id', '=', invitation.id)
        .execute();
    }
    const member = await db
      .selectFrom('memberships')
      .select('id')
      .where('user_id', '=', userId)
      .executeTakeFirst();
    if (member) throw new AppError(orgErrors.ALREADY_MEMBER);
    // The role may have been deleted or renamed since (a rename carries over to the invitation), and the
    // inviter may have lost the right to grant it (demoted, removed): an invitation carries no more power than
    // its inviter still has.
    const granted = await requireRolePermissions(deps, db, invitation.role);
    const inviter = invitation.invited_by
      ? await db
          .selectFrom('memberships')
          .select('role')
          .where('user_id', '=', invitation.invited_by)
          .executeTakeFirst()
      : undefined;
    const inviterHolds = inviter ? await deps.access.rolePermissions(db, inviter.role) : undefined;
    if (!inviterHolds || [...granted].some((p) => !inviterHolds.has(p))) {
      throw new AppError(orgErrors.INVALID_INVITATION, {
        detail: 'Whoever invited you can no longer grant this role; ask for a new invitation.',
      });
    }
    await db
      .insertInto('memberships')
      .values({
        id: newId(),
        org_id: invitation.org_id,
        user_id: userId,
        role: invitation.role,
        created_at: now,
        updated_at: now,
      })
      .execute();
    const context = audit(invitation.org_id, userId);
    await recordAuditEvent(db, context, {
      action: 'invitation.accepted',
      target: { type: 'invitation', id: invitation.id },
    });
    await recordAuditEvent(db, context, {
      action: 'member.added',
      target: { type: 'user', id: userId },
      changes: fieldChanges(null, { role: invitation.role, accountCreated: newAccount !== undefined }),
    });
    await deps.events.publish(db, {
      orgId: invitation.org_id,
      type: 'member.added',
      data: await memberInTransaction(db, userId),
    });
  });
  await deps.access.memberChanged(invitation.org_id, userId);
  deps.log.info(
    { orgId: invitation.org_id, userId, accountCreated: newAccount !== undefined },
    'invitation accepted',
  );
  return {
    orgId: invitation.org_id,
    role: invitation.role,
    userId,
    accountCreated: newAccount !== undefined,
  };
}
