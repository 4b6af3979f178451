import { CompiledQuery, type Selectable, type SelectQueryBuilder, sql, type Transaction } from 'kysely';
import { isPostgres } from '../../db/database.ts';
import type { AuditChainHeadsTable, AuditEventsTable, AuditPendingTable, Database } from '../../db/schema.ts';

/**
 * SQL over `audit_events` and `audit_chain_heads`; every function takes a `withTenant` (or `acrossTenants`)
 * transaction. Each also names its organization itself: the tenant scope adds the same condition when the tables
 * are registered, but a process that opened the database without registering them (a CLI command) must not read
 * or advance another organization's chain.
 */

export type AuditEventRow = Selectable<AuditEventsTable>;
export type ChainHeadRow = Selectable<AuditChainHeadsTable>;
export type PendingEventRow = Selectable<AuditPendingTable>;

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
 * The chain's head, locked until the transaction ends: on PostgreSQL with `select … for update`, so a concurrent
 * sequencer (or archive) of the chain waits here and then reads the head this one leaves; SQLite runs one write
 * transaction at a time (Kysely's driver queues transactions on its single connection), which serialises them
 * already.
 */
export async function lockHead(db: Transaction<Database>, orgId: string): Promise<ChainHeadRow | undefined> {
  const query = db.selectFrom('audit_chain_heads').selectAll().where('org_id', '=', orgId);
  return (isPostgres(db) ? query.forUpdate() : query).executeTakeFirst();
}

/**
 * Creates the chain's head before its first event. Two sequencers may race to create it: `on conflict do
 * nothing` makes the second wait for the first's commit and insert nothing, and the lock that follows then reads
 * the first's head. (An update on conflict would be an upsert, which the tenant scope refuses.)
 */
export async function createHead(db: Transaction<Database>, head: ChainHeadRow): Promise<void> {
  await db
    .insertInto('audit_chain_heads')
    .values(head)
    .onConflict((oc) => oc.column('org_id').doNothing())
    .execute();
}

/** The columns of a pending event, in the order {@link insertPending} writes them. */
const PENDING_COLUMNS = [
  'id',
  'org_id',
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
] as const satisfies readonly (keyof PendingEventRow)[];

/**
 * A statement of fixed text, run as it is: Kysely builds, transforms (through every plugin) and compiles a query
 * each time it runs, which costs more than SQLite takes to run a short statement; the few statements run once
 * per event skip that. Raw SQL is outside the tenant scope anyway (see tenant.ts), so each names its chain itself.
 */
function fixedStatement(text: (placeholder: (index: number) => string) => string) {
  const sqlite = text(() => '?');
  const postgres = text((index) => `$${index + 1}`);
  return (db: Transaction<Database>, parameters: unknown[]) =>
    db.executeQuery(CompiledQuery.raw(isPostgres(db) ? postgres : sqlite, parameters));
}

const insertPendingStatement = fixedStatement(
  (p) =>
    `insert into audit_pending (${PENDING_COLUMNS.join(', ')}) values (${PENDING_COLUMNS.map((_, i) => p(i)).join(', ')})`,
);

/**
 * Writes an event, unchained, in the change's transaction: the one statement every audited change pays for. It
 * takes no lock; the sequencer chains the event once the change has committed.
 */
export async function insertPending(db: Transaction<Database>, row: PendingEventRow): Promise<void> {
  await insertPendingStatement(
    db,
    PENDING_COLUMNS.map((column) => row[column]),
  );
}

/**
 * On SQLite, takes the database's write lock at once (a delete that matches nothing); on PostgreSQL, nothing. A
 * sequencing transaction reads and then writes, and on SQLite a transaction that has read cannot start writing
 * once another connection (a CLI command beside the server) has committed meanwhile: it fails at once with
 * `database is locked` instead of waiting. Taken first, the lock waits its turn (`busy_timeout`) like any write.
 */
export async function takeSqliteWriteLock(db: Transaction<Database>): Promise<void> {
  if (!isPostgres(db)) await sql`delete from audit_pending where 0`.execute(db);
}

/** Up to `limit` of the chain's pending events, oldest first (ids are UUIDv7, so in the order they were made). */
export function pendingEvents(
  db: Transaction<Database>,
  chain: string,
  limit: number,
): Promise<PendingEventRow[]> {
  return db
    .selectFrom('audit_pending')
    .selectAll()
    .where('org_id', '=', chain)
    .orderBy('id')
    .limit(limit)
    .execute();
}

/** Up to `limit` chains that have pending events, in name order (across tenants by nature). */
export async function pendingChains(db: Transaction<Database>, limit: number): Promise<string[]> {
  const rows = await db
    .selectFrom('audit_pending')
    .select('org_id')
    .distinct()
    .orderBy('org_id')
    .limit(limit)
    .execute();
  return rows.map((r) => r.org_id);
}

/** The columns of a chained event, in the order {@link insertEvents} writes them on SQLite. */
const EVENT_COLUMNS = [
  ...PENDING_COLUMNS,
  'seq',
  'personal_digest',
  'prev_hash',
  'hash',
  'erased_at',
] as const satisfies readonly (keyof AuditEventRow)[];

const insertEventStatement = fixedStatement(
  (p) =>
    `insert into audit_events (${EVENT_COLUMNS.join(', ')}) values (${EVENT_COLUMNS.map((_, i) => p(i)).join(', ')})`,
);
const deletePendingStatement = fixedStatement(
  (p) => `delete from audit_pending where org_id = ${p(0)} and id = ${p(1)}`,
);

/**
 * Writes chained events (a batch of one chain's, in `seq` order). On PostgreSQL in one statement, a round trip
 * for the batch; on SQLite, which has no round trip to save, one fixed statement per event: a batch of any other
 * size would be new SQL for Kysely to build and for SQLite to prepare (a millisecond for a batch of 200).
 */
export async function insertEvents(db: Transaction<Database>, rows: AuditEventRow[]): Promise<void> {
  if (isPostgres(db)) {
    await db.insertInto('audit_events').values(rows).execute();
    return;
  }
  for (const row of rows) {
    await insertEventStatement(
      db,
      EVENT_COLUMNS.map((column) => row[column]),
    );
  }
}

/** Points the chain's head at its last event. */
export async function moveHead(
  db: Transaction<Database>,
  chain: string,
  head: { seq: number; hash: string },
): Promise<void> {
  await db
    .updateTable('audit_chain_heads')
    .set({ seq: head.seq, hash: head.hash })
    .where('org_id', '=', chain)
    .execute();
}

/**
 * Deletes pending events that are in their chain now (the table's trigger refuses any other): on PostgreSQL in
 * one statement, on SQLite one fixed statement per event, as {@link insertEvents} writes them.
 */
export async function deletePending(db: Transaction<Database>, chain: string, ids: string[]): Promise<void> {
  if (isPostgres(db)) {
    await db.deleteFrom('audit_pending').where('org_id', '=', chain).where('id', 'in', ids).execute();
    return;
  }
  for (const id of ids) await deletePendingStatement(db, [chain, id]);
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
