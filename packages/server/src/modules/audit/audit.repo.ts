import type { Selectable, SelectQueryBuilder, Transaction } from 'kysely';
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

export async function advanceHead(
  db: Transaction<Database>,
  orgId: string,
  seq: number,
  hash: string,
): Promise<void> {
  await db.updateTable('audit_chain_heads').set({ seq, hash }).where('org_id', '=', orgId).execute();
}

export async function insertEvent(db: Transaction<Database>, row: AuditEventRow): Promise<void> {
  await db.insertInto('audit_events').values(row).execute();
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
