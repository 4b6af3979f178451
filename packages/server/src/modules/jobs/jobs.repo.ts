import type { Insertable, Kysely, Selectable } from 'kysely';
import { isPostgres } from '../../db/database.ts';
import type { Database, JobSchedulesTable, JobsTable } from '../../db/schema.ts';

/** SQL over `jobs` and `job_schedules`. Times are ISO strings from the application clock. */

export type JobRow = Selectable<JobsTable>;
export type ScheduleRow = Selectable<JobSchedulesTable>;

/**
 * Inserts a job, or nothing when its idempotency key is taken; returns the id of the job that holds the key
 * (the new one or the existing one) and whether it is new.
 */
export async function insertJob(
  db: Kysely<Database>,
  job: Insertable<JobsTable> & { id: string },
): Promise<{ id: string; created: boolean }> {
  const inserted = await db
    .insertInto('jobs')
    .values(job)
    .onConflict((oc) => oc.column('idempotency_key').doNothing())
    .returning('id')
    .executeTakeFirst();
  if (inserted) return { id: inserted.id, created: true };
  const existing = await db
    .selectFrom('jobs')
    .select('id')
    .where('idempotency_key', '=', job.idempotency_key ?? null)
    .executeTakeFirstOrThrow();
  return { id: existing.id, created: false };
}

/**
 * Claims up to `limit` due jobs of `names` for `workerId` until `lockedUntil`, in one statement: queued jobs
 * whose time has come, and running jobs whose holder's lock ran out (a worker that died). On PostgreSQL the
 * candidates are locked `for update skip locked`, so concurrent workers take disjoint sets without waiting; SQLite
 * runs one write at a time, so the statement is atomic there already. Each claim counts an attempt.
 */
export async function claimDue(
  db: Kysely<Database>,
  claim: { names: readonly string[]; limit: number; workerId: string; now: string; lockedUntil: string },
): Promise<JobRow[]> {
  if (claim.names.length === 0 || claim.limit <= 0) return [];
  let candidates = db
    .selectFrom('jobs')
    .select('id')
    .where('name', 'in', claim.names)
    .where((eb) =>
      eb.or([
        eb.and([eb('state', '=', 'queued'), eb('run_at', '<=', claim.now)]),
        eb.and([eb('state', '=', 'running'), eb('locked_until', '<', claim.now)]),
      ]),
    )
    .orderBy('priority', 'desc')
    .orderBy('run_at')
    .orderBy('id')
    .limit(claim.limit);
  if (isPostgres(db)) candidates = candidates.forUpdate().skipLocked();
  return db
    .updateTable('jobs')
    .set((eb) => ({
      state: 'running',
      attempts: eb('attempts', '+', 1),
      locked_by: claim.workerId,
      locked_until: claim.lockedUntil,
      updated_at: claim.now,
    }))
    .where('id', 'in', candidates)
    .returningAll()
    .execute();
}

