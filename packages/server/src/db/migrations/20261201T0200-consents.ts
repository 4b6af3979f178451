import { type Kysely, sql } from 'kysely';
import { columnTypes } from '../column-types.ts';
import type { Migration } from '../migrate.ts';

/**
 * Consent records (modules/privacy): one row per grant or withdrawal a person makes, with the evidence of the
 * request that made it. The history is append-only — a trigger on each dialect refuses every UPDATE, so a
 * recorded consent cannot be rewritten after the fact, not even by a bug in the application. DELETE stays
 * allowed, because deleting an account must remove its records (the foreign key cascades).
 *
 * `granted` is an integer 0/1 rather than a boolean: PostgreSQL reads a boolean back as `true`/`false` and SQLite
 * as `1`/`0`, while an integer reads back as the same number on both; the check keeps it to the two values.
 */
export const consents: Migration = {
  async up(db: Kysely<unknown>, dialect) {
    const t = columnTypes(dialect);

    await db.schema
      .createTable('consent_records')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('user_id', t.id, (c) => c.notNull().references('users.id').onDelete('cascade'))
      .addColumn('purpose', t.text, (c) => c.notNull())
      .addColumn('granted', 'integer', (c) => c.notNull())
      .addColumn('policy_version', 'text', (c) => c.notNull())
      .addColumn('recorded_at', t.timestamp, (c) => c.notNull())
      .addColumn('ip', 'text')
      .addColumn('user_agent', 'text')
      .addColumn('request_id', 'text')
      .addCheckConstraint('consent_records_granted_is_bit', sql`granted in (0, 1)`)
      .execute();
    // The latest record per purpose (the current state) is found through this one.
    await db.schema
      .createIndex('consent_records_user_purpose')
      .on('consent_records')
      .columns(['user_id', 'purpose', 'recorded_at'])
      .execute();
    // The history, newest first across purposes, is a range of this one.
    await db.schema
      .createIndex('consent_records_user_history')
      .on('consent_records')
      .columns(['user_id', 'recorded_at', 'id'])
      .execute();

    if (dialect === 'postgres') {
      // SQLSTATE 55000 (object_not_in_prerequisite_state): the row exists, but its state forbids the change.
      await sql`
        create function consent_records_refuse_update() returns trigger language plpgsql as $$
        begin
          raise exception 'consent_records is append-only: record a new grant or withdrawal instead'
            using errcode = '55000';
        end
        $$`.execute(db);
      await sql`
        create trigger consent_records_append_only before update on consent_records
        for each row execute function consent_records_refuse_update()`.execute(db);
    } else {
      await sql`
        create trigger consent_records_append_only before update on consent_records
        begin
          select raise(abort, 'consent_records is append-only: record a new grant or withdrawal instead');
        end`.execute(db);
    }
  },
};
