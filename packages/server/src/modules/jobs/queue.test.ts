import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { PlinthApp } from '../../app.ts';
import type { JobsConfig } from '../../config.ts';
import { type Clock, systemClock } from '../../core/clock.ts';
import { createFakeClock, type FakeClock, SECOND } from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { buildTestApp } from '../../test/harness.ts';
import * as repo from './jobs.repo.ts';
import { createJobQueue, type JobQueue, nextCronTime, retryDelaySeconds } from './queue.ts';

// The durable job queue on a real database: payload checks, idempotency, retries with backoff and the dead-letter
// state on a fake clock, take-over after a lost worker's lock runs out, exactly-once claims between concurrent
// workers, schedules that fire once across instances, and a bounded graceful stop.

const CONFIG: JobsConfig = {
  worker: false,
  concurrency: 4,
  queueConcurrency: {},
  pollIntervalMs: 10,
  visibilityTimeoutSeconds: 30,
  shutdownGraceMs: 50,
};
const Payload = z.strictObject({ n: z.number().int() });

describe('retryDelaySeconds', () => {
  it('doubles from the base up to the cap, with up to half of it random', () => {
    for (let attempt = 1; attempt <= 12; attempt++) {
      const ceiling = Math.min(3600, 10 * 2 ** (attempt - 1));
      for (let i = 0; i < 50; i++) {
        const delay = retryDelaySeconds(attempt, 10, 3600);
        expect(delay).toBeGreaterThanOrEqual(ceiling / 2);
        expect(delay).toBeLessThanOrEqual(ceiling);
      }
    }
  });
});

describe('nextCronTime', () => {
  it('reads the expression in UTC and answers strictly after the given time', () => {
    expect(nextCronTime('0 3 * * *', new Date('2030-01-01T02:59:59.000Z')).toISOString()).toBe(
      '2030-01-01T03:00:00.000Z',
    );
    expect(nextCronTime('0 3 * * *', new Date('2030-01-01T03:00:00.000Z')).toISOString()).toBe(
      '2030-01-02T03:00:00.000Z',
    );
    expect(() => nextCronTime('not a cron', new Date())).toThrow();
  });
});

