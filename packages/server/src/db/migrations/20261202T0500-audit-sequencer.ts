import { type Kysely, sql } from 'kysely';
import { columnTypes } from '../column-types.ts';
import type { Migration } from '../migrate.ts';
import { enableChainIsolation } from './tenant-isolation.ts';

const UPDATE_REFUSED = 'pending audit events are never changed';
const DELETE_REFUSED = 'a pending audit event may be deleted only once it is in its chain (audit_events)';

/**
 * `audit_pending`: the events of changes that committed but are not in their chain yet. A change's transaction
 * writes its event here, unchained — one row in a table with no secondary index — instead of locking its
 * chain's head and writing the chained event with its indexes; the sequencer (modules/audit/sequencer.ts) moves
 * pending events into `audit_events` in batches, giving each its `seq` and hashes, and every reader of a chain
 * sequences it first, so that no committed event is ever read without its place in the chain.
 *
 * The table is as protected as `audit_events`: triggers refuse every update, and every delete of a row whose
 * event is not in `audit_events` yet, so the application role (which needs `DELETE` here, for the sequencer)
 * cannot make a pending event disappear; on PostgreSQL `TRUNCATE` is refused too. SQLite gains a unique index on
 * `audit_events.id` for that check (PostgreSQL's primary key is one already): the sequencer writes it for a
 * batch of ascending UUIDv7 ids, which share its rightmost pages.
 *
 * Keyed `(org_id, id)` — `WITHOUT ROWID` on SQLite, with no other index — so that the change's insert writes one
 * b-tree page, and the sequencer reads a chain's events in id order (UUIDv7: the order they were made in) and
 * deletes them by key, without scanning what other chains have pending after a backlog.
 */
export const auditSequencer: Migration = {
  async up(db: Kysely<unknown>, dialect) {
    const t = columnTypes(dialect);
    await db.schema
      .createTable('audit_pending')
      .addColumn('id', t.id, (c) => c.notNull())
      .addColumn('org_id', dialect === 'postgres' ? t.text : 'text', (c) => c.notNull())
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
      .addPrimaryKeyConstraint('audit_pending_pkey', ['org_id', 'id'])
      .$call((table) => (dialect === 'postgres' ? table : table.modifyEnd(sql`without rowid`)))
      .execute();
    await enableChainIsolation(db, dialect, 'audit_pending');
    if (dialect === 'postgres') {
      await sql
        .raw(`create function audit_pending_guard() returns trigger language plpgsql as $$
begin
  if tg_op = 'UPDATE' then
    raise exception '${UPDATE_REFUSED}' using errcode = 'insufficient_privilege';
  end if;
  if exists (select 1 from audit_events e where e.id = old.id) then
    return old;
  end if;
  raise exception '${DELETE_REFUSED}' using errcode = 'insufficient_privilege';
end
$$`)
        .execute(db);
      await sql`create trigger audit_pending_guard before update or delete on audit_pending
        for each row execute function audit_pending_guard()`.execute(db);
      await sql
        .raw(`create function audit_pending_no_truncate() returns trigger language plpgsql as $$
begin
  raise exception '${DELETE_REFUSED}' using errcode = 'insufficient_privilege';
end
$$`)
        .execute(db);
      await sql`create trigger audit_pending_no_truncate before truncate on audit_pending
        for each statement execute function audit_pending_no_truncate()`.execute(db);
      return;
    }
    await sql`create unique index audit_events_id on audit_events (id)`.execute(db);
    await sql
      .raw(`CREATE TRIGGER audit_pending_no_update BEFORE UPDATE ON audit_pending
BEGIN SELECT RAISE(ABORT, '${UPDATE_REFUSED}'); END`)
      .execute(db);
    await sql
      .raw(`CREATE TRIGGER audit_pending_no_delete BEFORE DELETE ON audit_pending
WHEN NOT EXISTS (SELECT 1 FROM audit_events WHERE id = OLD.id)
BEGIN SELECT RAISE(ABORT, '${DELETE_REFUSED}'); END`)
      .execute(db);
  },
};
