import { randomBytes } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import Fastify from 'fastify';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Clock } from '../../core/clock.ts';
import { type DatabaseHandle, openDatabase } from '../../db/database.ts';
import { migrateToLatest } from '../../db/migrate.ts';
import { testDialects } from '../../test/dialects.ts';
import { createTestDatabase, testConfig } from '../../test/harness.ts';
import { createMailer, type Mailer, type MailMessage, mailTemplates, sendInBackground } from './index.ts';
import { captureLog, LOG_LEVEL, startSmtpServer } from './testing.ts';

const clock: Clock = { now: () => new Date('2026-11-22T01:23:45.678Z') };
const URL_WITH_TOKEN = 'https://plinth.test/verify-email?token=tok_SECRET_789';

function message(): MailMessage {
  return { to: 'ada@example.test', ...mailTemplates.verifyEmail({ name: 'Ada', url: URL_WITH_TOKEN }) };
}

/** Waits for the background work `setImmediate` started (and the promise callbacks after it) to run. */
function afterBackgroundWork(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 20));
}

describe.each(testDialects)('createMailer on %s', (dialect) => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function setUp(env: Record<string, string> = {}): Promise<{
    database: DatabaseHandle;
    config: ReturnType<typeof testConfig>;
  }> {
    const testDb = await createTestDatabase(dialect);
    cleanups.push(() => testDb.drop());
    const config = testConfig(testDb, env);
    const database = openDatabase(config.database, { log: captureLog().log });
    cleanups.push(() => database.close());
    await migrateToLatest(database.db, database.dialect);
    return { database, config };
  }

  function track(mailer: Mailer): Mailer {
    cleanups.push(() => mailer.close());
    return mailer;
  }

  it('uses the outbox when SMTP_URL is unset, and logs the action link in development only', async () => {
    const { database, config } = await setUp({ NODE_ENV: 'development' });
    const { log, lines } = captureLog();

    await track(createMailer(config, database.db, clock, log)).send(message());

    expect(await database.db.selectFrom('mail_outbox').select('recipient').execute()).toEqual([
      { recipient: 'ada@example.test' },
    ]);
    expect(lines).toContainEqual(
      expect.objectContaining({ msg: 'mail stored in outbox', level: LOG_LEVEL.info, link: URL_WITH_TOKEN }),
    );

    // A test run's logs are collected like production's: no link, so no token, there.
    const quiet = await setUp();
    const test = captureLog();
    await track(createMailer(quiet.config, quiet.database.db, clock, test.log)).send(message());
    expect(test.lines.filter((l) => l.msg === 'mail stored in outbox')).toHaveLength(1);
    expect(JSON.stringify(test.lines)).not.toContain('tok_SECRET_789');
  });

  it('in production without SMTP_URL, warns that mail is not delivered and never logs a link', async () => {
    const { database, config } = await setUp({
      NODE_ENV: 'production',
      ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    });
    const { log, lines } = captureLog();

    await track(createMailer(config, database.db, clock, log)).send(message());

    expect(lines).toContainEqual(
      expect.objectContaining({ level: LOG_LEVEL.warn, msg: expect.stringContaining('SMTP_URL') }),
    );
    expect(lines.filter((l) => l.msg === 'mail stored in outbox')).toHaveLength(1);
    expect(JSON.stringify(lines)).not.toContain('tok_SECRET_789');
  });

  it('delivers through SMTP when SMTP_URL is set, and stores nothing in the outbox', async () => {
    const smtp = await startSmtpServer();
    cleanups.push(() => smtp.close());
    const { database, config } = await setUp({
      SMTP_URL: smtp.url,
      MAIL_FROM: 'Plinth <no-reply@example.test>',
    });

    await track(createMailer(config, database.db, clock, captureLog().log)).send(message());

    expect(smtp.received.map((m) => m.rcptTo)).toEqual([['ada@example.test']]);
    expect(smtp.received[0]?.mailFrom).toBe('no-reply@example.test');
    expect(await database.db.selectFrom('mail_outbox').select('id').execute()).toEqual([]);
  });
});

describe('sendInBackground', () => {
  it('returns before the send starts, let alone completes', async () => {
    let finish: () => void = () => {};
    const send = vi.fn(() => new Promise<void>((resolve) => (finish = resolve)));
    const mailer: Mailer = { send, close: async () => {} };

    expect(sendInBackground(mailer, message(), captureLog().log)).toBeUndefined();
    expect(send).not.toHaveBeenCalled();

    await afterBackgroundWork();
    expect(send).toHaveBeenCalledWith(message());
    finish();
  });

  it('lets a request handler reply without waiting, and starts the send only after the reply is written', async () => {
    // A mail server that never answers: the response must not notice.
    let replyWrittenWhenSendStarted: boolean | undefined;
    const app = Fastify();
    const mailer: Mailer = {
      send: () => {
        replyWrittenWhenSendStarted = response?.writableEnded;
        return new Promise<void>(() => {});
      },
      close: async () => {},
    };
    let response: ServerResponse | undefined;
    app.post('/forgot-password', async (request, reply) => {
      response = reply.raw;
      sendInBackground(mailer, message(), request.log);
      return { accepted: true };
    });
    try {
      const res = await app.inject({ method: 'POST', url: '/forgot-password' });

      expect(res.statusCode).toBe(200);
      expect(res.json()).toEqual({ accepted: true });
      await vi.waitFor(() => expect(replyWrittenWhenSendStarted).toBeDefined());
      expect(replyWrittenWhenSendStarted).toBe(true);
    } finally {
      await app.close();
    }
  });

  it('logs a failed send at error with recipient and subject, never the body or link, and rejects nothing', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const { log, lines } = captureLog();
      const failing: Mailer = {
        send: async () => {
          throw Object.assign(new Error('connection refused'), { code: 'ECONNECTION' });
        },
        close: async () => {},
      };
      const msg = message();

      expect(() => sendInBackground(failing, msg, log)).not.toThrow();
      await vi.waitFor(() => expect(lines.filter((l) => l.level === LOG_LEVEL.error)).toHaveLength(1));
      await afterBackgroundWork();

      const [line] = lines.filter((l) => l.level === LOG_LEVEL.error);
      expect(line).toMatchObject({
        msg: 'mail could not be sent',
        to: 'ada@example.test',
        subject: msg.subject,
        err: expect.objectContaining({ message: 'connection refused', code: 'ECONNECTION' }),
      });
      const logged = JSON.stringify(lines);
      expect(logged).not.toContain('tok_SECRET_789');
      expect(logged).not.toContain(JSON.stringify(msg.text).slice(1, -1));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('also survives a mailer that throws instead of rejecting', async () => {
    const { log, lines } = captureLog();
    const throwing: Mailer = {
      send: () => {
        throw new Error('not configured');
      },
      close: async () => {},
    };

    expect(() => sendInBackground(throwing, message(), log)).not.toThrow();
    await vi.waitFor(() =>
      expect(lines).toContainEqual(
        expect.objectContaining({
          level: LOG_LEVEL.error,
          err: expect.objectContaining({ message: 'not configured' }),
        }),
      ),
    );
  });
});
