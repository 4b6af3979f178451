import { randomBytes, randomInt } from 'node:crypto';
import { hostname } from 'node:os';
import { Cron } from 'croner';
import type { FastifyBaseLogger } from 'fastify';
import type { Kysely } from 'kysely';
import type { z } from 'zod';
import type { JobsConfig } from '../../config.ts';
import type { Clock } from '../../core/clock.ts';
import { newId } from '../../core/ids.ts';
import type { Database } from '../../db/schema.ts';
import * as repo from './jobs.repo.ts';

/** What a handler learns about the run it is in. */
export interface JobContext {
  jobId: string;
  /** 1 for the first run, 2 for the first retry, … */
  attempt: number;
  /**
   * Stable across every run of this job (its idempotency key, or its id): a handler whose effect happens outside
   * the database (a mail, a webhook) passes it on, so that a retry after a crash does not do the thing twice.
   */
  idempotencyKey: string;
}

/** A job's type: its payload's schema and the handler that does the work. */
export interface JobDefinition<Payload> {
  payload: z.ZodType<Payload>;
  /**
   * The queue the job runs in (`default` when omitted). Each queue has its own number of jobs at once per process
   * (`JOBS_QUEUE_CONCURRENCY`, else `JOBS_CONCURRENCY`), so a burst in one (webhook deliveries) never keeps another
   * (mail, exports) waiting.
   */
  queue?: string;
  handler: (payload: Payload, context: JobContext) => Promise<void>;
  /** Runs before the job is dead; 5 when omitted. */
  maxAttempts?: number;
  /** The first retry's delay in seconds, doubling per attempt up to `maxBackoffSeconds`; 10 when omitted. */
  backoffSeconds?: number;
  /** The longest delay between retries, in seconds; 3600 when omitted. */
  maxBackoffSeconds?: number;
}

export interface EnqueueOptions {
  /** Not before this time (default: now). */
  runAt?: Date;
  /** Not before this many seconds from now (instead of `runAt`). */
  delaySeconds?: number;
  /** Higher runs first among due jobs; 0 when omitted. */
  priority?: number;
  /** Enqueueing the same key again returns the job that holds it instead of making another. */
  idempotencyKey?: string;
  /** Overrides the definition's `maxAttempts`. */
  maxAttempts?: number;
  /**
   * The transaction to enqueue in: the job then exists exactly when the change that asked for it commits (the
   * outbox pattern). The queue's own database otherwise.
   */
  db?: Kysely<Database>;
}

export interface JobQueue {
  /** Registers the handler of a job name; at start-up, before any job of the name can run. */
  define<Payload>(name: string, definition: JobDefinition<Payload>): void;
  /** Adds a job (its payload checked against the definition's schema). */
  enqueue<Payload>(
    name: string,
    payload: Payload,
    options?: EnqueueOptions,
  ): Promise<{ id: string; created: boolean }>;
  /**
   * Runs job `job` with `payload` on a cron schedule (five or six fields, UTC), once per due time across every
   * replica. At start-up, like `define`.
   */
  schedule<Payload>(name: string, cron: string, job: { name: string; payload: Payload }): void;
  /**
   * Runs every due job and schedule now, until none is left due; returns how many jobs ran. For tests and the
   * CLI. With `names`, only due jobs of those names run, and no schedule fires.
   */
  drain(options?: { names?: readonly string[] }): Promise<number>;
  /** Starts the background worker (polling for due jobs and schedules). */
  start(): void;
  /**
   * Stops taking work and waits up to `JOBS_SHUTDOWN_GRACE_MS` for running jobs; those still running then are
   * handed back to the queue for another worker, without using up an attempt.
   */
  stop(): Promise<void>;
}

export interface JobQueueDeps {
  db: Kysely<Database>;
  clock: Clock;
  log: FastifyBaseLogger;
  config: JobsConfig;
  /** Where each run's duration and outcome are counted (the `/metrics` registry). */
  metrics?: JobRunMetrics;
}

/** What the queue reports about each run, by job name. */
export interface JobRunMetrics {
  /** Observes a run's seconds, labelled `{name, outcome}` (`succeeded`, `retried`, `dead`). */
  observeRun(name: string, outcome: 'succeeded' | 'retried' | 'dead', seconds: number): void;
}

