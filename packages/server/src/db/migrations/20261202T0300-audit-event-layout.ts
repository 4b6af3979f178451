import { type Kysely, sql } from 'kysely';
import type { Migration } from '../migrate.ts';

/**
 * What an appended audit event costs the change it records, and the lookup by actor that export and erasure
 * make across every chain.
 *
 * SQLite writes every b-tree page an insert dirties to the write-ahead log at commit, and that dominates an
 * append: the event went into seven b-trees (the rowid table, its `id` key, the `(org_id, seq)` key and four
 * filter indexes) besides the chain head, and auditing cost a create more than half again its own price. Here
 * the table is rebuilt `WITHOUT ROWID` on its chain key `(org_id, seq)` — the order every reader and the verifier
 * walk — with one secondary index, on `actor_id` (which carries the key, so it serves an organization's actor
 * filter and the cross-chain lookup both). An append now dirties the table, that index and the head. The other
 * filters (action, target, time) walk the chain in `seq` order, which an embedded installation's volumes afford.
 * `id` stays unique by construction (UUIDv7) rather than by an index; nothing looks an event up by it.
 *
 * The triggers that make the table append-only are dropped with the old table and re-created from their stored
 * definitions, so they stay exactly what shipped.
 *
 * PostgreSQL keeps its heap and indexes (a round trip costs more there than an index page) and gains an index
 * on `actor_id` alone: `(org_id, actor_id, seq)` cannot find one person's events across all chains.
 */
export const auditEventLayout: Migration = {
  async up(db: Kysely<unknown>, dialect) {
    if (dialect === 'postgres') {
      await db.schema.createIndex('audit_events_actor_any').on('audit_events').column('actor_id').execute();
      return;
    }
    const triggers = await sql<{ sql: string }>`select sql from sqlite_master
      where type = 'trigger' and tbl_name = 'audit_events' order by name`.execute(db);
    await sql`create table audit_events_rebuilt (
      id text not null,
      org_id text not null,
      seq bigint not null,
      at text not null,
      actor_type text not null,
      actor_id text not null,
      actor_via text,
      action text not null,
      target_type text,
      target_id text,
      request_id text,
      ip text,
      user_agent text,
      outcome text not null,
      changes text,
      personal_digest text not null,
      prev_hash text not null,
      hash text not null,
      erased_at text,
      primary key (org_id, seq)
    ) without rowid`.execute(db);
    await sql`insert into audit_events_rebuilt select id, org_id, seq, at, actor_type, actor_id, actor_via,
      action, target_type, target_id, request_id, ip, user_agent, outcome, changes, personal_digest, prev_hash,
      hash, erased_at from audit_events`.execute(db);
    await sql`drop table audit_events`.execute(db);
    await sql`alter table audit_events_rebuilt rename to audit_events`.execute(db);
    await sql`create index audit_events_actor on audit_events (actor_id)`.execute(db);
    for (const trigger of triggers.rows) await sql.raw(trigger.sql).execute(db);
  },
};
