import { type Selectable, type SelectQueryBuilder, sql, type Transaction } from 'kysely';
import { isPostgres } from '../../db/database.ts';
import type { AuditChainHeadsTable, AuditEventsTable, Database } from '../../db/schema.ts';

/**
 * SQL over `audit_events` and `audit_chain_heads`; every function takes a `withTenant` (or `acrossTenants`)
 * transaction. Each also names its organization itself: the tenant scope adds the same condition when the tables
 * are registered, but a process that opened the database without registering them (a CLI command) must not read
 * or advance another organization's chain.
 */

export type AuditEventRow = Selectable<AuditEventsTable>;
export type ChainHeadRow = Selectable<AuditChainHeadsTable>;

/** What a list or an export may be narrowed to (API names; `from` inclusive, `to` exclusive, ISO-8601 UTC). */
export interface AuditEventFilters {
  actorId?: string | undefined;
  action?: string | undefined;
  targetType?: string | undefined;
  targetId?: string | undefined;
  from?: string | undefined;
  to?: string | undefined;
}

/**
 * The organization's chain head, locked until the transaction ends: on PostgreSQL with `select … for update`, so
 * a concurrent append waits here and then reads the head this one leaves; SQLite runs one write transaction at
 * a time (Kysely's driver queues transactions on its single connection), which serialises appends already.
 */
export async function lockHead(db: Transaction<Database>, orgId: string): Promise<ChainHeadRow | undefined> {
  const query = db.selectFrom('audit_chain_heads').selectAll().where('org_id', '=', orgId);
  return (isPostgres(db) ? query.forUpdate() : query).executeTakeFirst();
}

/**
 * Creates the organization's head before its first event. Two first appends may race to create it: `on conflict
 * do nothing` makes the second wait for the first's commit and insert nothing, and the lock that follows then
 * reads the first's head. (An update on conflict would be an upsert, which the tenant scope refuses.)
 */
export async function createHead(db: Transaction<Database>, head: ChainHeadRow): Promise<void> {
  await db
    .insertInto('audit_chain_heads')
    .values(head)
    .onConflict((oc) => oc.column('org_id').doNothing())
    .execute();
}

/**
 * Takes the chain's next `seq`: moves the head's `seq` on by one and returns it with the head's hash — the hash
 * of the event before, since the head's hash moves only once the new event is written ({@link appendEvent}). The
 * update locks the head row until the transaction ends (PostgreSQL's row lock; SQLite's single writer), so
 * concurrent appends queue and each reads the head the previous one left: the chain cannot fork. One statement
 * for lock, read and advance, because an append is paid for by every audited change. Undefined when the chain
 * has no head yet ({@link createHead}).
 */
export async function takeNextSeq(
  db: Transaction<Database>,
  orgId: string,
): Promise<{ seq: number; prevHash: string } | undefined> {
  const result = await sql<{ seq: number; hash: string }>`update audit_chain_heads set seq = seq + 1
    where org_id = ${orgId} returning seq, hash`.execute(db);
  const row = result.rows[0];
  return row && { seq: Number(row.seq), prevHash: row.hash };
}

/** The columns of an event, in the order {@link appendEvent} writes them. */
const EVENT_COLUMNS = [
  'id',
  'org_id',
  'seq',
  'at',
  'actor_type',
  'actor_id',
  'actor_via',
  'action',
  'target_type',
  'target_id',
  'request_id',
  'ip',
  'user_agent',
  'outcome',
  'changes',
  'personal_digest',
  'prev_hash',
  'hash',
  'erased_at',
] as const satisfies readonly (keyof AuditEventRow)[];
const INSERT_EVENT = sql.raw(`insert into audit_events (${EVENT_COLUMNS.join(', ')}) values (`);

/**
 * Writes one event and points its chain's head at it (the head's `seq` was moved on by {@link takeNextSeq}), as
 * SQL built once, since every audited change pays for it. On PostgreSQL in one statement, a data-modifying CTE:
 * the head stays locked from `takeNextSeq` until the transaction ends, so each round trip in between lengthens
 * the queue of the organization's other appends. SQLite has no round trips to save (and no DML in a CTE).
 */
export async function appendEvent(db: Transaction<Database>, row: AuditEventRow): Promise<void> {
  const insert = sql`${INSERT_EVENT}${sql.join(EVENT_COLUMNS.map((column) => row[column]))})`;
  const pointHead = sql`update audit_chain_heads set hash = ${row.hash} where org_id = ${row.org_id}`;
  if (isPostgres(db)) {
    await sql`with appended as (${insert}) ${pointHead}`.execute(db);
    return;
  }
  await insert.execute(db);
  await pointHead.execute(db);
}

/** The organization's head, unlocked (for verification), or undefined when it has no event yet. */
export function readHead(db: Transaction<Database>, orgId: string): Promise<ChainHeadRow | undefined> {
  return db.selectFrom('audit_chain_heads').selectAll().where('org_id', '=', orgId).executeTakeFirst();
}

/** `audit_events` narrowed by `filters`. */
export function filteredEvents(
  db: Transaction<Database>,
  orgId: string,
  filters: AuditEventFilters,
): SelectQueryBuilder<Database, 'audit_events', AuditEventRow> {
  let query = db.selectFrom('audit_events').selectAll().where('org_id', '=', orgId);
  if (filters.actorId !== undefined) query = query.where('actor_id', '=', filters.actorId);
  if (filters.action !== undefined) query = query.where('action', '=', filters.action);
  if (filters.targetType !== undefined) query = query.where('target_type', '=', filters.targetType);
  if (filters.targetId !== undefined) query = query.where('target_id', '=', filters.targetId);
  if (filters.from !== undefined) query = query.where('at', '>=', filters.from);
  if (filters.to !== undefined) query = query.where('at', '<', filters.to);
  return query;
}

/** Up to `limit` events after `afterSeq` (and at most `throughSeq`, when given), in chain order. */
export function eventsAfter(
  db: Transaction<Database>,
  orgId: string,
  afterSeq: number,
  limit: number,
  filters: AuditEventFilters = {},
  throughSeq?: number,
): Promise<AuditEventRow[]> {
  let query = filteredEvents(db, orgId, filters).where('seq', '>', afterSeq);
  if (throughSeq !== undefined) query = query.where('seq', '<=', throughSeq);
  return query.orderBy('seq').limit(limit).execute();
}

/** The name of every audit chain (for the CLI's check of all of them; across tenants by nature). */
export async function chainNames(db: Transaction<Database>): Promise<string[]> {
  const rows = await db.selectFrom('audit_chain_heads').select('org_id').orderBy('org_id').execute();
  return rows.map((r) => r.org_id);
}
