import type { Transaction } from 'kysely';
import { newId } from '../../core/ids.ts';
import type { Dialect } from '../../db/database.ts';
import type { Database } from '../../db/schema.ts';

/** SQL over an organization's custom roles; `db` is a tenant-scoped transaction, so every query is its org's. */

export interface CustomRoleRow {
  name: string;
  description: string;
  permissions: string[];
}

const toRow = (r: { name: string; description: string; permissions: string }): CustomRoleRow => ({
  name: r.name,
  description: r.description,
  permissions: JSON.parse(r.permissions) as string[],
});

export async function listCustomRoles(db: Transaction<Database>): Promise<CustomRoleRow[]> {
  const rows = await db
    .selectFrom('roles')
    .select(['name', 'description', 'permissions'])
    .orderBy('name')
    .execute();
  return rows.map(toRow);
}

export async function findCustomRole(
  db: Transaction<Database>,
  name: string,
): Promise<CustomRoleRow | undefined> {
  const row = await db
    .selectFrom('roles')
    .select(['name', 'description', 'permissions'])
    .where('name', '=', name)
    .executeTakeFirst();
  return row && toRow(row);
}

export async function insertCustomRole(
  db: Transaction<Database>,
  orgId: string,
  role: CustomRoleRow,
  now: string,
): Promise<void> {
  await db
    .insertInto('roles')
    .values({
      id: newId(),
      org_id: orgId,
      name: role.name,
      description: role.description,
      permissions: JSON.stringify(role.permissions),
      created_at: now,
      updated_at: now,
    })
    .execute();
}

/** Updates a role; a new name is carried over to the members and pending invitations that hold the old one. */
export async function updateCustomRole(
  db: Transaction<Database>,
  name: string,
  role: CustomRoleRow,
  now: string,
): Promise<void> {
  await db
    .updateTable('roles')
    .set({
      name: role.name,
      description: role.description,
      permissions: JSON.stringify(role.permissions),
      updated_at: now,
    })
    .where('name', '=', name)
    .execute();
  if (role.name !== name) {
    await db
      .updateTable('memberships')
      .set({ role: role.name, updated_at: now })
      .where('role', '=', name)
      .execute();
    await db.updateTable('invitations').set({ role: role.name }).where('role', '=', name).execute();
  }
}

/** Whether a member or a pending invitation holds the role. */
export async function isRoleInUse(db: Transaction<Database>, name: string, now: string): Promise<boolean> {
  const member = await db.selectFrom('memberships').select('id').where('role', '=', name).executeTakeFirst();
  if (member) return true;
  const invitation = await db
    .selectFrom('invitations')
    .select('id')
    .where('role', '=', name)
    .where('accepted_at', 'is', null)
    .where('revoked_at', 'is', null)
    .where('expires_at', '>', now)
    .executeTakeFirst();
  return invitation !== undefined;
}

export async function deleteCustomRole(db: Transaction<Database>, name: string): Promise<void> {
  await db.deleteFrom('roles').where('name', '=', name).execute();
}

/**
 * Serialises, within the transaction, the changes to who may do what in an organization (memberships, roles,
 * invitations): on PostgreSQL by locking the organization's row, so that two owners demoting each other at once
 * cannot leave none, and a role cannot be assigned while it is being deleted or renamed. SQLite runs one write
 * transaction at a time, which serialises them already.
 */
export async function lockOrgAccess(
  db: Transaction<Database>,
  dialect: Dialect,
  orgId: string,
): Promise<void> {
  if (dialect === 'postgres') {
    await db.selectFrom('organizations').select('id').where('id', '=', orgId).forUpdate().execute();
  }
}
