import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Clock } from '../../core/clock.ts';
import { isId } from '../../core/ids.ts';
import { type DatabaseHandle, openDatabase } from '../../db/database.ts';
import { migrateToLatest } from '../../db/migrate.ts';
import { testDialects } from '../../test/dialects.ts';
import { createTestDatabase, type TestDatabase, testConfig } from '../../test/harness.ts';
import type { MailMessage } from './mailer.ts';
import { outboxMailer } from './outbox.transport.ts';
import { resetPassword } from './templates.ts';
import { captureLog, LOG_LEVEL } from './testing.ts';

const NOW = '2026-11-22T01:23:45.678Z';
const clock: Clock = { now: () => new Date(NOW) };
const RESET_URL = 'https://plinth.test/reset-password?token=tok_SECRET_456';

function message(): MailMessage {
  return {
    to: 'grace@example.test',
    ...resetPassword({ name: 'Grace <Hopper>', url: RESET_URL, expiresInMinutes: 30 }),
  };
}

describe.each(testDialects)('outboxMailer on %s', (dialect) => {
  let testDb: TestDatabase;
  let database: DatabaseHandle;

  beforeEach(async () => {
    testDb = await createTestDatabase(dialect);
    database = openDatabase(testConfig(testDb).database, { log: captureLog().log });
    await migrateToLatest(database.db, database.dialect);
  });

  afterEach(async () => {
    await database.close();
    await testDb.drop();
  });

  it('stores exactly one row with the rendered subject, text and HTML, stamped by the clock', async () => {
    const msg = message();

    await outboxMailer(database.db, clock, captureLog().log, { logLinks: true }).send(msg);

    const rows = await database.db.selectFrom('mail_outbox').selectAll().execute();
    expect(rows).toHaveLength(1);
    expect(rows[0]).toEqual({
      id: expect.any(String),
      recipient: 'grace@example.test',
      subject: msg.subject,
      text_body: msg.text,
      html_body: msg.html,
      created_at: NOW,
    });
    expect(isId(rows[0]?.id ?? '')).toBe(true);
  });

  it('logs recipient, subject and the action link at info when links are logged (development)', async () => {
    const { log, lines } = captureLog();
    const msg = message();

    await outboxMailer(database.db, clock, log, { logLinks: true }).send(msg);

    const stored = lines.filter((l) => l.msg === 'mail stored in outbox');
    expect(stored).toEqual([
      expect.objectContaining({
        level: LOG_LEVEL.info,
        to: 'grace@example.test',
        subject: msg.subject,
        link: RESET_URL,
      }),
    ]);
  });

  it('never logs the link, or the token in it, when links are not logged (production)', async () => {
    const { log, lines } = captureLog();
    const msg = message();

    await outboxMailer(database.db, clock, log, { logLinks: false }).send(msg);

    const stored = lines.filter((l) => l.msg === 'mail stored in outbox');
    expect(stored).toHaveLength(1);
    expect(stored[0]).toMatchObject({
      level: LOG_LEVEL.info,
      to: 'grace@example.test',
      subject: msg.subject,
    });
    expect(stored[0]).not.toHaveProperty('link');
    expect(JSON.stringify(lines)).not.toContain('tok_SECRET_456');
  });

  it('logs no link for a mail that has none', async () => {
    const { log, lines } = captureLog();

    await outboxMailer(database.db, clock, log, { logLinks: true }).send({
      to: 'grace@example.test',
      subject: 'Notice',
      text: 'text',
      html: '<p>html</p>',
    });

    const stored = lines.filter((l) => l.msg === 'mail stored in outbox');
    expect(stored).toHaveLength(1);
    expect(stored[0]).not.toHaveProperty('link');
  });

  it('waits for a message being stored on close, and refuses messages after it', async () => {
    const { log, lines } = captureLog();
    const mailer = outboxMailer(database.db, clock, log, { logLinks: false });

    const sending = mailer.send(message());
    await mailer.close();
    // The line is written once the row is: close() resolved only after the insert finished, so the database
    // can be closed right after it without losing the message.
    expect(lines.filter((l) => l.msg === 'mail stored in outbox')).toHaveLength(1);
    expect(await database.db.selectFrom('mail_outbox').select('id').execute()).toHaveLength(1);
    await expect(sending).resolves.toBeUndefined();
    await expect(mailer.send(message())).rejects.toThrow('closed');
    expect(await database.db.selectFrom('mail_outbox').select('id').execute()).toHaveLength(1);
  });
});