/** Moves the lock of a job this worker still holds further out; false when it no longer holds it. */
export async function extendLock(
  db: Kysely<Database>,
  id: string,
  workerId: string,
  lockedUntil: string,
): Promise<boolean> {
  const result = await db
    .updateTable('jobs')
    .set({ locked_until: lockedUntil })
    .where('id', '=', id)
    .where('locked_by', '=', workerId)
    .where('state', '=', 'running')
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/**
 * Ends a run this worker holds: done, back to the queue for a retry at `runAt`, or dead.
 * A worker that lost its lock (it ran past `locked_until` and another took over) changes nothing.
 */
export async function finishRun(
  db: Kysely<Database>,
  id: string,
  workerId: string,
  outcome:
    | { state: 'succeeded'; now: string }
    | { state: 'queued'; now: string; runAt: string; error: string }
    | { state: 'dead'; now: string; error: string },
): Promise<boolean> {
  const query = db
    .updateTable('jobs')
    .where('id', '=', id)
    .where('locked_by', '=', workerId)
    .where('state', '=', 'running');
  const common = { locked_by: null, locked_until: null, updated_at: outcome.now };
  const result = await (outcome.state === 'queued'
    ? query.set({ ...common, state: 'queued', run_at: outcome.runAt, last_error: outcome.error })
    : query.set({
        ...common,
        state: outcome.state,
        finished_at: outcome.now,
        ...(outcome.state === 'dead' ? { last_error: outcome.error } : {}),
      })
  ).executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/**
 * Hands every job this worker still runs back to the queue, due now (a shutdown that could not wait for them).
 * A run cut short by shutdown was no fault of the job: it does not use up an attempt. Returns how many.
 */
export async function releaseHeld(db: Kysely<Database>, workerId: string, now: string): Promise<number> {
  const released = await db
    .updateTable('jobs')
    .set((eb) => ({
      state: 'queued',
      locked_by: null,
      locked_until: null,
      run_at: now,
      updated_at: now,
      attempts: eb('attempts', '-', 1),
    }))
    .where('locked_by', '=', workerId)
    .where('state', '=', 'running')
    .executeTakeFirst();
  return Number(released.numUpdatedRows);
}

export function findJob(db: Kysely<Database>, id: string): Promise<JobRow | undefined> {
  return db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirst();
}

export function findSchedule(db: Kysely<Database>, name: string): Promise<ScheduleRow | undefined> {
  return db.selectFrom('job_schedules').selectAll().where('name', '=', name).executeTakeFirst();
}

/** Creates a schedule's row if no replica did yet. */
export async function createSchedule(db: Kysely<Database>, row: ScheduleRow): Promise<void> {
  await db
    .insertInto('job_schedules')
    .values(row)
    .onConflict((oc) => oc.column('name').doNothing())
    .execute();
}

/**
 * Moves a schedule from the due time `expected` to `next`, only if no other replica did first: the replica whose
 * update succeeds fires the run.
 */
export async function advanceSchedule(
  db: Kysely<Database>,
  name: string,
  expected: { cron: string; nextRunAt: string },
  next: { cron: string; nextRunAt: string; lastRunAt: string | null },
): Promise<boolean> {
  const result = await db
    .updateTable('job_schedules')
    .set({ cron: next.cron, next_run_at: next.nextRunAt, last_run_at: next.lastRunAt })
    .where('name', '=', name)
    .where('cron', '=', expected.cron)
    .where('next_run_at', '=', expected.nextRunAt)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/**
 * Puts a dead or cancelled job back in the queue, due now, with its attempts starting over (an operator's
 * retry: the cause is meant to be fixed). Returns the job as it is now; undefined when it is in another state.
 */
export function requeue(db: Kysely<Database>, id: string, now: string): Promise<JobRow | undefined> {
  return db
    .updateTable('jobs')
    .set({ state: 'queued', run_at: now, attempts: 0, finished_at: null, updated_at: now })
    .where('id', '=', id)
    .where('state', 'in', ['dead', 'cancelled'])
    .returningAll()
    .executeTakeFirst();
}

/** Cancels a queued job (waiting to run, or to retry). Undefined when it is in another state. */
export function cancel(db: Kysely<Database>, id: string, now: string): Promise<JobRow | undefined> {
  return db
    .updateTable('jobs')
    .set({ state: 'cancelled', finished_at: now, updated_at: now })
    .where('id', '=', id)
    .where('state', '=', 'queued')
    .returningAll()
    .executeTakeFirst();
}

/** How many jobs each queue holds in each unfinished state (and dead ones, which wait for an operator). */
export async function depth(
  db: Kysely<Database>,
): Promise<{ queue: string; state: string; count: number }[]> {
  const rows = await db
    .selectFrom('jobs')
    .select(['queue', 'state', (eb) => eb.fn.countAll<string | number>().as('count')])
    .where('state', 'in', ['queued', 'running', 'dead'])
    .groupBy(['queue', 'state'])
    .execute();
  return rows.map((row) => ({ queue: row.queue, state: row.state, count: Number(row.count) }));
}