describe.each(testDialects)('job queue (%s)', (dialect) => {
  let app: PlinthApp;
  const queues: JobQueue[] = [];

  beforeAll(async () => {
    app = await buildTestApp(dialect);
  });
  afterAll(async () => {
    for (const queue of queues) await queue.stop();
    await app?.close();
  });

  function queue(clock: Clock, config: Partial<JobsConfig> = {}): JobQueue {
    const created = createJobQueue({
      db: app.database.db,
      clock,
      log: app.log,
      config: { ...CONFIG, ...config },
    });
    queues.push(created);
    return created;
  }

  const job = (id: string) => repo.findJob(app.database.db, id);
  let names = 0;
  /** A job name of its own per test: every test shares the database, and a queue claims only names it defines. */
  const uniqueName = (prefix: string) => `${prefix}.${++names}`;

  it('runs a job with its payload once, and refuses a payload that does not match at enqueue', async () => {
    const clock = createFakeClock();
    const q = queue(clock);
    const seen: unknown[] = [];
    const name = uniqueName('test.echo');
    q.define(name, {
      payload: Payload,
      handler: async (payload, context) => {
        seen.push({ payload, attempt: context.attempt, key: context.idempotencyKey });
      },
    });
    const { id } = await q.enqueue(name, { n: 7 });
    await expect(q.enqueue(name, { n: 'seven' })).rejects.toThrow();
    expect(await q.drain()).toBe(1);
    expect(seen).toEqual([{ payload: { n: 7 }, attempt: 1, key: id }]);
    expect(await job(id)).toMatchObject({ state: 'succeeded', attempts: 1, locked_by: null });
    expect(await q.drain()).toBe(0);
  });

  it('makes one job of one idempotency key, and runs a delayed job only when due', async () => {
    const clock = createFakeClock();
    const q = queue(clock);
    const name = uniqueName('test.once');
    let runs = 0;
    q.define(name, { payload: Payload, handler: async () => void runs++ });
    const first = await q.enqueue(name, { n: 1 }, { idempotencyKey: `k-${name}`, delaySeconds: 60 });
    const again = await q.enqueue(name, { n: 2 }, { idempotencyKey: `k-${name}` });
    expect(again).toEqual({ id: first.id, created: false });
    expect(await q.drain()).toBe(0);
    clock.advance(60 * SECOND);
    expect(await q.drain()).toBe(1);
    expect(runs).toBe(1);
  });

  it('retries a failing job with growing delays, then keeps it dead with its error', async () => {
    const clock = createFakeClock();
    const q = queue(clock);
    const name = uniqueName('test.flaky');
    let runs = 0;
    q.define(name, {
      payload: Payload,
      maxAttempts: 3,
      backoffSeconds: 10,
      handler: async () => {
        runs += 1;
        throw new Error(`failure ${runs}`);
      },
    });
    const { id } = await q.enqueue(name, { n: 1 });
    const delays: number[] = [];
    for (let attempt = 1; attempt <= 2; attempt++) {
      expect(await q.drain()).toBe(1);
      const row = await job(id);
      expect(row).toMatchObject({ state: 'queued', attempts: attempt, last_error: `failure ${attempt}` });
      const delay = (new Date(row?.run_at ?? 0).getTime() - clock.now().getTime()) / 1000;
      delays.push(delay);
      // Not due before its delay…
      clock.advance(delay * 1000 - 1);
      expect(await q.drain()).toBe(0);
      clock.advance(1);
    }
    expect(delays[0]).toBeGreaterThanOrEqual(5);
    expect(delays[0]).toBeLessThanOrEqual(10);
    expect(delays[1]).toBeGreaterThanOrEqual(10);
    expect(delays[1]).toBeLessThanOrEqual(20);
    expect(await q.drain()).toBe(1);
    expect(await job(id)).toMatchObject({ state: 'dead', attempts: 3, last_error: 'failure 3' });
    clock.advance(3600 * SECOND);
    expect(await q.drain()).toBe(0);
    expect(runs).toBe(3);
  });

  it("takes over a job whose worker stopped renewing its lock, once the lock's time has passed", async () => {
    const clock = createFakeClock();
    const q = queue(clock);
    const name = uniqueName('test.orphan');
    const attempts: number[] = [];
    q.define(name, { payload: Payload, handler: async (_p, context) => void attempts.push(context.attempt) });
    const { id } = await q.enqueue(name, { n: 1 });
    // A worker claims the job and is gone (its process killed): nobody renews or finishes it.
    const lockedUntil = new Date(
      clock.now().getTime() + CONFIG.visibilityTimeoutSeconds * 1000,
    ).toISOString();
    const claimed = await repo.claimDue(app.database.db, {
      names: [name],
      limit: 1,
      workerId: 'vanished-worker',
      now: clock.now().toISOString(),
      lockedUntil,
    });
    expect(claimed.map((j) => j.id)).toEqual([id]);
    expect(await q.drain()).toBe(0);
    clock.advance(CONFIG.visibilityTimeoutSeconds * SECOND + 1);
    expect(await q.drain()).toBe(1);
    expect(attempts).toEqual([2]);
    expect(await job(id)).toMatchObject({ state: 'succeeded' });
  });

  it('never runs a job twice, or two at once, with two workers polling the same queue', async () => {
    const name = uniqueName('test.shared');
    const running = new Set<number>();
    const ran: number[] = [];
    let overlaps = 0;
    const workers = [queue(systemClock), queue(systemClock)];
    for (const worker of workers) {
      worker.define(name, {
        payload: Payload,
        handler: async ({ n }) => {
          if (running.has(n)) overlaps += 1;
          running.add(n);
          await new Promise((resolve) => setTimeout(resolve, 1));
          running.delete(n);
          ran.push(n);
        },
      });
    }
    const total = 120;
    for (let n = 0; n < total; n++) await workers[0]?.enqueue(name, { n });
    for (const worker of workers) worker.start();
    const deadline = Date.now() + 30_000;
    while (ran.length < total && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 20));
    for (const worker of workers) await worker.stop();
    expect(overlaps).toBe(0);
    expect([...ran].sort((a, b) => a - b)).toEqual(Array.from({ length: total }, (_, n) => n));
  });

  it('fires a schedule once per due time across two instances', async () => {
    const clock = createFakeClock('2030-01-01T02:59:00.000Z');
    const name = uniqueName('test.nightly');
    let runs = 0;
    const instances = [queue(clock), queue(clock)];
    for (const instance of instances) {
      instance.define(name, { payload: Payload, handler: async () => void runs++ });
      instance.schedule(`${name}.schedule`, '0 3 * * *', { name, payload: { n: 0 } });
    }
    // The first look creates the schedule's row; nothing is due yet.
    await Promise.all(instances.map((instance) => instance.drain()));
    expect(runs).toBe(0);
    clock.set('2030-01-01T03:00:00.000Z');
    await Promise.all(instances.map((instance) => instance.drain()));
    await Promise.all(instances.map((instance) => instance.drain()));
    expect(runs).toBe(1);
    clock.set('2030-01-02T03:00:05.000Z');
    await Promise.all(instances.map((instance) => instance.drain()));
    expect(runs).toBe(2);
  });

  it('runs each queue up to its own concurrency, so a busy queue never holds up another', async () => {
    const narrow = uniqueName('test.narrow');
    const wide = uniqueName('test.wide');
    const q = queue(systemClock, { concurrency: 3, queueConcurrency: { [`q-${narrow}`]: 1 } });
    const peak = { [narrow]: 0, [wide]: 0 };
    const now = { [narrow]: 0, [wide]: 0 };
    let releaseNarrow: () => void = () => {};
    const narrowHeld = new Promise<void>((resolve) => {
      releaseNarrow = resolve;
    });
    let wideDone = 0;
    const track = (name: string, work: () => Promise<void>) => async () => {
      now[name] = (now[name] ?? 0) + 1;
      peak[name] = Math.max(peak[name] ?? 0, now[name] ?? 0);
      await work();
      now[name] = (now[name] ?? 0) - 1;
    };
    q.define(narrow, { queue: `q-${narrow}`, payload: Payload, handler: track(narrow, () => narrowHeld) });
    q.define(wide, {
      queue: `q-${wide}`,
      payload: Payload,
      handler: track(wide, async () => {
        await new Promise((resolve) => setTimeout(resolve, 20));
        wideDone += 1;
      }),
    });
    for (let n = 0; n < 4; n++) await q.enqueue(narrow, { n });
    for (let n = 0; n < 9; n++) await q.enqueue(wide, { n });
    const [first] = await app.database.db
      .selectFrom('jobs')
      .select('queue')
      .where('name', '=', narrow)
      .execute();
    expect(first?.queue).toBe(`q-${narrow}`);
    q.start();
    const deadline = Date.now() + 20_000;
    while (wideDone < 9 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    // The narrow queue's first job still holds its only slot; the wide queue finished beside it, three at a time.
    expect(wideDone).toBe(9);
    expect(peak[wide]).toBe(3);
    expect(peak[narrow]).toBe(1);
    releaseNarrow();
    await q.stop();
  });

  it('waits a bounded time at stop, then hands a running job back without using up an attempt', async () => {
    const clock: FakeClock = createFakeClock();
    const q = queue(clock, { concurrency: 1 });
    const name = uniqueName('test.slow');
    let release: () => void = () => {};
    let started: () => void = () => {};
    const startedPromise = new Promise<void>((resolve) => {
      started = resolve;
    });
    q.define(name, {
      payload: Payload,
      handler: () =>
        new Promise<void>((resolve) => {
          release = resolve;
          started();
        }),
    });
    const { id } = await q.enqueue(name, { n: 1 });
    q.start();
    await startedPromise;
    await q.stop();
    expect(await job(id)).toMatchObject({ state: 'queued', attempts: 0, locked_by: null });
    release();
  });
});
