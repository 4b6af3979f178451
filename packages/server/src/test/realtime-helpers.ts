import type { AddressInfo } from 'node:net';
import type { RealtimeServerMessage } from '@plinth/shared';
import WebSocket from 'ws';
import type { PlinthApp } from '../app.ts';

/**
 * Helpers for tests of the realtime module: a listening app, and a WebSocket client (the `ws` package, as a
 * program would connect) that queues what it receives so a test can wait for the next message of a kind.
 * Shared by several test files and the benchmark: keep the signatures stable.
 */

/** Starts `app` listening on a free port of 127.0.0.1 and returns its `http://` base URL. */
export async function listen(app: PlinthApp): Promise<string> {
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as AddressInfo;
  return `http://127.0.0.1:${port}`;
}

/** The WebSocket URL of the realtime route of a server at `base`, with an optional query string. */
export function realtimeUrl(base: string, query = ''): string {
  return `${base.replace(/^http/, 'ws')}/api/v1/realtime${query}`;
}

export interface ConnectOptions {
  headers?: Record<string, string>;
  /** Sent as `Origin`, as a browser would. */
  origin?: string;
}

export interface RealtimeClient {
  readonly socket: WebSocket;
  /** Resolves with the close code and reason once the connection is closed (by either side). */
  readonly closed: Promise<{ code: number; reason: string }>;
  /** The next message (received or to come) that `match` accepts, removed from the queue; rejects after `timeoutMs`. */
  next(
    match?: (message: RealtimeServerMessage) => boolean,
    timeoutMs?: number,
  ): Promise<RealtimeServerMessage>;
  /** Messages received and not taken by `next`. */
  pending(): RealtimeServerMessage[];
  send(message: unknown): void;
  /** Subscribes and waits for the answer (`subscribed` or `error`) about that channel. */
  subscribe(channel: string): Promise<RealtimeServerMessage>;
  close(): Promise<void>;
}

/** An upgrade the server refused: its HTTP status and problem document. */
export class UpgradeRefused extends Error {
  readonly status: number;
  readonly body: { code?: string } & Record<string, unknown>;
  constructor(status: number, body: { code?: string } & Record<string, unknown>) {
    super(`upgrade refused with ${status}`);
    this.status = status;
    this.body = body;
  }
}

/**
 * Opens a realtime WebSocket; resolves once it is open and its `welcome` message has arrived (kept in the queue),
 * rejects with `UpgradeRefused` when the server answers the handshake with an HTTP error instead.
 */
export function connectRealtime(url: string, options: ConnectOptions = {}): Promise<RealtimeClient> {
  const socket = new WebSocket(url, {
    headers: options.headers ?? {},
    ...(options.origin === undefined ? {} : { origin: options.origin }),
  });
  const queue: RealtimeServerMessage[] = [];
  const waiters: {
    match: (m: RealtimeServerMessage) => boolean;
    resolve: (m: RealtimeServerMessage) => void;
  }[] = [];
  socket.on('message', (data) => {
    const message = JSON.parse(String(data)) as RealtimeServerMessage;
    const waiter = waiters.findIndex((w) => w.match(message));
    if (waiter >= 0) {
      const [taken] = waiters.splice(waiter, 1);
      taken?.resolve(message);
    } else {
      queue.push(message);
    }
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
  });
  const next: RealtimeClient['next'] = (match = () => true, timeoutMs = 3000) => {
    const at = queue.findIndex(match);
    if (at >= 0) return Promise.resolve(queue.splice(at, 1)[0] as RealtimeServerMessage);
    return new Promise((resolve, reject) => {
      const waiter = {
        match,
        resolve: (m: RealtimeServerMessage) => {
          clearTimeout(timer);
          resolve(m);
        },
      };
      const timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(waiter), 1);
        reject(
          new Error(`no matching realtime message within ${timeoutMs} ms; queued: ${JSON.stringify(queue)}`),
        );
      }, timeoutMs);
      waiters.push(waiter);
    });
  };
  const client: RealtimeClient = {
    socket,
    closed,
    next,
    pending: () => [...queue],
    send: (message) => socket.send(typeof message === 'string' ? message : JSON.stringify(message)),
    subscribe(channel) {
      client.send({ type: 'subscribe', channel });
      return next((m) => (m.type === 'subscribed' || m.type === 'error') && m.channel === channel);
    },
    async close() {
      if (socket.readyState === WebSocket.CLOSED) return;
      socket.close();
      await closed;
    },
  };
  return new Promise((resolve, reject) => {
    socket.once('unexpected-response', (_request, response) => {
      let body = '';
      response.on('data', (chunk: Buffer) => {
        body += chunk.toString();
      });
      response.on('end', () => {
        let parsed: Record<string, unknown> = {};
        try {
          parsed = JSON.parse(body) as Record<string, unknown>;
        } catch {
          // Not a problem document; the status says enough.
        }
        reject(new UpgradeRefused(response.statusCode ?? 0, parsed));
        socket.terminate();
      });
    });
    socket.once('error', reject);
    socket.once('open', () => {
      // A connection the server closes at once (over a limit) has no welcome: the test reads `closed`.
      const welcomed = next((m) => m.type === 'welcome').then((welcome) => {
        queue.unshift(welcome);
      });
      Promise.race([welcomed, closed]).then(() => resolve(client), reject);
    });
  });
}

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** An SSE stream as a client reads it: each event's name and its JSON data. */
export interface SseStream {
  readonly status: number;
  /** The problem document of a refused request (status other than 200). */
  readonly problem: ({ code?: string } & Record<string, unknown>) | undefined;
  readonly headers: Record<string, string | string[] | undefined>;
  next(match?: (event: SseEvent) => boolean, timeoutMs?: number): Promise<SseEvent>;
  pending(): SseEvent[];
  /** Resolves when the server ends the stream. */
  readonly ended: Promise<void>;
  close(): void;
}

