import { Job, JobDetail, Page } from '@plinth/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { PlinthApp } from '../../app.ts';
import {
  bearer,
  createOperator,
  expectProblem,
  login,
  PASSWORD,
  signupAndVerify,
} from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { buildTestApp } from '../../test/harness.ts';

// The operators' job API: dead jobs listed and shown with their error, retried by hand and run again; queued
// jobs cancelled and never run; the wrong state refused with 409 and nothing changed; every operation on the
// installation's audit chain; nobody but an operator gets in. And the queue's figures on /metrics.

const Payload = z.strictObject({ n: z.number().int() });

describe.each(testDialects)('admin jobs API (%s)', (dialect) => {
  let app: PlinthApp;
  let operator: { authorization: string };
  let member: { authorization: string };
  let fail = true;
  const ran: number[] = [];

  beforeAll(async () => {
    app = await buildTestApp(dialect);
    app.jobs.define('test.admin_flaky', {
      payload: Payload,
      maxAttempts: 1,
      handler: async ({ n }) => {
        if (fail) throw new Error(`upstream refused ${n}`);
        ran.push(n);
      },
    });
    await createOperator(app, { email: 'ops@example.com', password: PASSWORD });
    operator = bearer((await login(app, 'ops@example.com', PASSWORD)).accessToken);
    await signupAndVerify(app, { email: 'member@example.com', password: PASSWORD, name: 'Mia Member' });
    member = bearer((await login(app, 'member@example.com', PASSWORD)).accessToken);
  });
  afterAll(async () => {
    await app?.close();
  });

  const get = (url: string, headers = operator) => app.inject({ method: 'GET', url, headers });
  const post = (url: string, headers = operator) => app.inject({ method: 'POST', url, headers });

  it('lists a dead job with its error, retries it by hand, and it runs again', async () => {
    const { id } = await app.jobs.enqueue('test.admin_flaky', { n: 1 });
    await app.jobs.drain({ names: ['test.admin_flaky'] });

    const dead = Page(Job).parse((await get('/api/v1/admin/jobs?state=dead&name=test.admin_flaky')).json());
    expect(dead.data.map((j) => j.id)).toEqual([id]);
    expect(dead.data[0]).toMatchObject({
      queue: 'default',
      attempts: 1,
      maxAttempts: 1,
      lastError: 'upstream refused 1',
    });
    const detail = JobDetail.parse((await get(`/api/v1/admin/jobs/${id}`)).json());
    expect(detail).toMatchObject({ id, state: 'dead', payload: { n: 1 } });

    // The queue's figures: the run, the failure and the dead job.
    const metrics = (await get('/metrics')).body;
    expect(metrics).toMatch(/job_failures_total\{name="test.admin_flaky",outcome="dead"\} 1/);
    expect(metrics).toMatch(/job_run_duration_seconds_count\{name="test.admin_flaky",outcome="dead"\} 1/);
    expect(metrics).toMatch(/jobs_queue_depth\{queue="default",state="dead"\} 1/);

    fail = false;
    const retried = await post(`/api/v1/admin/jobs/${id}/retry`);
    expect(retried.statusCode).toBe(200);
    expect(Job.parse(retried.json())).toMatchObject({ state: 'queued', attempts: 0, finishedAt: null });
    expect(await app.jobs.drain({ names: ['test.admin_flaky'] })).toBe(1);
    expect(ran).toEqual([1]);
    expect(Job.parse((await get(`/api/v1/admin/jobs/${id}`)).json())).toMatchObject({
      state: 'succeeded',
      attempts: 1,
    });

    // Retrying a job that succeeded is refused and changes nothing.
    expectProblem(await post(`/api/v1/admin/jobs/${id}/retry`), 409, 'JOB_NOT_RETRYABLE');
    expect(Job.parse((await get(`/api/v1/admin/jobs/${id}`)).json()).state).toBe('succeeded');
  });

  it('cancels a queued job, which then never runs; a cancelled job cannot be cancelled again', async () => {
    const { id } = await app.jobs.enqueue('test.admin_flaky', { n: 2 }, { delaySeconds: 60 });
    const cancelled = await post(`/api/v1/admin/jobs/${id}/cancel`);
    expect(cancelled.statusCode).toBe(200);
    expect(Job.parse(cancelled.json()).state).toBe('cancelled');
    expectProblem(await post(`/api/v1/admin/jobs/${id}/cancel`), 409, 'JOB_NOT_CANCELLABLE');
    const row = await app.database.db
      .selectFrom('jobs')
      .selectAll()
      .where('id', '=', id)
      .executeTakeFirstOrThrow();
    expect(row.state).toBe('cancelled');
    await app.jobs.drain({ names: ['test.admin_flaky'] });
    expect(ran).not.toContain(2);
  });

  it('records each hand operation on the installation chain, with the operator as actor', async () => {
    const events = (await get('/api/v1/admin/audit?limit=100')).json<{
      data: { action: string; target: unknown }[];
    }>().data;
    const actions = events.map((e) => e.action);
    expect(actions).toContain('job.retried');
    expect(actions).toContain('job.cancelled');
    // The refused ones (409) rolled back with their events.
    expect(actions.filter((a) => a === 'job.retried')).toHaveLength(1);
    expect(actions.filter((a) => a === 'job.cancelled')).toHaveLength(1);
  });

  it('answers only operators, and refuses bad ids, filters and unknown jobs', async () => {
    expectProblem(await get('/api/v1/admin/jobs', member), 403, 'FORBIDDEN');
    expectProblem(await post(`/api/v1/admin/jobs/${crypto.randomUUID()}/retry`, member), 403, 'FORBIDDEN');
    expect((await app.inject({ method: 'GET', url: '/api/v1/admin/jobs' })).statusCode).toBe(401);
    expectProblem(await get('/api/v1/admin/jobs?state=exploded'), 400, 'VALIDATION_FAILED');
    expectProblem(await get('/api/v1/admin/jobs/not-an-id'), 400, 'VALIDATION_FAILED');
    expectProblem(await get(`/api/v1/admin/jobs/${crypto.randomUUID()}`), 404, 'JOB_NOT_FOUND');
    expectProblem(await post(`/api/v1/admin/jobs/${crypto.randomUUID()}/cancel`), 404, 'JOB_NOT_FOUND');
  });
});
