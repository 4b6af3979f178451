import { createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { Mailer, MailMessage } from './mailer.ts';
import { smtpMailer } from './smtp.transport.ts';
import { verifyEmail } from './templates.ts';
import { captureLog, type LogLine, startSmtpServer, type TestSmtpServer } from './testing.ts';

const FROM = 'Plinth <no-reply@example.test>';
const URL_WITH_TOKEN = 'https://plinth.test/verify-email?token=tok_SECRET_123&next=%2F';

function message(to = 'ada@example.test'): MailMessage {
  return { to, ...verifyEmail({ name: 'Ada Lovelace', url: URL_WITH_TOKEN }) };
}

/** The headers of a MIME entity, names lower-cased, folded lines joined. */
function headersOf(entity: string): Map<string, string> {
  const head = entity.slice(0, entity.indexOf('\r\n\r\n')).replace(/\r\n[ \t]+/g, ' ');
  const headers = new Map<string, string>();
  for (const line of head.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  return headers;
}

function decodeBody(encoding: string | undefined, body: string): string {
  switch (encoding?.toLowerCase()) {
    case 'base64':
      return Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8');
    case 'quoted-printable': {
      const bytes = body
        .replace(/=\r\n/g, '')
        .replace(/=([0-9A-Fa-f]{2})/g, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
      return Buffer.from(bytes, 'latin1').toString('utf8');
    }
    default:
      return body;
  }
}

/** Just enough MIME to read a multipart/alternative message: its headers and its decoded parts by type. */
function parseMessage(raw: string): { headers: Map<string, string>; parts: Map<string, string> } {
  const headers = headersOf(raw);
  const boundary = /boundary="?([^";]+)"?/.exec(headers.get('content-type') ?? '')?.[1];
  const parts = new Map<string, string>();
  if (boundary) {
    for (const entity of raw.split(`--${boundary}`).slice(1)) {
      if (entity.startsWith('--')) break;
      const part = entity.replace(/^\r\n/, '');
      const partHeaders = headersOf(part);
      const type = (partHeaders.get('content-type') ?? '').split(';')[0]?.trim() ?? '';
      const body = part.slice(part.indexOf('\r\n\r\n') + 4).replace(/\r\n$/, '');
      parts.set(type, decodeBody(partHeaders.get('content-transfer-encoding'), body).replace(/\r\n/g, '\n'));
    }
  }
  return { headers, parts };
}

/** A TCP server that accepts connections and never says anything, like a hung mail server. */
async function startSilentServer(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('no TCP address');
  return {
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A port nothing listens on: bind one, then release it. */
async function closedPort(): Promise<number> {
  const silent = await startSilentServer();
  await silent.close();
  return silent.port;
}

function mentionsSecret(lines: LogLine[], msg: MailMessage): boolean {
  const all = JSON.stringify(lines);
  return all.includes('tok_SECRET_123') || all.includes(msg.text) || all.includes(msg.html);
}

describe('smtpMailer', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    // Mailers first: the SMTP server waits for their connections to go away before it closes.
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function server(options?: Parameters<typeof startSmtpServer>[0]): Promise<TestSmtpServer> {
    const started = await startSmtpServer(options);
    cleanups.push(() => started.close());
    return started;
  }

  function mailer(url: string, log = captureLog().log, options?: Parameters<typeof smtpMailer>[3]): Mailer {
    const created = smtpMailer(url, FROM, log, options);
    cleanups.push(() => created.close());
    return created;
  }

  it('delivers one message with the envelope recipient, From, Subject and both a text and an HTML part', async () => {
    const smtp = await server();
    const msg = message();

    await mailer(smtp.url).send(msg);

    expect(smtp.received).toHaveLength(1);
    const [mail] = smtp.received;
    expect(mail?.rcptTo).toEqual(['ada@example.test']);
    expect(mail?.mailFrom).toBe('no-reply@example.test');
    const { headers, parts } = parseMessage(mail?.raw ?? '');
    expect(headers.get('from')).toBe(FROM);
    expect(headers.get('to')).toBe('ada@example.test');
    expect(headers.get('subject')).toBe(msg.subject);
    expect(headers.get('content-type')).toMatch(/^multipart\/alternative;/);
    expect(parts.get('text/plain')).toBe(msg.text);
    expect(parts.get('text/html')).toBe(msg.html);
  });

  it('logs the delivery with recipient and subject but never the body or the action link', async () => {
    const smtp = await server();
    const { log, lines } = captureLog();
    const msg = message();

    await mailer(smtp.url, log).send(msg);

    expect(lines).toContainEqual(
      expect.objectContaining({ msg: 'mail sent', to: msg.to, subject: msg.subject, level: 30 }),
    );
    expect(mentionsSecret(lines, msg)).toBe(false);
  });

  it('rejects when the server refuses the recipient, and logs nothing about the message', async () => {
    const smtp = await server({ refuseRecipients: true });
    const { log, lines } = captureLog();
    const msg = message();

    await expect(mailer(smtp.url, log).send(msg)).rejects.toMatchObject({ code: 'EENVELOPE' });
    expect(smtp.received).toHaveLength(0);
    expect(lines.filter((l) => l.msg === 'mail sent')).toHaveLength(0);
    expect(mentionsSecret(lines, msg)).toBe(false);
  });

  it('rejects at once when nothing listens on the port', async () => {
    const port = await closedPort();
    const started = Date.now();

    await expect(mailer(`smtp://127.0.0.1:${port}`).send(message())).rejects.toThrow();
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('rejects within its timeout when the server accepts the connection but never says a word', async () => {
    const silent = await startSilentServer();
    cleanups.push(() => silent.close());
    const started = Date.now();

    await expect(
      mailer(`smtp://127.0.0.1:${silent.port}`, undefined, { timeoutMs: 200 }).send(message()),
    ).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    const elapsed = Date.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(150);
    expect(elapsed).toBeLessThan(2_000);
  });

  it('gives up at the send deadline when the server stalls after the message data', async () => {
    // The server answers every command but never acknowledges the message; only the overall deadline ends it.
    let release: () => void = () => {};
    const smtp = await server({ beforeAccept: () => new Promise<void>((resolve) => (release = resolve)) });
    cleanups.push(async () => release());
    const started = Date.now();

    await expect(
      mailer(smtp.url, undefined, { timeoutMs: 10_000, sendTimeoutMs: 300 }).send(message()),
    ).rejects.toMatchObject({ code: 'EABORT' });
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it('lets a delivery in progress finish on close, then refuses new messages', async () => {
    let release: () => void = () => {};
    const smtp = await server({ beforeAccept: () => new Promise<void>((resolve) => (release = resolve)) });
    const m = mailer(smtp.url);

    const sending = m.send(message());
    await expect.poll(() => smtp.received.length).toBe(1);
    let closed = false;
    const closing = m.close().then(() => (closed = true));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(closed).toBe(false);

    release();
    await expect(sending).resolves.toBeUndefined();
    await closing;
    await expect(m.send(message())).rejects.toThrow();
  });
});