export interface SseEvent {
  event: string;
  data: RealtimeServerMessage;
}

/** The SSE URL of a server at `base` following `channels`, with extra query parameters. */
export function sseUrl(base: string, channels: string[], extra: Record<string, string> = {}): string {
  const query = new URLSearchParams();
  for (const channel of channels) query.append('channel', channel);
  for (const [name, value] of Object.entries(extra)) query.append(name, value);
  return `${base}/api/v1/realtime/sse?${query}`;
}

/** Opens an SSE stream with Node's HTTP client (as EventSource would, but able to send headers). */
export async function openSse(url: string, headers: Record<string, string> = {}): Promise<SseStream> {
  const { request } = await import('node:http');
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { accept: 'text/event-stream', ...headers } }, (res) => {
      const status = res.statusCode ?? 0;
      if (status !== 200) {
        let body = '';
        res.on('data', (chunk: Buffer) => {
          body += chunk.toString();
        });
        res.on('end', () => {
          const problem = JSON.parse(body) as { code?: string } & Record<string, unknown>;
          resolve({
            status,
            problem,
            headers: res.headers,
            next: () => Promise.reject(new Error('no stream')),
            pending: () => [],
            ended: Promise.resolve(),
            close: () => {},
          });
        });
        return;
      }
      const queue: SseEvent[] = [];
      const waiters: { match: (e: SseEvent) => boolean; resolve: (e: SseEvent) => void }[] = [];
      let buffer = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const fields = Object.fromEntries(
            block
              .split('\n')
              .filter((line) => line !== '' && !line.startsWith(':'))
              .map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 2)]),
          ) as Record<string, string>;
          if (fields.event === undefined || fields.data === undefined) continue;
          const event = { event: fields.event, data: JSON.parse(fields.data) as RealtimeServerMessage };
          const waiter = waiters.findIndex((w) => w.match(event));
          if (waiter >= 0) waiters.splice(waiter, 1)[0]?.resolve(event);
          else queue.push(event);
        }
      });
      const ended = new Promise<void>((done) => res.on('close', () => done()));
      resolve({
        status,
        problem: undefined,
        headers: res.headers,
        pending: () => [...queue],
        ended,
        close: () => req.destroy(),
        next(match = () => true, timeoutMs = 3000) {
          const at = queue.findIndex(match);
          if (at >= 0) return Promise.resolve(queue.splice(at, 1)[0] as SseEvent);
          return new Promise((ok, fail) => {
            const waiter = {
              match,
              resolve: (e: SseEvent) => {
                clearTimeout(timer);
                ok(e);
              },
            };
            const timer = setTimeout(() => {
              waiters.splice(waiters.indexOf(waiter), 1);
              fail(
                new Error(`no matching SSE event within ${timeoutMs} ms; queued: ${JSON.stringify(queue)}`),
              );
            }, timeoutMs);
            waiters.push(waiter);
          });
        },
      });
    });
    req.on('error', reject);
    req.end();
  });
}
