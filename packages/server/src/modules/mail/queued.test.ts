import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PlinthApp } from '../../app.ts';
import { createFakeClock, type FakeClock, MINUTE, PASSWORD } from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { buildTestApp } from '../../test/harness.ts';
import { MAIL_JOB } from './queued.ts';
import { startSmtpServer, type TestSmtpServer } from './testing.ts';

// Mail through the job queue, against a real SMTP server on 127.0.0.1: the message waits in the jobs table
// sealed (its link's token is not readable there), a refusing mail server means a retry later rather than a lost
// mail, and the delivered message carries the job's id as its Message-ID.

describe.each(testDialects)('mail through the job queue (%s)', (dialect) => {
  let app: PlinthApp;
  let smtp: TestSmtpServer;
  let clock: FakeClock;
  let refuse = true;

  beforeAll(async () => {
    smtp = await startSmtpServer({
      beforeAccept: async () => {
        if (refuse) throw Object.assign(new Error('try again later'), { responseCode: 451 });
      },
    });
    clock = createFakeClock();
    app = await buildTestApp(dialect, { clock, env: { SMTP_URL: smtp.url } });
  });
  afterAll(async () => {
    await app?.close();
    await smtp?.close();
  });

  const mailJobs = () =>
    app.database.db.selectFrom('jobs').selectAll().where('name', '=', MAIL_JOB).execute();

  it('keeps the message sealed in its job, retries while the server refuses, then delivers it once', async () => {
    const signup = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/signup',
      payload: { email: 'grace@example.com', password: PASSWORD, name: 'Grace Hopper' },
    });
    expect(signup.statusCode).toBe(201);
    // The job is stored just after the response.
    let jobs = await mailJobs();
    for (let i = 0; i < 100 && jobs.length === 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
      jobs = await mailJobs();
    }
    expect(jobs).toHaveLength(1);
    const [job] = jobs;
    if (!job) throw new Error('no mail job');
    expect(job.queue).toBe('mail');
    expect(job.payload).not.toContain('grace@example.com');
    expect(job.payload).not.toContain('token');

    await app.jobs.drain();
    const refused = await app.database.db
      .selectFrom('jobs')
      .selectAll()
      .where('id', '=', job.id)
      .executeTakeFirstOrThrow();
    expect(refused).toMatchObject({ state: 'queued', attempts: 1 });
    expect(refused.last_error).toMatch(/451|try again later/);
    expect(refused.payload).toBe(job.payload);

    refuse = false;
    clock.advance(MINUTE);
    await app.jobs.drain();
    expect(
      await app.database.db
        .selectFrom('jobs')
        .select('state')
        .where('id', '=', job.id)
        .executeTakeFirstOrThrow(),
    ).toEqual({ state: 'succeeded' });
    const delivered = smtp.received.at(-1);
    expect(delivered?.rcptTo).toEqual(['grace@example.com']);
    expect(delivered?.raw).toMatch(new RegExp(`^Message-ID: <${job.id}@plinth>`, 'im'));
    expect(delivered?.raw).toMatch(/token=/);
    // Two attempts reached the server: the refused one and the accepted one. Nothing more is due.
    expect(smtp.received).toHaveLength(2);
    clock.advance(60 * MINUTE);
    expect(await app.jobs.drain()).toBe(0);
  });
});
