import type { FastifyBaseLogger } from 'fastify';
import type { Kysely } from 'kysely';
import { type Clock, timestamp } from '../../core/clock.ts';
import { newId } from '../../core/ids.ts';
import type { Database } from '../../db/schema.ts';
import type { Mailer, MailMessage } from './mailer.ts';

export interface OutboxMailerOptions {
  /**
   * Whether the log line carries the message's action link (a verification or reset URL, token included), so a
   * developer can follow it without a mail server. Must be false in production, where no token may reach a
   * log line (ASVS 16.2.5).
   */
  logLinks: boolean;
}

/**
 * The development mailer, used when `SMTP_URL` is unset: each message becomes a row of `mail_outbox` and one
 * info log line with its recipient, subject and (when `logLinks`) action link. Nothing leaves the machine.
 */
export function outboxMailer(
  db: Kysely<Database>,
  clock: Clock,
  log: FastifyBaseLogger,
  options: OutboxMailerOptions,
): Mailer {
  const inFlight = new Set<Promise<unknown>>();
  let closed = false;

  async function store(message: MailMessage): Promise<void> {
    await db
      .insertInto('mail_outbox')
      .values({
        id: message.id ?? newId(),
        recipient: message.to,
        subject: message.subject,
        text_body: message.text,
        html_body: message.html,
        created_at: timestamp(clock),
      })
      // A retried send of the same message (its id) stores nothing more.
      .onConflict((oc) => oc.column('id').doNothing())
      .execute();
    const link = options.logLinks ? message.actionUrl : undefined;
    log.info(
      link === undefined
        ? { to: message.to, subject: message.subject }
        : { to: message.to, subject: message.subject, link },
      'mail stored in outbox',
    );
  }

  return {
    async send(message) {
      // The database closes right after the mailer; a late send must fail here rather than on a closed pool.
      if (closed) throw new Error('the mail outbox is closed');
      const storing = store(message);
      inFlight.add(storing);
      try {
        await storing;
      } finally {
        inFlight.delete(storing);
      }
    },
    async close() {
      closed = true;
      await Promise.allSettled([...inFlight]);
    },
  };
}