/** The queue a job runs in when its definition names none. */
export const DEFAULT_QUEUE = 'default';

const DEFAULT_MAX_ATTEMPTS = 5;
const DEFAULT_BACKOFF_SECONDS = 10;
const DEFAULT_MAX_BACKOFF_SECONDS = 3600;
/** How soon after enqueueing in a caller's transaction the worker looks again (see `enqueue`). */
const COMMIT_WAKE_DELAY_MS = 50;
/** A stored error message is cut to this many characters. */
const ERROR_MAX_LENGTH = 2000;

/**
 * The delay before retry `attempt` (1 after the first failure): exponential from `base`, capped at `max`, with
 * "equal jitter" — half fixed, half random — so that jobs which failed together do not retry together, while the
 * delay still grows.
 */
export function retryDelaySeconds(attempt: number, base: number, max: number): number {
  const ceiling = Math.min(max, base * 2 ** Math.max(0, attempt - 1));
  const half = ceiling / 2;
  return half + (randomInt(0, 1_000_001) / 1_000_000) * half;
}

/** The next time a cron expression (UTC) fires strictly after `after`. */
export function nextCronTime(cron: string, after: Date): Date {
  const next = new Cron(cron, { timezone: 'UTC', paused: true }).nextRun(after);
  if (!next) throw new Error(`cron expression "${cron}" never fires again`);
  return next;
}

/**
 * The durable job queue over the `jobs` table. Claims are atomic (see repo.claimDue), so several workers —
 * threads of one replica or many replicas — never run one job at the same time; a worker that dies leaves its
 * jobs locked until `JOBS_VISIBILITY_TIMEOUT_SECONDS` pass, and then another takes them over (at-least-once). A
 * running job's lock is renewed every third of that time while its handler works.
 */
