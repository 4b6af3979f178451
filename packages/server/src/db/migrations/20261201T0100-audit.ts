import { type Kysely, sql } from 'kysely';
import { columnTypes } from '../column-types.ts';
import type { Migration } from '../migrate.ts';
import { enableTenantIsolation } from './tenant-isolation.ts';

/** The message both dialects' triggers refuse a change of an audit event with. */
const UPDATE_REFUSED = 'audit events are append-only: only an erasure of personal fields may change one';
const DELETE_REFUSED = 'audit events may be deleted only once archived (seq <= archived_through_seq)';

/**
 * The columns an erasure must leave as they are: all but the personal ones (`actor_id`, `ip`, `user_agent`,
 * `changes`) and `erased_at`. The hash covers exactly these and `personal_digest`, which is why an erasure keeps
 * the chain verifiable.
 */
const FIXED_COLUMNS = [
  'id',
  'org_id',
  'seq',
  'at',
  'actor_type',
  'actor_via',
  'action',
  'target_type',
  'target_id',
  'request_id',
  'outcome',
  'personal_digest',
  'prev_hash',
  'hash',
] as const;

/**
 * The tamper-evident audit log: `audit_events`, one hash chain per organization, and `audit_chain_heads`, the
 * end of each chain, whose row every append locks. Both are org-owned with row-level security, but without a
 * foreign key to `organizations`: an organization's record must outlive it.
 *
 * Triggers are raw SQL because the schema builder has no trigger statements; they are the database's own
 * refusal of what the application must never do — rewrite history — and hold for hand-written SQL and for any
 * connection of the application role, not just for Plinth's code. They allow exactly two changes: an erasure
 * (only the personal columns and `erased_at` change, `erased_at` from null to a time) and deleting rows that
 * retention has archived (`seq <= archived_through_seq` of the chain's head).
 */
export const audit: Migration = {
  async up(db: Kysely<unknown>, dialect) {
    const t = columnTypes(dialect);

    await db.schema
      .createTable('audit_events')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('org_id', t.id, (c) => c.notNull())
      .addColumn('seq', 'bigint', (c) => c.notNull())
      .addColumn('at', t.timestamp, (c) => c.notNull())
      .addColumn('actor_type', t.text, (c) => c.notNull())
      .addColumn('actor_id', t.text, (c) => c.notNull())
      .addColumn('actor_via', t.text)
      .addColumn('action', t.text, (c) => c.notNull())
      .addColumn('target_type', t.text)
      .addColumn('target_id', t.text)
      .addColumn('request_id', 'text')
      .addColumn('ip', 'text')
      .addColumn('user_agent', 'text')
      .addColumn('outcome', t.text, (c) => c.notNull())
      .addColumn('changes', 'text')
      .addColumn('personal_digest', 'text', (c) => c.notNull())
      .addColumn('prev_hash', 'text', (c) => c.notNull())
      .addColumn('hash', 'text', (c) => c.notNull())
      .addColumn('erased_at', t.timestamp)
      .addUniqueConstraint('audit_events_org_seq', ['org_id', 'seq'])
      .execute();
    // The filters of the list and the export, each ending in seq so the keyset order is served by the index.
    await db.schema
      .createIndex('audit_events_actor')
      .on('audit_events')
      .columns(['org_id', 'actor_id', 'seq'])
      .execute();
    await db.schema
      .createIndex('audit_events_target')
      .on('audit_events')
      .columns(['org_id', 'target_type', 'target_id', 'seq'])
      .execute();
    await db.schema
      .createIndex('audit_events_action')
      .on('audit_events')
      .columns(['org_id', 'action', 'seq'])
      .execute();
    await db.schema.createIndex('audit_events_at').on('audit_events').columns(['org_id', 'at']).execute();

    await db.schema
      .createTable('audit_chain_heads')
      .addColumn('org_id', t.id, (c) => c.primaryKey())
      .addColumn('seq', 'bigint', (c) => c.notNull())
      .addColumn('hash', 'text', (c) => c.notNull())
      .addColumn('archived_through_seq', 'bigint', (c) => c.notNull())
      .execute();

    for (const table of ['audit_events', 'audit_chain_heads']) {
      await enableTenantIsolation(db, dialect, table);
    }

    if (dialect === 'postgres') await postgresTriggers(db);
    else await sqliteTriggers(db);
  },
};

async function postgresTriggers(db: Kysely<unknown>): Promise<void> {
  const unchanged = FIXED_COLUMNS.map((c) => `new.${c} is not distinct from old.${c}`).join('\n        and ');
  await sql
    .raw(`create function audit_events_guard() returns trigger language plpgsql as $$
begin
  if tg_op = 'UPDATE' then
    if old.erased_at is null and new.erased_at is not null
        and ${unchanged} then
      return new;
    end if;
    raise exception '${UPDATE_REFUSED}' using errcode = 'insufficient_privilege';
  end if;
  if old.seq <= coalesce(
      (select h.archived_through_seq from audit_chain_heads h where h.org_id = old.org_id), 0) then
    return old;
  end if;
  raise exception '${DELETE_REFUSED}' using errcode = 'insufficient_privilege';
end
$$`)
    .execute(db);
  await sql`create trigger audit_events_guard before update or delete on audit_events
    for each row execute function audit_events_guard()`.execute(db);
  // TRUNCATE fires no row triggers; a statement trigger refuses it too.
  await sql
    .raw(`create function audit_events_no_truncate() returns trigger language plpgsql as $$
begin
  raise exception '${DELETE_REFUSED}' using errcode = 'insufficient_privilege';
end
$$`)
    .execute(db);
  await sql`create trigger audit_events_no_truncate before truncate on audit_events
    for each statement execute function audit_events_no_truncate()`.execute(db);
}

async function sqliteTriggers(db: Kysely<unknown>): Promise<void> {
  const unchanged = FIXED_COLUMNS.map((c) => `NEW.${c} IS OLD.${c}`).join(' AND ');
  await sql
    .raw(`CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
WHEN NOT (OLD.erased_at IS NULL AND NEW.erased_at IS NOT NULL AND ${unchanged})
BEGIN SELECT RAISE(ABORT, '${UPDATE_REFUSED}'); END`)
    .execute(db);
  await sql
    .raw(`CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
WHEN OLD.seq > coalesce((SELECT archived_through_seq FROM audit_chain_heads WHERE org_id = OLD.org_id), 0)
BEGIN SELECT RAISE(ABORT, '${DELETE_REFUSED}'); END`)
    .execute(db);
}
