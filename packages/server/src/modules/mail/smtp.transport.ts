import type { FastifyBaseLogger } from 'fastify';
import { createTransport } from 'nodemailer';
import type { Mailer, MailMessage } from './mailer.ts';

/** Limits of the SMTP transport; the defaults suit a real mail server, tests shorten them. */
export interface SmtpMailerOptions {
  /**
   * How long, in milliseconds, each step may take: opening the connection, waiting for the server's greeting,
   * and any silence from the server afterwards. Default 10 000.
   */
  timeoutMs?: number;
  /**
   * The deadline for one whole send, in milliseconds, waiting in the pool's queue included. It also catches a
   * server that trickles its replies, which never trips the inactivity timeout. Default 30 000.
   */
  sendTimeoutMs?: number;
  /** How many connections the pool opens at most. Default 3. */
  maxConnections?: number;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_SEND_TIMEOUT_MS = 30_000;

/**
 * A mailer that delivers through an SMTP server with nodemailer's connection pool.
 *
 * @param url `smtp://user:pass@host:587` (STARTTLS when the server offers it) or `smtps://…` (TLS from the
 *   start); the credentials in it are never logged.
 * @param from The `From` header of every message, e.g. `Plinth <no-reply@example.com>`.
 * @param log Receives one line per delivered message (recipient, subject, message id), never the body or the
 *   action URL, which carry tokens.
 */
export function smtpMailer(
  url: string,
  from: string,
  log: FastifyBaseLogger,
  options: SmtpMailerOptions = {},
): Mailer {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const sendTimeoutMs = options.sendTimeoutMs ?? DEFAULT_SEND_TIMEOUT_MS;
  const transporter = createTransport(
    {
      url,
      pool: true,
      maxConnections: options.maxConnections ?? 3,
      // A connection that drops mid-send is retried by the pool; keep that short so the deadline still holds.
      maxRequeues: 1,
      connectionTimeout: timeoutMs,
      greetingTimeout: timeoutMs,
      socketTimeout: timeoutMs,
      dnsTimeout: timeoutMs,
      // nodemailer's own logger would print SMTP traffic, message data included; our log lines are written below.
      logger: false,
      debug: false,
      // Mail content is always inline strings: refuse anything that would make nodemailer read a file or a URL.
      disableFileAccess: true,
      disableUrlAccess: true,
    },
    { from },
  );

  const inFlight = new Set<Promise<unknown>>();

  return {
    async send(message: MailMessage) {
      const sending = transporter.sendMail({
        to: message.to,
        subject: message.subject,
        text: message.text,
        html: message.html,
        // A stable Message-ID lets receiving servers and mail clients recognise a retried send as the same mail.
        ...(message.id ? { messageId: `<${message.id}@plinth>` } : {}),
        signal: AbortSignal.timeout(sendTimeoutMs),
      });
      inFlight.add(sending);
      try {
        const info = await sending;
        log.info({ to: message.to, subject: message.subject, messageId: info.messageId }, 'mail sent');
      } finally {
        inFlight.delete(sending);
      }
    },
    async close() {
      // Idle connections close now; one in the middle of a delivery finishes it first (bounded by the deadline).
      transporter.close();
      await Promise.allSettled([...inFlight]);
    },
  };
}