export function createJobQueue(deps: JobQueueDeps): JobQueue {
  const { db, clock, log, config } = deps;
  const definitions = new Map<string, JobDefinition<unknown>>();
  const schedules = new Map<string, { cron: string; job: { name: string; payload: unknown } }>();
  const workerId = `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
  /** The runs in progress in this process, by queue. */
  const running = new Map<string, Set<Promise<void>>>();
  let timer: NodeJS.Timeout | undefined;
  let started = false;
  let stopping = false;
  let ticking = false;

  const iso = (date: Date) => date.toISOString();
  const lockedUntil = () => iso(new Date(clock.now().getTime() + config.visibilityTimeoutSeconds * 1000));

  const queueOf = (definition: JobDefinition<unknown>) => definition.queue ?? DEFAULT_QUEUE;
  const limitOf = (queue: string) => config.queueConcurrency[queue] ?? config.concurrency;
  const runningIn = (queue: string) => running.get(queue)?.size ?? 0;

  /** Each queue with a job defined in it, with the names of its jobs and how many more it may run now. */
  function queues(): { queue: string; names: string[]; free: number }[] {
    const names = new Map<string, string[]>();
    for (const [name, definition] of definitions) {
      const queue = queueOf(definition);
      names.set(queue, [...(names.get(queue) ?? []), name]);
    }
    return [...names].map(([queue, of]) => ({ queue, names: of, free: limitOf(queue) - runningIn(queue) }));
  }

  function definitionOf(name: string): JobDefinition<unknown> {
    const definition = definitions.get(name);
    if (!definition) throw new Error(`no job named "${name}" is defined`);
    return definition;
  }

  async function enqueue<Payload>(
    name: string,
    payload: Payload,
    options: EnqueueOptions = {},
  ): Promise<{ id: string; created: boolean }> {
    const definition = definitionOf(name);
    const checked = definition.payload.parse(payload);
    const now = clock.now();
    const runAt =
      options.runAt ??
      (options.delaySeconds === undefined ? now : new Date(now.getTime() + options.delaySeconds * 1000));
    const result = await repo.insertJob(options.db ?? db, {
      id: newId(),
      queue: queueOf(definition),
      name,
      payload: JSON.stringify(checked),
      state: 'queued',
      priority: options.priority ?? 0,
      run_at: iso(runAt),
      attempts: 0,
      max_attempts: options.maxAttempts ?? definition.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
      idempotency_key: options.idempotencyKey ?? null,
      locked_by: null,
      locked_until: null,
      last_error: null,
      created_at: iso(now),
      updated_at: iso(now),
      finished_at: null,
    });
    // A job due now need not wait for the next poll (in this process; other replicas find it when they poll).
    // One enqueued in the caller's transaction is invisible to the worker's own connection until that commits
    // (PostgreSQL; SQLite's single connection runs the claim after it anyway), so the worker looks once more
    // shortly after.
    if (result.created && started && runAt <= now) {
      wake();
      if (options.db) setTimeout(wake, COMMIT_WAKE_DELAY_MS).unref();
    }
    return result;
  }

  /** Runs one claimed job to its end: done, retried later, or dead. Never throws. */
  async function run(job: repo.JobRow): Promise<void> {
    const definition = definitions.get(job.name);
    const startedAt = performance.now();
    const observe = (outcome: 'succeeded' | 'retried' | 'dead') =>
      deps.metrics?.observeRun(job.name, outcome, (performance.now() - startedAt) / 1000);
    const heartbeat = setInterval(
      () => {
        repo.extendLock(db, job.id, workerId, lockedUntil()).catch((err: unknown) => {
          log.warn({ err, jobId: job.id }, 'could not renew a job lock');
        });
      },
      Math.max(1000, (config.visibilityTimeoutSeconds * 1000) / 3),
    );
    heartbeat.unref();
    try {
      if (!definition) throw new PermanentJobError(`no job named "${job.name}" is defined`);
      const parsed = definition.payload.safeParse(JSON.parse(job.payload));
      if (!parsed.success) throw new PermanentJobError(`payload does not match: ${parsed.error.message}`);
      await definition.handler(parsed.data, {
        jobId: job.id,
        attempt: job.attempts,
        idempotencyKey: job.idempotency_key ?? job.id,
      });
      await repo.finishRun(db, job.id, workerId, { state: 'succeeded', now: iso(clock.now()) });
      observe('succeeded');
    } catch (error) {
      await fail(job, definition, error, observe).catch((err: unknown) => {
        // The lock runs out and another worker retries it: at-least-once still holds.
        log.error({ err, jobId: job.id }, 'could not record a job failure');
      });
    } finally {
      clearInterval(heartbeat);
    }
  }

  async function fail(
    job: repo.JobRow,
    definition: JobDefinition<unknown> | undefined,
    error: unknown,
    observe: (outcome: 'retried' | 'dead') => void,
  ): Promise<void> {
    const message = (error instanceof Error ? error.message : String(error)).slice(0, ERROR_MAX_LENGTH);
    const now = clock.now();
    const permanent = error instanceof PermanentJobError;
    if (permanent || job.attempts >= job.max_attempts) {
      await repo.finishRun(db, job.id, workerId, { state: 'dead', now: iso(now), error: message });
      observe('dead');
      log.error(
        { jobId: job.id, job: job.name, attempts: job.attempts, error: message },
        'job failed for good',
      );
      return;
    }
    const delay = retryDelaySeconds(
      job.attempts,
      definition?.backoffSeconds ?? DEFAULT_BACKOFF_SECONDS,
      definition?.maxBackoffSeconds ?? DEFAULT_MAX_BACKOFF_SECONDS,
    );
    const runAt = iso(new Date(now.getTime() + delay * 1000));
    await repo.finishRun(db, job.id, workerId, {
      state: 'queued',
      now: iso(now),
      runAt,
      error: message,
    });
    observe('retried');
    log.warn(
      { jobId: job.id, job: job.name, attempt: job.attempts, retryAt: runAt, error: message },
      'job failed',
    );
  }

  /** Claims up to `limit` due jobs of `names` (one queue's jobs). */
  function claim(names: readonly string[], limit: number): Promise<repo.JobRow[]> {
    const now = clock.now();
    return repo.claimDue(db, {
      names,
      limit,
      workerId,
      now: iso(now),
      lockedUntil: lockedUntil(),
    });
  }

  /** Fires every due schedule once across replicas: the replica that advances its due time enqueues the run. */
  async function fireSchedules(): Promise<void> {
    const now = clock.now();
    for (const [name, { cron, job }] of schedules) {
      const row = await repo.findSchedule(db, name);
      if (!row) {
        await repo.createSchedule(db, {
          name,
          cron,
          next_run_at: iso(nextCronTime(cron, now)),
          last_run_at: null,
        });
        continue;
      }
      const expected = { cron: row.cron, nextRunAt: row.next_run_at };
      if (row.cron !== cron) {
        // The code's expression changed since the row was written: the next time follows the new one.
        await repo.advanceSchedule(db, name, expected, {
          cron,
          nextRunAt: iso(nextCronTime(cron, now)),
          lastRunAt: row.last_run_at,
        });
        continue;
      }
      if (new Date(row.next_run_at) > now) continue;
      await db.transaction().execute(async (trx) => {
        const won = await repo.advanceSchedule(trx, name, expected, {
          cron,
          nextRunAt: iso(nextCronTime(cron, now)),
          lastRunAt: iso(now),
        });
        // The key makes the run unique even if a replica's clock lets it see the same due time twice.
        if (won) {
          await enqueue(job.name, job.payload, {
            idempotencyKey: `schedule:${name}:${row.next_run_at}`,
            db: trx,
          });
        }
      });
    }
  }

  async function tick(): Promise<void> {
    if (ticking || stopping) return;
    ticking = true;
    let busy = false;
    try {
      await fireSchedules();
      for (const { queue, names, free } of queues()) {
        const jobs = free > 0 ? await claim(names, free) : [];
        // A queue that filled its free slots may have more due: look again at once rather than after a poll.
        if (free > 0 && jobs.length === free) busy = true;
        const runs = running.get(queue) ?? new Set<Promise<void>>();
        running.set(queue, runs);
        for (const job of jobs) {
          const done: Promise<void> = run(job).finally(() => {
            runs.delete(done);
            wake();
          });
          runs.add(done);
        }
      }
    } catch (err) {
      log.error({ err }, 'job worker could not poll');
    } finally {
      ticking = false;
      if (started && !stopping) schedule(busy ? 0 : config.pollIntervalMs);
    }
  }

  function schedule(ms: number): void {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => void tick(), ms);
  }

  function wake(): void {
    if (started && !stopping && queues().some((q) => q.free > 0)) schedule(0);
  }

  return {
    define(name, definition) {
      if (definitions.has(name)) throw new Error(`job "${name}" is defined twice`);
      definitions.set(name, definition as JobDefinition<unknown>);
    },
    enqueue,
    schedule(name, cron, job) {
      nextCronTime(cron, clock.now());
      definitionOf(job.name).payload.parse(job.payload);
      if (schedules.has(name)) throw new Error(`schedule "${name}" is defined twice`);
      schedules.set(name, { cron, job });
    },
    async drain(options = {}) {
      const only = options.names && new Set(options.names);
      let ran = 0;
      for (;;) {
        if (!only) await fireSchedules();
        const claimed = await Promise.all(
          queues().map((q) => claim(only ? q.names.filter((n) => only.has(n)) : q.names, limitOf(q.queue))),
        );
        const jobs = claimed.flat();
        if (jobs.length === 0) return ran;
        await Promise.all(jobs.map((job) => run(job)));
        ran += jobs.length;
      }
    },
    start() {
      if (started) return;
      started = true;
      schedule(0);
    },
    async stop() {
      stopping = true;
      if (timer) clearTimeout(timer);
      const grace = new Promise<'timeout'>((resolve) =>
        setTimeout(() => resolve('timeout'), config.shutdownGraceMs).unref(),
      );
      const all = [...running.values()].flatMap((runs) => [...runs]);
      const outcome = await Promise.race([Promise.all(all).then(() => 'done' as const), grace]);
      if (outcome === 'timeout') {
        const released = await repo.releaseHeld(db, workerId, iso(clock.now()));
        log.warn({ released }, 'handed unfinished jobs back to the queue at shutdown');
      }
    },
  };
}

/** A failure no retry can fix (an unknown job name, a payload that does not match): the job is dead at once. */
export class PermanentJobError extends Error {
  override name = 'PermanentJobError';
}
