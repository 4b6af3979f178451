import type { Kysely, Selectable } from 'kysely';
import type { Database, OrganizationsTable } from '../../db/schema.ts';

/** SQL over `organizations` (not org-owned itself: it is the tenant). */

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
