import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { PlinthApp } from '../../app.ts';
import { createFakeClock, SECOND } from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { buildTestApp } from '../../test/harness.ts';
import * as repo from './jobs.repo.ts';
import { createJobQueue } from './queue.ts';

// At-least-once across a real crash: a worker process takes a job and is killed with SIGKILL in the middle of it
// — no shutdown hook, no handing back. The job stays locked to the dead worker until the visibility timeout has
// passed, then another worker takes it over and runs it again, as attempt 2.

const repoRoot = fileURLToPath(new URL('../../../../../', import.meta.url));
const FIXTURE = 'packages/server/src/test/fixtures/job-worker.ts';
const VISIBILITY_TIMEOUT_SECONDS = 5;
/** Generous bound for the child to start and take the job; never a timing assertion. */
const PATIENCE_MS = 30_000;

describe.each(testDialects)('a worker killed mid-job (%s)', (dialect) => {
  let app: PlinthApp;

  beforeAll(async () => {
    app = await buildTestApp(dialect);
  });
  afterAll(async () => {
    await app?.close();
  });

  function databaseUrl(): string {
    const database = app.config.database;
    return database.dialect === 'sqlite' ? `sqlite:${database.path}` : database.url;
  }

  /** Starts the worker process; resolves with it once it prints that it started the job. */
  function startWorker() {
    const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE], {
      cwd: repoRoot,
      env: {
        PATH: process.env.PATH ?? '',
        NODE_ENV: 'test',
        DATA_DIR: app.config.dataDir,
        DATABASE_URL: databaseUrl(),
        JWT_SECRET: 's'.repeat(32),
        ENCRYPTION_KEY: Buffer.alloc(32, 7).toString('base64'),
        JOBS_POLL_INTERVAL_MS: '20',
        JOBS_VISIBILITY_TIMEOUT_SECONDS: String(VISIBILITY_TIMEOUT_SECONDS),
      },
    });
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      child.on('exit', (_code, signal) => resolve(signal)),
    );
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const started = new Promise<string>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(
        () => reject(new Error(`the worker never took the job: ${stderr}`)),
        PATIENCE_MS,
      );
      child.stdout.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        const line = /started (\S+) (\d+)\n/.exec(out);
        if (line) {
          clearTimeout(timer);
          resolve(`${line[1]} ${line[2]}`);
        }
      });
      child.on('exit', () => reject(new Error(`the worker exited early: ${stderr}`)));
    });
    return { child, exited, started };
  }

  it('leaves the job locked to the dead worker until its visibility timeout, then another runs it again', async () => {
    const successor = createJobQueue({
      db: app.database.db,
      clock: createFakeClock(new Date()),
      log: app.log,
      config: { ...app.config.jobs, visibilityTimeoutSeconds: VISIBILITY_TIMEOUT_SECONDS },
    });
    const attempts: number[] = [];
    successor.define('test.crash', {
      payload: z.strictObject({ n: z.number() }),
      handler: async (_payload, context) => void attempts.push(context.attempt),
    });
    const { id } = await successor.enqueue('test.crash', { n: 1 });

    const worker = startWorker();
    expect(await worker.started).toBe(`${id} 1`);
    worker.child.kill('SIGKILL');
    expect(await worker.exited).toBe('SIGKILL');

    const held = await repo.findJob(app.database.db, id);
    expect(held).toMatchObject({ state: 'running', attempts: 1 });
    expect(held?.locked_by).toMatch(/:\d+:/);
    // Within the timeout nobody may take it: the dead worker might only be slow.
    expect(await successor.drain()).toBe(0);

    const clock = createFakeClock(new Date(new Date(held?.locked_until ?? 0).getTime() + SECOND));
    const later = createJobQueue({
      db: app.database.db,
      clock,
      log: app.log,
      config: { ...app.config.jobs, visibilityTimeoutSeconds: VISIBILITY_TIMEOUT_SECONDS },
    });
    later.define('test.crash', {
      payload: z.strictObject({ n: z.number() }),
      handler: async (_payload, context) => void attempts.push(context.attempt),
    });
    expect(await later.drain()).toBe(1);
    expect(attempts).toEqual([2]);
    expect(await repo.findJob(app.database.db, id)).toMatchObject({
      state: 'succeeded',
      attempts: 2,
      locked_by: null,
    });
  });
});
