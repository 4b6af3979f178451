/** One mail to one person, already rendered (see templates.ts). */
export interface MailMessage {
  /** The recipient's address; exactly one per message, so no one sees another recipient. */
  to: string;
  /** A fixed sentence chosen by the template; never contains user input (it becomes a mail header). */
  subject: string;
  /** The plain-text part. */
  text: string;
  /** The HTML part, with every user-controlled value escaped. */
  html: string;
  /**
   * The link the mail asks the reader to follow, if any (a verification or reset URL, token included). Only
   * the development outbox reads it, to log it outside production; no transport may log it otherwise.
   */
  actionUrl?: string;
  /**
   * The message's stable id (a UUID), when it has one: the mail job's, so that a send retried after a crash is
   * recognisable as the same message — SMTP sends it as the Message-ID, the outbox stores the message once.
   */
  id?: string;
}

/**
 * Sends mail. Two implementations, chosen once by `createMailer`: SMTP (`SMTP_URL` set) and the development
 * outbox (a database table plus a log line).
 */
export interface Mailer {
  /**
   * Hands the message to the transport. Resolves once the transport has accepted it (the SMTP server said 250,
   * or the outbox row is written); rejects on any failure, and the caller decides whether to retry. Request
   * handlers use `sendInBackground` instead, so that mail never changes a response.
   */
  send(message: MailMessage): Promise<void>;
  /**
   * Stops accepting messages and waits for the ones already being sent (each bounded by its timeouts). Call it
   * before the database closes. `send` rejects afterwards.
   */
  close(): Promise<void>;
}
