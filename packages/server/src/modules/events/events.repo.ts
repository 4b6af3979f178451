import type { Insertable, Kysely, Selectable, Transaction } from 'kysely';
import type { Database, DomainEventsTable } from '../../db/schema.ts';

/** SQL over `domain_events`. Every function takes the caller's `withTenant` (or `acrossTenants`) transaction. */

export type DomainEventRow = Selectable<DomainEventsTable>;

export async function insertDomainEvent(
  db: Kysely<Database>,
  row: Insertable<DomainEventsTable>,
): Promise<void> {
  await db.insertInto('domain_events').values(row).execute();
}

export function findDomainEvent(db: Transaction<Database>, id: string): Promise<DomainEventRow | undefined> {
  return db.selectFrom('domain_events').selectAll().where('id', '=', id).executeTakeFirst();
}

/** Marks an event relayed, only if no run did first; true when this call did. */
export async function markRelayed(db: Transaction<Database>, id: string, at: string): Promise<boolean> {
  const result = await db
    .updateTable('domain_events')
    .set({ relayed_at: at })
    .where('id', '=', id)
    .where('relayed_at', 'is', null)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}
