import { type Kysely, sql } from 'kysely';
import { columnTypes } from '../column-types.ts';
import type { Migration } from '../migrate.ts';
import { enableChainIsolation } from './tenant-isolation.ts';

/**
 * Audit retention (modules/audit/archive.service.ts): an organization's retention period, the archived segments
 * of each chain, and the guards that keep archiving from becoming a way to erase history.
 *
 * - `organizations.audit_retention_days`: null means the installation's default (`AUDIT_RETENTION_DAYS`).
 * - `audit_chain_heads.archived_hash`: the hash of the last archived event, which the first remaining event links
 *   to; the genesis value until the first archive.
 * - `audit_archives`: one row per archived segment (its range, its last hash, the file and the file's SHA-256).
 *   Append-only: a trigger refuses every update and delete.
 * - A trigger on `audit_chain_heads` refuses a delete, and any update that moves a head backwards (its `seq` or
 *   `archived_through_seq` down), archives past the head, or changes `archived_hash` without archiving further.
 *   With the guard on `audit_events`, deleting events needs a head moved forward over them, and that move is
 *   recorded as an archive row the application cannot rewrite.
 */
const ARCHIVES_REFUSED = 'audit archives are append-only';
const HEADS_REFUSED = 'an audit chain head only moves forward, and only archiving changes its archived hash';
const GENESIS_HASH = '0'.repeat(64);

export const auditRetention: Migration = {
  async up(db: Kysely<unknown>, dialect) {
    const t = columnTypes(dialect);
    await db.schema.alterTable('organizations').addColumn('audit_retention_days', 'integer').execute();
    await db.schema
      .alterTable('audit_chain_heads')
      .addColumn('archived_hash', 'text', (c) => c.notNull().defaultTo(GENESIS_HASH))
      .execute();
    await db.schema
      .createTable('audit_archives')
      .addColumn('id', t.id, (c) => c.primaryKey())
      // A chain name, as in the other audit tables (text: `user:<id>` and `platform` are not UUIDs).
      .addColumn('org_id', dialect === 'postgres' ? sql`text collate "C"` : 'text', (c) => c.notNull())
      .addColumn('from_seq', 'integer', (c) => c.notNull())
      .addColumn('through_seq', 'integer', (c) => c.notNull())
      .addColumn('head_hash', 'text', (c) => c.notNull())
      .addColumn('event_count', 'integer', (c) => c.notNull())
      .addColumn('location', 'text', (c) => c.notNull())
      .addColumn('sha256', 'text', (c) => c.notNull())
      .addColumn('created_at', t.timestamp, (c) => c.notNull())
      .addUniqueConstraint('audit_archives_chain_through', ['org_id', 'through_seq'])
      .execute();
    await enableChainIsolation(db, dialect, 'audit_archives');

    const headOk = (n: string, o: string) =>
      `${n}.org_id = ${o}.org_id and ${n}.seq >= ${o}.seq
        and ${n}.archived_through_seq >= ${o}.archived_through_seq and ${n}.archived_through_seq <= ${n}.seq
        and (${n}.archived_hash = ${o}.archived_hash or ${n}.archived_through_seq > ${o}.archived_through_seq)`;
    if (dialect === 'postgres') {
      await sql
        .raw(`create function audit_archives_guard() returns trigger language plpgsql as $$
begin
  raise exception '${ARCHIVES_REFUSED}' using errcode = 'insufficient_privilege';
end
$$`)
        .execute(db);
      await sql`create trigger audit_archives_guard before update or delete on audit_archives
        for each row execute function audit_archives_guard()`.execute(db);
      await sql`create trigger audit_archives_no_truncate before truncate on audit_archives
        for each statement execute function audit_archives_guard()`.execute(db);
      await sql
        .raw(`create function audit_chain_heads_guard() returns trigger language plpgsql as $$
begin
  if tg_op = 'UPDATE' and ${headOk('new', 'old')} then
    return new;
  end if;
  raise exception '${HEADS_REFUSED}' using errcode = 'insufficient_privilege';
end
$$`)
        .execute(db);
      await sql`create trigger audit_chain_heads_guard before update or delete on audit_chain_heads
        for each row execute function audit_chain_heads_guard()`.execute(db);
      await sql`create trigger audit_chain_heads_no_truncate before truncate on audit_chain_heads
        for each statement execute function audit_chain_heads_guard()`.execute(db);
      return;
    }
    await sql
      .raw(`CREATE TRIGGER audit_archives_no_update BEFORE UPDATE ON audit_archives
BEGIN SELECT RAISE(ABORT, '${ARCHIVES_REFUSED}'); END`)
      .execute(db);
    await sql
      .raw(`CREATE TRIGGER audit_archives_no_delete BEFORE DELETE ON audit_archives
BEGIN SELECT RAISE(ABORT, '${ARCHIVES_REFUSED}'); END`)
      .execute(db);
    await sql
      .raw(`CREATE TRIGGER audit_chain_heads_forward_only BEFORE UPDATE ON audit_chain_heads
WHEN NOT (${headOk('NEW', 'OLD')})
BEGIN SELECT RAISE(ABORT, '${HEADS_REFUSED}'); END`)
      .execute(db);
    await sql
      .raw(`CREATE TRIGGER audit_chain_heads_no_delete BEFORE DELETE ON audit_chain_heads
BEGIN SELECT RAISE(ABORT, '${HEADS_REFUSED}'); END`)
      .execute(db);
  },
};
