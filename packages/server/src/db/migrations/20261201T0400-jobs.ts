import { type Kysely, sql } from 'kysely';
import { columnTypes } from '../column-types.ts';
import type { Migration } from '../migrate.ts';

/**
 * Durable background jobs and their schedules (modules/jobs). A job is a row: claimed by one worker at a time
 * (`state = 'running'`, `locked_by`, `locked_until`), retried with backoff until `max_attempts`, then `dead`.
 * `idempotency_key` is unique where set, so enqueueing the same work twice — a retried request, two replicas
 * firing one schedule — yields one job. `job_schedules` holds each schedule's next due time; replicas advance it
 * with a compare-and-set, so a due run fires once across all of them.
 */
export const jobs: Migration = {
  async up(db: Kysely<unknown>, dialect) {
    const t = columnTypes(dialect);
    await db.schema
      .createTable('jobs')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('queue', t.text, (c) => c.notNull())
      .addColumn('name', t.text, (c) => c.notNull())
      .addColumn('payload', 'text', (c) => c.notNull())
      .addColumn('state', t.text, (c) => c.notNull())
      .addColumn('priority', 'integer', (c) => c.notNull())
      .addColumn('run_at', t.timestamp, (c) => c.notNull())
      .addColumn('attempts', 'integer', (c) => c.notNull())
      .addColumn('max_attempts', 'integer', (c) => c.notNull())
      .addColumn('idempotency_key', t.text, (c) => c.unique())
      .addColumn('locked_by', 'text')
      .addColumn('locked_until', t.timestamp)
      .addColumn('last_error', 'text')
      .addColumn('created_at', t.timestamp, (c) => c.notNull())
      .addColumn('updated_at', t.timestamp, (c) => c.notNull())
      .addColumn('finished_at', t.timestamp)
      .addCheckConstraint(
        'jobs_state_known',
        sql`state in ('queued', 'running', 'succeeded', 'dead', 'cancelled')`,
      )
      .execute();
    // What a worker claims: a queue's due jobs, highest priority first.
    await db.schema.createIndex('jobs_due').on('jobs').columns(['queue', 'state', 'run_at']).execute();
    await db.schema
      .createTable('job_schedules')
      .addColumn('name', t.text, (c) => c.primaryKey())
      .addColumn('cron', 'text', (c) => c.notNull())
      .addColumn('next_run_at', t.timestamp, (c) => c.notNull())
      .addColumn('last_run_at', t.timestamp)
      .execute();
  },
};
