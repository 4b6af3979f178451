import { type Kysely, sql } from 'kysely';
import type { Migration } from '../migrate.ts';

/**
 * Lets an erasure reach an audit event that an earlier erasure already touched. An event can concern two people
 * — one acted, the other was its subject — and each one's erasure must be able to clear what is theirs, so the
 * guard now accepts the erasure shape (only `actor_id`, `ip`, `user_agent` and `changes` change, `erased_at`
 * set) whether or not `erased_at` was set before. Nothing else about the guard changes: every other update, and
 * every delete of an unarchived event, is still refused. The columns and messages are repeated here rather than
 * imported: a migration's SQL is fixed when it ships.
 */
const UPDATE_REFUSED = 'audit events are append-only: only an erasure of personal fields may change one';
const DELETE_REFUSED = 'audit events may be deleted only once archived (seq <= archived_through_seq)';
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

export const auditErasureAgain: Migration = {
  async up(db: Kysely<unknown>, dialect) {
    if (dialect === 'postgres') {
      const unchanged = FIXED_COLUMNS.map((c) => `new.${c} is not distinct from old.${c}`).join(
        '\n        and ',
      );
      await sql
        .raw(`create or replace function audit_events_guard() returns trigger language plpgsql as $$
begin
  if tg_op = 'UPDATE' then
    if new.erased_at is not null
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
      return;
    }
    const unchanged = FIXED_COLUMNS.map((c) => `NEW.${c} IS OLD.${c}`).join(' AND ');
    await sql`DROP TRIGGER audit_events_no_update`.execute(db);
    await sql
      .raw(`CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
WHEN NOT (NEW.erased_at IS NOT NULL AND ${unchanged})
BEGIN SELECT RAISE(ABORT, '${UPDATE_REFUSED}'); END`)
      .execute(db);
  },
};
