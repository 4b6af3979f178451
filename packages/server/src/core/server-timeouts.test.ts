import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { PlinthApp } from '../app.ts';
import { ConfigError } from '../config.ts';
import { buildTestApp, configFromEnv } from '../test/harness.ts';

// Short timeouts keep the test fast; the production defaults are tested separately below.
const HEADERS_TIMEOUT_MS = 500;
const REQUEST_TIMEOUT_MS = 1000;
const KEEP_ALIVE_TIMEOUT_MS = 600;
/** How long a slow client keeps trying before it gives up by itself (then the server failed to cut it off). */
const GIVE_UP_MS = 5000;
/** Between two bytes of a slow client. */
const DRIP_INTERVAL_MS = 50;
/** Slow clients at once: enough to show they do not crowd out a normal one, few enough for a test machine. */
const SLOW_CLIENTS = 40;

const echoRoute: FastifyPluginAsyncZod = async (api) => {
  api.post('/echo', { schema: { body: z.object({ a: z.string() }) } }, async (request) => request.body);
};

interface SlowResult {
  /** Whether the server closed the connection (rather than the client giving up after `GIVE_UP_MS`). */
  closedByServer: boolean;
  /** From connecting until the connection closed. */
  elapsedMs: number;
  /** What the server sent before closing. */
  received: string;
}

/**
 * A client on its own connection that sends `opening`, then one byte of `drip` every `DRIP_INTERVAL_MS`, never
 * finishing — the slowloris pattern — until the server closes the connection or `GIVE_UP_MS` pass.
 */
function slowClient(port: number, opening: string, drip = 'a'): Promise<SlowResult> {
  return new Promise((resolve) => {
    const started = performance.now();
    let received = '';
    let gaveUp = false;
    let dripping: NodeJS.Timeout | undefined;
    // The drip starts once the opening is written: a socket still connecting is writable too, and on a busy
    // machine a drip queued before the opening would make the request invalid HTTP, refused at once with 400.
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(opening);
      dripping = setInterval(() => {
        if (socket.writable) socket.write(drip);
      }, DRIP_INTERVAL_MS);
    });
    const giveUp = setTimeout(() => {
      gaveUp = true;
      socket.destroy();
    }, GIVE_UP_MS);
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString();
    });
    // Writing to a connection the server has just closed fails with EPIPE or ECONNRESET; that is the point.
    socket.on('error', () => {});
    socket.on('close', () => {
      clearInterval(dripping);
      clearTimeout(giveUp);
      resolve({ closedByServer: !gaveUp, elapsedMs: performance.now() - started, received });
    });
  });
}

/** One complete GET of /health/live on a fresh connection: its status, or 0 when it failed. */
function normalRequest(port: number): Promise<number> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: '/health/live', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.setTimeout(GIVE_UP_MS, () => req.destroy());
    req.on('error', () => resolve(0));
    req.end();
  });
}

