import type { Insertable, Kysely, Selectable, Transaction } from 'kysely';
import { type ListSpec, type NoFilters, paginate } from '../../core/pagination.ts';
import type { ConsentRecordsTable, Database } from '../../db/schema.ts';

/** All SQL of consent records. Rows in, rows out; the rules are in consent.service.ts. */

type Db = Kysely<Database> | Transaction<Database>;

/** A stored consent record. */
export type ConsentRow = Selectable<ConsentRecordsTable>;

/** The one write there is: history is append-only (the table's trigger refuses updates anyway). */
export async function insertConsentRecord(db: Db, row: Insertable<ConsentRecordsTable>): Promise<ConsentRow> {
  await db.insertInto('consent_records').values(row).execute();
  return { ip: null, user_agent: null, request_id: null, ...row };
}

/**
 * The latest record of each purpose the user has a record for. "Latest" is by `recorded_at`, ties broken by id
 * (UUIDv7, increasing within the process), the same order the history uses, so the current state is always the
 * history's newest entry for that purpose.
 */
export async function latestConsentPerPurpose(db: Db, userId: string): Promise<ConsentRow[]> {
  const ranked = db
    .selectFrom('consent_records')
    .selectAll()
    .select((eb) =>
      eb.fn
        .agg<number>('row_number')
        .over((ob) => ob.partitionBy('purpose').orderBy('recorded_at', 'desc').orderBy('id', 'desc'))
        .as('recency'),
    )
    .where('user_id', '=', userId)
    .as('ranked');
  return db
    .selectFrom(ranked)
    .select([
      'id',
      'user_id',
      'purpose',
      'granted',
      'policy_version',
      'recorded_at',
      'ip',
      'user_agent',
      'request_id',
    ])
    .where('recency', '=', 1)
    .execute();
}

/** How the history may be listed: by recording time only, newest first unless asked otherwise. */
export const consentHistoryList: ListSpec<'recordedAt', NoFilters> = {
  sort: { recordedAt: 'recorded_at' },
  defaultSort: '-recordedAt',
};

/** One page of the user's history (every purpose, declared or no longer declared). */
export async function consentHistoryPage(
  db: Db,
  userId: string,
  query: { limit: number; cursor?: string | undefined; sort: string },
): Promise<{ data: ConsentRow[]; nextCursor: string | null }> {
  return paginate(
    db.selectFrom('consent_records').selectAll().where('user_id', '=', userId),
    query,
    consentHistoryList,
  );
}

/** Every record of the user, oldest first: the whole history, for a data export. */
export async function allConsentRecords(db: Db, userId: string): Promise<ConsentRow[]> {
  return db
    .selectFrom('consent_records')
    .selectAll()
    .where('user_id', '=', userId)
    .orderBy('recorded_at', 'asc')
    .orderBy('id', 'asc')
    .execute();
}
