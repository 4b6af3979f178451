import { type Member, orgErrors } from '@plinth/shared';
import type { Transaction } from 'kysely';
import { z } from 'zod';
import { AppError } from '../../core/errors.ts';
import { type ListSpec, paginate } from '../../core/pagination.ts';
import type { Database } from '../../db/schema.ts';
import { type AuditContext, fieldChanges, recordAuditEvent } from '../audit/record.ts';
import { assertCanGrant, lockOrgAccess, type OrgAccess, requireRolePermissions } from '../rbac/index.ts';
import type { OrgDeps } from './deps.ts';

export const membersList: ListSpec<'joinedAt' | 'email' | 'name', { role: z.ZodString }> = {
  sort: { joinedAt: 'memberships.created_at', email: 'users.email', name: 'users.name' },
  defaultSort: 'joinedAt',
  idColumn: 'memberships.id',
  filters: { role: z.string().max(40) },
  filterColumns: { role: 'memberships.role' },
};

export async function listMembers(
  deps: OrgDeps,
  access: OrgAccess,
  query: { limit: number; cursor?: string | undefined; sort: string; role?: string | undefined },
): Promise<{ data: Member[]; nextCursor: string | null }> {
  const page = await deps.database.withTenant(access.orgId, (db) =>
    paginate(
      db
        .selectFrom('memberships')
        .innerJoin('users', 'users.id', 'memberships.user_id')
        .select([
          'memberships.id',
          'memberships.user_id',
          'memberships.role',
          'memberships.created_at',
          'users.email',
          'users.name',
        ]),
      query,
      membersList,
    ),
  );
  return {
    data: page.data.map((m) => ({
      userId: m.user_id,
      email: m.email,
      name: m.name,
      role: m.role,
      joinedAt: m.created_at,
    })),
    nextCursor: page.nextCursor,
  };
}

async function findMembership(db: Transaction<Database>, userId: string) {
  const row = await db
    .selectFrom('memberships')
    .select(['id', 'role'])
    .where('user_id', '=', userId)
    .executeTakeFirst();
  if (!row) throw new AppError(orgErrors.MEMBER_NOT_FOUND);
  return row;
}

async function ownerCount(db: Transaction<Database>): Promise<number> {
  const row = await db
    .selectFrom('memberships')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('role', '=', 'owner')
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/**
 * Changes a member's role. The caller must hold every permission of both the current and the new role (so an
 * admin cannot touch an owner or make one), and the last owner cannot be demoted. Takes effect on the member's
 * next request, on every replica. The `member.role_changed` event is written in the same transaction.
 */
export async function changeRole(
  deps: OrgDeps,
  access: OrgAccess,
  userId: string,
  role: string,
  audit: AuditContext,
): Promise<Member> {
  await deps.database.withTenant(access.orgId, async (db) => {
    await lockOrgAccess(db, deps.database.dialect, access.orgId);
    const current = await findMembership(db, userId);
    assertCanGrant(access, await requireRolePermissions(deps, db, current.role));
    assertCanGrant(access, await requireRolePermissions(deps, db, role));
    if (current.role === 'owner' && role !== 'owner' && (await ownerCount(db)) <= 1) {
      throw new AppError(orgErrors.LAST_OWNER);
    }
    await db
      .updateTable('memberships')
      .set({ role, updated_at: deps.clock.now().toISOString() })
      .where('id', '=', current.id)
      .execute();
    await recordAuditEvent(db, audit, {
      action: 'member.role_changed',
      target: { type: 'user', id: userId },
      changes: fieldChanges({ role: current.role }, { role }),
    });
    await deps.events.publish(db, {
      orgId: access.orgId,
      type: 'member.role_changed',
      data: { ...(await memberInTransaction(db, userId)), previousRole: current.role },
    });
  });
  await deps.access.memberChanged(access.orgId, userId);
  return getMember(deps, access, userId);
}

/** A member as the API shows it, read in the caller's tenant transaction (also the data of its domain events). */
export async function memberInTransaction(db: Transaction<Database>, userId: string): Promise<Member> {
  const row = await db
    .selectFrom('memberships')
    .innerJoin('users', 'users.id', 'memberships.user_id')
    .select([
      'memberships.user_id',
      'memberships.role',
      'memberships.created_at',
      'users.email',
      'users.name',
    ])
    .where('memberships.user_id', '=', userId)
    .executeTakeFirst();
  if (!row) throw new AppError(orgErrors.MEMBER_NOT_FOUND);
  return { userId: row.user_id, email: row.email, name: row.name, role: row.role, joinedAt: row.created_at };
}

export function getMember(deps: OrgDeps, access: OrgAccess, userId: string): Promise<Member> {
  return deps.database.withTenant(access.orgId, (db) => memberInTransaction(db, userId));
}

/**
 * Ends a membership: someone with `members:remove` removing another member whose role they could grant, or a
 * member leaving. The last owner can do neither to themselves; they must hand ownership over or delete the org.
 * The `member.removed` event is written in the same transaction.
 */
export async function removeMember(
  deps: OrgDeps,
  access: OrgAccess,
  userId: string,
  audit: AuditContext,
): Promise<void> {
  const leaving = access.principal.type === 'user' && access.principal.userId === userId;
  await deps.database.withTenant(access.orgId, async (db) => {
    await lockOrgAccess(db, deps.database.dialect, access.orgId);
    const current = await findMembership(db, userId);
    if (!leaving) assertCanGrant(access, await requireRolePermissions(deps, db, current.role));
    if (current.role === 'owner' && (await ownerCount(db)) <= 1) throw new AppError(orgErrors.LAST_OWNER);
    const member = await memberInTransaction(db, userId);
    await db.deleteFrom('memberships').where('id', '=', current.id).execute();
    await recordAuditEvent(db, audit, {
      action: 'member.removed',
      target: { type: 'user', id: userId },
      changes: fieldChanges({ role: current.role }, null),
    });
    await deps.events.publish(db, { orgId: access.orgId, type: 'member.removed', data: member });
  });
  await deps.access.memberChanged(access.orgId, userId);
  deps.log.info({ orgId: access.orgId, userId, leaving }, 'membership ended');
}
