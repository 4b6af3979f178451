import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { z } from 'zod';
import type { DatabaseConfig, JobsConfig } from '../src/config.ts';
import { systemClock } from '../src/core/clock.ts';
import { newId } from '../src/core/ids.ts';
import { type DatabaseHandle, openDatabase } from '../src/db/database.ts';
import { migrateToLatest } from '../src/db/migrate.ts';
import { createJobQueue } from '../src/modules/jobs/index.ts';
import { benchSchema } from './postgres.ts';
import type { Figures, Measurement } from './workload.ts';

/**
 * Background jobs processed per second with a no-op handler, on SQLite and on PostgreSQL, each next to its
 * floor measured in the same run: the two writes a run cannot do without — taking the job and recording it done,
 * one `update` each on the `jobs` rows — issued directly, with the same concurrency. The queue's figure is the
 * whole way of a job: claims in batches, the payload parsed against its schema, the heartbeat timer, the
 * handler, the finishing update. Jobs are enqueued before the clock starts.
 *
 * PostgreSQL is the server at `BENCH_POSTGRES_URL` (default postgres://postgres@127.0.0.1:5432/test), in a
 * schema of its own dropped afterwards; its rows are skipped when it is unreachable.
 */
export const JOBS_SQLITE = 'plinth: jobs/s, no-op handler (SQLite)';
export const JOBS_SQLITE_FLOOR = 'baseline: the claim and finish updates alone (SQLite)';
export const JOBS_POSTGRES = 'plinth: jobs/s, no-op handler (PostgreSQL)';
export const JOBS_POSTGRES_FLOOR = 'baseline: the claim and finish updates alone (PostgreSQL)';

const JOBS = Number(process.env.JOBS_BENCH_COUNT ?? 4000);
const CONCURRENCY = 16;
const log = pino({ level: 'silent' });

const JOBS_CONFIG: JobsConfig = {
  worker: true,
  concurrency: CONCURRENCY,
  queueConcurrency: {},
  pollIntervalMs: 10,
  visibilityTimeoutSeconds: 300,
  shutdownGraceMs: 1000,
};

/** A fresh, migrated database of the dialect, and how to remove it; undefined when PostgreSQL is unreachable. */
async function freshDatabase(
  dialect: 'sqlite' | 'postgres',
): Promise<{ database: DatabaseHandle; remove(): Promise<void> } | undefined> {
  if (dialect === 'sqlite') {
    const dir = mkdtempSync(join(tmpdir(), 'plinth-bench-jobs-'));
    const database = openDatabase({ dialect: 'sqlite', path: join(dir, 'plinth.db') }, { log });
    await migrateToLatest(database.db, 'sqlite');
    return { database, remove: async () => rmSync(dir, { recursive: true, force: true }) };
  }
  const schema = await benchSchema('bench_jobs', 'the PostgreSQL job rows');
  if (!schema) return undefined;
  const config: DatabaseConfig = {
    dialect: 'postgres',
    url: schema.url,
    readUrl: undefined,
    poolMax: 20,
  };
  const database = openDatabase(config, { log });
  await migrateToLatest(database.db, 'postgres');
  return {
    database,
    async remove() {
      await database.close();
      await schema.drop();
    },
  };
}

const figures = (name: string, perSecond: number): Figures => ({
  name,
  rate: Math.round(perSecond),
  p50Ms: undefined,
  p99Ms: undefined,
  non2xx: 0,
  errors: 0,
});

/** Runs `JOBS` no-op jobs through a worker; resolves with jobs per second. */
async function queueRate(database: DatabaseHandle): Promise<number> {
  const jobs = createJobQueue({ db: database.db, clock: systemClock, log, config: JOBS_CONFIG });
  let done = 0;
  let finished: () => void = () => {};
  const allDone = new Promise<void>((resolve) => {
    finished = resolve;
  });
  jobs.define('bench.noop', {
    payload: z.strictObject({ n: z.number().int() }),
    handler: async () => {
      done += 1;
      if (done === JOBS) finished();
    },
  });
  await database.db.transaction().execute(async (trx) => {
    for (let n = 0; n < JOBS; n++) await jobs.enqueue('bench.noop', { n }, { db: trx });
  });
  const started = performance.now();
  jobs.start();
  await allDone;
  const seconds = (performance.now() - started) / 1000;
  await jobs.stop();
  return JOBS / seconds;
}

/** The floor: for `JOBS` rows, the claim's and the finish's `update` alone, `CONCURRENCY` at a time. */
async function floorRate(database: DatabaseHandle): Promise<number> {
  const now = new Date().toISOString();
  const ids = Array.from({ length: JOBS }, () => newId());
  await database.db.transaction().execute(async (trx) => {
    for (const id of ids) {
      await trx
        .insertInto('jobs')
        .values({
          id,
          queue: 'default',
          name: 'bench.floor',
          payload: '{}',
          state: 'queued',
          priority: 0,
          run_at: now,
          attempts: 0,
          max_attempts: 1,
          idempotency_key: null,
          locked_by: null,
          locked_until: null,
          last_error: null,
          created_at: now,
          updated_at: now,
          finished_at: null,
        })
        .execute();
    }
  });
  let next = 0;
  const worker = async () => {
    while (next < ids.length) {
      const id = ids[next++] as string;
      await database.db
        .updateTable('jobs')
        .set({ state: 'running', locked_by: 'bench' })
        .where('id', '=', id)
        .execute();
      await database.db
        .updateTable('jobs')
        .set({ state: 'succeeded', locked_by: null, finished_at: now })
        .where('id', '=', id)
        .execute();
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return JOBS / ((performance.now() - started) / 1000);
}

function measurement(name: string, dialect: 'sqlite' | 'postgres', rate: typeof queueRate): Measurement {
  return {
    name,
    async measure() {
      const fresh = await freshDatabase(dialect);
      if (!fresh) return figures(name, 0);
      try {
        return figures(name, await rate(fresh.database));
      } finally {
        if (dialect === 'sqlite') await fresh.database.close();
        await fresh.remove();
      }
    },
  };
}

export const jobWorkloads: Measurement[] = [
  measurement(JOBS_SQLITE_FLOOR, 'sqlite', floorRate),
  measurement(JOBS_SQLITE, 'sqlite', queueRate),
  measurement(JOBS_POSTGRES_FLOOR, 'postgres', floorRate),
  measurement(JOBS_POSTGRES, 'postgres', queueRate),
];
