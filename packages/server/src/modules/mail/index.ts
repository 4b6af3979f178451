import type { FastifyBaseLogger } from 'fastify';
import type { Kysely } from 'kysely';
import type { Config } from '../../config.ts';
import type { Clock } from '../../core/clock.ts';
import { purgeAfter, type RetentionPolicy } from '../../core/retention.ts';
import type { Database } from '../../db/schema.ts';
import type { Mailer, MailMessage } from './mailer.ts';
import { outboxMailer } from './outbox.transport.ts';
import { smtpMailer } from './smtp.transport.ts';

export type { Mailer, MailMessage } from './mailer.ts';
export { type OutboxMailerOptions, outboxMailer } from './outbox.transport.ts';
export { MAIL_JOB, queuedMailer } from './queued.ts';
export { type SmtpMailerOptions, smtpMailer } from './smtp.transport.ts';
export type { MailContent } from './templates.ts';
/** The rendered mails (`mailTemplates.resetPassword({ … })`); a namespace, so their names never clash. */
export * as mailTemplates from './templates.ts';

/**
 * The mailer for this configuration: SMTP when `SMTP_URL` is set, otherwise the development outbox (rows in
 * `mail_outbox` plus a log line, whose action links are logged only in development).
 */
export function createMailer(
  config: Config,
  db: Kysely<Database>,
  clock: Clock,
  log: FastifyBaseLogger,
): Mailer {
  if (config.mail.smtpUrl) return smtpMailer(config.mail.smtpUrl, config.mail.from, log);
  if (config.env === 'production') {
    log.warn('SMTP_URL is not set: mail is stored in the mail_outbox table and not delivered to anyone');
  }
  // Links carry one-time tokens: only a developer's own console may show them, never a test run's or
  // production's logs (which are collected and kept).
  return outboxMailer(db, clock, log, { logLinks: config.env === 'development' });
}

/**
 * Sends `message` without making the caller wait, for request handlers: neither the mail server's latency nor
 * its failure may change a response (a forgot-password reply must look and take the same whether or not the
 * account exists). The send starts after the current I/O callbacks, so after the handler's reply is written.
 * A failure is logged at error with the recipient and subject only; the body and action URL carry tokens.
 * Never throws and never leaves a rejected promise unhandled.
 */
export function sendInBackground(mailer: Mailer, message: MailMessage, log: FastifyBaseLogger): void {
  setImmediate(() => {
    // Promise.resolve().then also turns a synchronous throw from a non-async implementation into a rejection.
    Promise.resolve()
      .then(() => mailer.send(message))
      .catch((err: unknown) => {
        log.error({ err, to: message.to, subject: message.subject }, 'mail could not be sent');
      });
  });
}

/** Mails in the development outbox are kept this long (docs/operations.md lists every retention policy). */
export const mailOutboxRetention: RetentionPolicy = {
  name: 'mail_outbox',
  description: 'mails in the development outbox',
  days: 30,
  apply: purgeAfter({ table: 'mail_outbox', after: ['created_at'] }),
};