/** Keeps a normal client asking, one request after another, until `done` settles; returns every status. */
async function normalClientUntil(port: number, done: Promise<unknown>): Promise<number[]> {
  let finished = false;
  void done.finally(() => {
    finished = true;
  });
  const statuses: number[] = [];
  while (!finished) {
    statuses.push(await normalRequest(port));
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return statuses;
}

function openConnections(app: PlinthApp): Promise<number> {
  return new Promise((resolve, reject) =>
    app.server.getConnections((error, count) => (error ? reject(error) : resolve(count))),
  );
}

// Real sockets against a listening app: app.inject has no connection to be slow on. SQLite only, since the
// database plays no part.
describe('slow clients against a listening server', () => {
  let app: PlinthApp;
  let port: number;
  beforeAll(async () => {
    app = await buildTestApp('sqlite', {
      modules: [echoRoute],
      env: {
        HEADERS_TIMEOUT_MS: String(HEADERS_TIMEOUT_MS),
        REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
        KEEP_ALIVE_TIMEOUT_MS: String(KEEP_ALIVE_TIMEOUT_MS),
      },
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    port = (app.server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await app.close();
  });

  it('disconnects slowloris clients after the headers timeout while a normal client keeps being served', async () => {
    const slow = Promise.all(
      Array.from({ length: SLOW_CLIENTS }, () =>
        slowClient(port, 'GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: '),
      ),
    );
    const [results, statuses] = await Promise.all([slow, normalClientUntil(port, slow)]);

    for (const result of results) {
      expect(result.closedByServer).toBe(true);
      // Cut by the timeout (first, so that a refusal for another reason shows what the server said)...
      expect(result.received).toMatch(/^HTTP\/1\.1 408 /);
      // ...held until the headers timeout, then cut soon after it.
      expect(result.elapsedMs).toBeGreaterThanOrEqual(HEADERS_TIMEOUT_MS - 50);
      expect(result.elapsedMs).toBeLessThan(HEADERS_TIMEOUT_MS + 1500);
    }
    expect(statuses.length).toBeGreaterThanOrEqual(3);
    expect(statuses.every((status) => status === 200)).toBe(true);
    // Nothing of the slow clients is left behind.
    await expect.poll(() => openConnections(app)).toBe(0);
  });

  it('closes a connection on which the client never sends a byte, after the headers timeout', async () => {
    const result = await slowClient(port, '', '');
    expect(result.closedByServer).toBe(true);
    expect(result.elapsedMs).toBeLessThan(HEADERS_TIMEOUT_MS + 1500);
  });

  it('cuts off a body trickled slower than the request timeout while a normal client keeps being served', async () => {
    const slow = slowClient(
      port,
      'POST /api/v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n' +
        'Content-Length: 100000\r\n\r\n{"a":"',
    );
    const [result, statuses] = await Promise.all([slow, normalClientUntil(port, slow)]);
    expect(result.closedByServer).toBe(true);
    expect(result.received).toMatch(/^HTTP\/1\.1 408 /);
    // The headers arrived at once, so it is the request timeout, measured from the request's start, that cut it.
    expect(result.elapsedMs).toBeGreaterThanOrEqual(REQUEST_TIMEOUT_MS - 50);
    expect(result.elapsedMs).toBeLessThan(REQUEST_TIMEOUT_MS + 1500);
    expect(statuses.length).toBeGreaterThanOrEqual(3);
    expect(statuses.every((status) => status === 200)).toBe(true);
  });

  it('still serves a body that arrives within the request timeout', async () => {
    const response = await fetch(`http://127.0.0.1:${port}/api/v1/echo`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ a: 'b' }),
    });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ a: 'b' });
  });

  it('closes an idle keep-alive connection after the keep-alive timeout', async () => {
    const result = await slowClient(port, 'GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n', '');
    expect(result.closedByServer).toBe(true);
    expect(result.received).toMatch(/^HTTP\/1\.1 200 /);
    expect(result.received.toLowerCase()).toContain('connection: keep-alive');
    // Node allows about a second past the keep-alive timeout before it closes the socket.
    expect(result.elapsedMs).toBeGreaterThanOrEqual(KEEP_ALIVE_TIMEOUT_MS - 50);
    expect(result.elapsedMs).toBeLessThan(KEEP_ALIVE_TIMEOUT_MS + 2500);
  });
});

describe('server timeout configuration', () => {
  it('gives the HTTP server the documented defaults', async () => {
    const app = await buildTestApp('sqlite');
    try {
      expect(app.server.headersTimeout).toBe(10_000);
      expect(app.server.requestTimeout).toBe(30_000);
      // Longer than a load balancer's usual 60 s idle timeout, so the balancer closes idle connections first.
      expect(app.server.keepAliveTimeout).toBe(72_000);
      expect(app.server.timeout).toBe(60_000);
    } finally {
      await app.close();
    }
  });

  it('gives the HTTP server the configured values', async () => {
    const app = await buildTestApp('sqlite', {
      env: {
        HEADERS_TIMEOUT_MS: '2000',
        REQUEST_TIMEOUT_MS: '4000',
        KEEP_ALIVE_TIMEOUT_MS: '65000',
        CONNECTION_TIMEOUT_MS: '90000',
      },
    });
    try {
      expect(app.server.headersTimeout).toBe(2000);
      expect(app.server.requestTimeout).toBe(4000);
      expect(app.server.keepAliveTimeout).toBe(65_000);
      expect(app.server.timeout).toBe(90_000);
    } finally {
      await app.close();
    }
  });

  const load = configFromEnv;

  it('refuses a headers timeout longer than the request timeout', () => {
    expect(() => load({ HEADERS_TIMEOUT_MS: '5000', REQUEST_TIMEOUT_MS: '4000' })).toThrow(
      'HEADERS_TIMEOUT_MS: must not be longer than REQUEST_TIMEOUT_MS',
    );
    expect(() => load({ HEADERS_TIMEOUT_MS: '40000' })).toThrow(ConfigError);
  });

  it.each(['HEADERS_TIMEOUT_MS', 'REQUEST_TIMEOUT_MS', 'KEEP_ALIVE_TIMEOUT_MS', 'CONNECTION_TIMEOUT_MS'])(
    'refuses a %s that is not a whole number of at least 100 ms',
    (name) => {
      for (const value of ['0', '50', 'soon', '1.5']) {
        expect(() => load({ [name]: value })).toThrow(new RegExp(`${name}: must`));
      }
    },
  );
});
