import { z } from 'zod';
import { decryptSecret, deriveKey, encryptSecret, SecretDecryptionError } from '../../core/crypto.ts';
import { type JobQueue, PermanentJobError } from '../jobs/index.ts';
import type { Mailer, MailMessage } from './mailer.ts';

/** The job that sends one mail. */
export const MAIL_JOB = 'mail.send';

const Message = z.strictObject({
  to: z.string(),
  subject: z.string(),
  text: z.string(),
  html: z.string(),
  actionUrl: z.string().optional(),
});

/**
 * Mail through the durable job queue: `send` stores the message as a `mail.send` job (in the `mail` queue, so
 * a burst of webhook deliveries never delays a password reset) and resolves once it is stored; the job hands it
 * to `transport`, retrying with backoff while the mail server is away — a message survives a restart or an SMTP
 * outage instead of being lost with the process.
 *
 * The message is sealed in the job's payload (AES-GCM under a key derived from `ENCRYPTION_KEY`): its links
 * carry one-time tokens, and the jobs table, kept 14 days, must not hold them readable. The job's id becomes the
 * message's `id`, so a retry after a crash that happened once the mail was handed over is recognisable as the
 * same message (the SMTP Message-ID; the outbox stores it once).
 */
export function queuedMailer(jobs: JobQueue, transport: Mailer, encryptionKey: Buffer): Mailer {
  const key = deriveKey(encryptionKey, 'mail-queue');
  jobs.define(MAIL_JOB, {
    queue: 'mail',
    payload: z.strictObject({ sealed: z.string() }),
    maxAttempts: 8,
    backoffSeconds: 30,
    maxBackoffSeconds: 3600,
    handler: async ({ sealed }, context) => {
      let message: MailMessage;
      try {
        message = Message.parse(JSON.parse(decryptSecret(key, sealed, MAIL_JOB)));
      } catch (error) {
        // Sealed under another ENCRYPTION_KEY, or not by Plinth: no retry can open it.
        if (error instanceof SecretDecryptionError)
          throw new PermanentJobError('the mail cannot be unsealed');
        throw error;
      }
      await transport.send({ ...message, id: context.idempotencyKey });
    },
  });
  return {
    async send(message) {
      const { id: _id, ...content } = message;
      await jobs.enqueue(MAIL_JOB, { sealed: encryptSecret(key, JSON.stringify(content), MAIL_JOB) });
    },
    // The queue outlives this mailer's callers; the transport closes on its own.
    async close() {},
  };
}
