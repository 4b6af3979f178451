import type { Kysely, Selectable, Transaction } from 'kysely';
import type { Dialect } from '../../db/database.ts';
import type { Database, OrganizationsTable } from '../../db/schema.ts';

/** SQL over `organizations` (not org-owned itself: it is the tenant) and the locks member changes take. */

export type OrgRow = Selectable<OrganizationsTable>;

export function findOrg(db: Kysely<Database>, orgId: string): Promise<OrgRow | undefined> {
  return db.selectFrom('organizations').selectAll().where('id', '=', orgId).executeTakeFirst();
}

export async function insertOrg(db: Kysely<Database>, org: OrgRow): Promise<void> {
  await db.insertInto('organizations').values(org).execute();
}

export async function updateOrg(
  db: Kysely<Database>,
  orgId: string,
  changes: Partial<Pick<OrgRow, 'name' | 'slug' | 'plan'>> & { updated_at: string },
): Promise<void> {
  await db.updateTable('organizations').set(changes).where('id', '=', orgId).execute();
}

export async function deleteOrg(db: Kysely<Database>, orgId: string): Promise<void> {
  await db.deleteFrom('organizations').where('id', '=', orgId).execute();
}

/**
 * Serialises changes to an organization's membership (owner count, member list) within the transaction: on
 * PostgreSQL by locking the organization's row, so two owners demoting each other at once cannot leave none.
 * SQLite runs one write transaction at a time, which serialises them already.
 */
export async function lockOrg(db: Transaction<Database>, dialect: Dialect, orgId: string): Promise<void> {
  if (dialect === 'postgres') {
    await db.selectFrom('organizations').select('id').where('id', '=', orgId).forUpdate().execute();
  }
}
