import type { AddressInfo } from 'node:net';
import type { FastifyBaseLogger } from 'fastify';
import { pino } from 'pino';
import { SMTPServer } from 'smtp-server';

/**
 * Test helpers for the mail module (and for modules that send mail): a real pino logger that records its lines,
 * and a real SMTP server in this process. Never imported by production code.
 */

/** One parsed pino line. */
export type LogLine = Record<string, unknown> & { level: number; msg?: string };

/** Pino's numeric levels, for asserting on `LogLine.level`. */
export const LOG_LEVEL = { debug: 20, info: 30, warn: 40, error: 50 } as const;

/** A real pino logger at debug level whose lines are parsed into `lines` as they are written. */
export function captureLog(): { log: FastifyBaseLogger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const log = pino(
    { level: 'debug' },
    {
      write(line: string) {
        lines.push(JSON.parse(line) as LogLine);
      },
    },
  );
  return { log, lines };
}

/** A message as the SMTP server received it. */
export interface ReceivedMail {
  /** The envelope sender (`MAIL FROM`). */
  mailFrom: string | undefined;
  /** The envelope recipients (`RCPT TO`). */
  rcptTo: string[];
  /** The message as transmitted: headers and MIME body. */
  raw: string;
}

export interface TestSmtpServer {
  /** `smtp://127.0.0.1:<port>`. */
  url: string;
  received: ReceivedMail[];
  close(): Promise<void>;
}

export interface TestSmtpServerOptions {
  /** Answer every `RCPT TO` with 550, as a server refusing the recipient does. */
  refuseRecipients?: boolean;
  /** Called with each message before the server answers; the server answers when it resolves. */
  beforeAccept?: () => Promise<void>;
}

/**
 * Starts an SMTP server (the `smtp-server` package) on 127.0.0.1 with a random port: plain text, no STARTTLS,
 * authentication optional. It records every accepted message.
 */
export async function startSmtpServer(options: TestSmtpServerOptions = {}): Promise<TestSmtpServer> {
  const received: ReceivedMail[] = [];
  const server = new SMTPServer({
    secure: false,
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    // A test that leaves a delivery hanging must not hold the run for the default 30 s.
    closeTimeout: 500,
    onRcptTo(_address, _session, callback) {
      if (options.refuseRecipients) {
        callback(Object.assign(new Error('mailbox unavailable'), { responseCode: 550 }));
        return;
      }
      callback();
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => {
        const mailFrom = session.envelope.mailFrom;
        received.push({
          mailFrom: mailFrom ? mailFrom.address : undefined,
          rcptTo: session.envelope.rcptTo.map((a) => a.address),
          raw: Buffer.concat(chunks).toString('utf8'),
        });
        (options.beforeAccept?.() ?? Promise.resolve()).then(
          () => callback(),
          (err: Error) => callback(err),
        );
      });
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.server.address() as AddressInfo;
  return {
    url: `smtp://127.0.0.1:${port}`,
    received,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
