import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { account, post } from './auth.workloads.ts';
import { type BenchServer, redisReachable, startPlinth } from './servers.ts';
import type { Figures, Measurement } from './workload.ts';

/**
 * Realtime latency: the time from a change — an HTTP request that publishes (`PATCH /me/notifications/{id}`,
 * which pushes `notification.updated` on the caller's channel) — to the event at a connected WebSocket client,
 * measured one change at a time so that each figure is a latency, not a queueing delay. The baseline in the
 * same run is the raw WebSocket round trip to the same server (a ping frame and its pong, answered by the
 * WebSocket library without any Plinth code). With Redis, the same across two replicas: the change on one,
 * the client on the other, the event through Redis pub/sub.
 *
 * Environment: BENCH_REALTIME_ITERATIONS (measured changes per figure, default 1000; 100 more warm up first).
 */

const iterations = Number(process.env.BENCH_REALTIME_ITERATIONS ?? 1000);
const WARMUP = 100;
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

export const REALTIME_BASELINE = 'realtime baseline: WebSocket ping/pong round trip';
export const REALTIME_CHANGE = 'realtime: PATCH notification → event at the client';
export const REALTIME_REPLICAS = 'realtime: change on replica A → event at a client on B (Redis)';
export const REALTIME_DOMAIN_EVENT =
  'realtime: PATCH organization → org.updated at the client (outbox, relay job)';

interface Subject {
  accessToken: string;
  userId: string;
  notificationId: string;
}

async function json(
  server: BenchServer,
  path: string,
  init: RequestInit = {},
): Promise<Record<string, unknown>> {
  const response = await fetch(`${server.url}${path}`, init);
  if (!response.ok) throw new Error(`${path} answered ${response.status}: ${await response.text()}`);
  return (await response.json()) as Record<string, unknown>;
}

/**
 * A signed-in account with one notification: a data export's, made by the server's own job worker — the real
 * path a notification takes.
 */
async function subject(server: BenchServer): Promise<Subject> {
  const { email, password } = await account(server);
  const { accessToken } = (await post(server, '/api/v1/auth/login', { email, password })) as {
    accessToken: string;
  };
  const auth = { authorization: `Bearer ${accessToken}` };
  const me = (await json(server, '/api/v1/me', { headers: auth })) as { id: string };
  await post(server, '/api/v1/me/export', {}, auth);
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const page = (await json(server, '/api/v1/me/notifications', { headers: auth })) as {
      data: { id: string }[];
    };
    const first = page.data[0];
    if (first) return { accessToken, userId: me.id, notificationId: first.id };
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error('the data export never notified');
}

/** A WebSocket client subscribed to `channel` (the subject's own by default), and a way to wait for its next event. */
async function subscriber(server: BenchServer, who: Subject, channel = `user:${who.userId}`) {
  const socket = new WebSocket(`${server.url.replace(/^http/, 'ws')}/api/v1/realtime`, {
    headers: { authorization: `Bearer ${who.accessToken}` },
  });
  let waiting: ((type: string) => void) | undefined;
  socket.on('message', (data) => {
    const message = JSON.parse(String(data)) as { type: string; event?: { type: string } };
    if (message.type === 'subscribed' || message.type === 'event')
      waiting?.(message.event?.type ?? message.type);
  });
  await new Promise((resolve, reject) => {
    socket.once('open', resolve);
    socket.on('error', reject);
  });
  const nextEvent = () => new Promise<string>((resolve) => (waiting = resolve));
  const subscribed = nextEvent();
  socket.send(JSON.stringify({ type: 'subscribe', channel }));
  await subscribed;
  return { socket, nextEvent };
}

function figures(name: string, samples: number[], errors = 0): Figures {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
  const mean = sorted.reduce((sum, v) => sum + v, 0) / Math.max(1, sorted.length);
  return {
    name,
    rate: Math.round(1000 / Math.max(mean, 0.001)),
    p50Ms: Math.round(at(0.5) * 100) / 100,
    p99Ms: Math.round(at(0.99) * 100) / 100,
    non2xx: 0,
    errors,
  };
}

/** Times `once` sequentially, after a warm-up. */
async function timed(once: () => Promise<void>): Promise<number[]> {
  for (let i = 0; i < WARMUP; i++) await once();
  const samples: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const started = performance.now();
    await once();
    samples.push(performance.now() - started);
  }
  return samples;
}

/** Changes on `changeServer`, the client on `clientServer` (the same server, or another replica). */
async function changeToEvent(
  changeServer: BenchServer,
  clientServer: BenchServer,
  who: Subject,
): Promise<number[]> {
  const client = await subscriber(clientServer, who);
  let read = false;
  let failures = 0;
  let samples: number[];
  try {
    samples = await timed(async () => {
      read = !read;
      const arrived = client.nextEvent();
      const response = await fetch(`${changeServer.url}/api/v1/me/notifications/${who.notificationId}`, {
        method: 'PATCH',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${who.accessToken}` },
        body: JSON.stringify({ read }),
      });
      if (!response.ok) failures++;
      await response.arrayBuffer();
      await arrived;
    });
  } finally {
    client.socket.close();
  }
  if (failures > 0) throw new Error(`${failures} changes failed`);
  return samples;
}

/**
 * The baseline and the change-to-event latency on one server (SQLite, in-process fan-out), measured together on
 * one server, once, and reported as two rows.
 */
let singleServer: Promise<{ baseline: Figures; change: Figures }> | undefined;
function measureSingleServer(): Promise<{ baseline: Figures; change: Figures }> {
  singleServer ??= (async () => {
    const server = await startPlinth({ REQUIRE_EMAIL_VERIFICATION: 'false' });
    try {
      const who = await subject(server);
      const client = await subscriber(server, who);
      const baseline = await timed(
        () =>
          new Promise<void>((resolve) => {
            client.socket.once('pong', () => resolve());
            client.socket.ping();
          }),
      );
      client.socket.close();
      const change = await changeToEvent(server, server, who);
      return { baseline: figures(REALTIME_BASELINE, baseline), change: figures(REALTIME_CHANGE, change) };
    } finally {
      await server.stop();
    }
  })();
  return singleServer;
}

/** Two replicas on one SQLite file and one Redis: the change on A, the client on B. Skipped without Redis. */
export const realtimeAcrossReplicas: Measurement = {
  name: REALTIME_REPLICAS,
  async measure(): Promise<Figures> {
    if (!(await redisReachable(redisUrl))) {
      process.stderr.write(`Redis is not reachable at ${redisUrl}: the cross-replica figure is empty.\n`);
      return figures(REALTIME_REPLICAS, []);
    }
    const dataDir = mkdtempSync(join(tmpdir(), 'plinth-bench-replicas-'));
    const shared = {
      REQUIRE_EMAIL_VERIFICATION: 'false',
      REDIS_URL: redisUrl,
      DATABASE_URL: join(dataDir, 'plinth.db'),
      // One installation behind one address: the access tokens' issuer is the same on both replicas.
      PUBLIC_URL: 'http://plinth.bench.test',
      JWT_SECRET: randomBytes(32).toString('base64url'),
      ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    };
    const a = await startPlinth(shared);
    const b = await startPlinth({ ...shared, JOBS_WORKER: 'false' }).catch(async (error: unknown) => {
      await a.stop();
      throw error;
    });
    try {
      const who = await subject(a);
      return figures(REALTIME_REPLICAS, await changeToEvent(a, b, who));
    } finally {
      await Promise.all([a.stop(), b.stop()]);
      rmSync(dataDir, { recursive: true, force: true });
    }
  },
};

/**
 * A domain event's whole way: `PATCH /orgs/{orgId}` renames the organization, which records `org.updated` in
 * the outbox in the change's transaction; the server's job worker relays it after the commit and the event
 * reaches a client subscribed to the organization's channel.
 */
export const realtimeDomainEvent: Measurement = {
  name: REALTIME_DOMAIN_EVENT,
  async measure(): Promise<Figures> {
    const server = await startPlinth({ REQUIRE_EMAIL_VERIFICATION: 'false' });
    try {
      const { email, password } = await account(server);
      const { accessToken } = (await post(server, '/api/v1/auth/login', { email, password })) as {
        accessToken: string;
      };
      const auth = { authorization: `Bearer ${accessToken}` };
      const me = (await json(server, '/api/v1/me', { headers: auth })) as { id: string };
      const org = (await post(server, '/api/v1/orgs', { name: 'Realtime bench' }, auth)) as { id: string };
      const client = await subscriber(
        server,
        { accessToken, userId: me.id, notificationId: '' },
        `org:${org.id}`,
      );
      let round = 0;
      let failures = 0;
      try {
        const samples = await timed(async () => {
          round += 1;
          const arrived = client.nextEvent();
          const response = await fetch(`${server.url}/api/v1/orgs/${org.id}`, {
            method: 'PATCH',
            headers: { 'content-type': 'application/json', ...auth },
            body: JSON.stringify({ name: `Realtime bench ${round}` }),
          });
          if (!response.ok) failures++;
          await response.arrayBuffer();
          await arrived;
        });
        return figures(REALTIME_DOMAIN_EVENT, samples, failures);
      } finally {
        client.socket.close();
      }
    } finally {
      await server.stop();
    }
  },
};

/** The realtime rows, in the order they print. */
export const realtimeWorkloads: Measurement[] = [
  { name: REALTIME_BASELINE, measure: async () => (await measureSingleServer()).baseline },
  { name: REALTIME_CHANGE, measure: async () => (await measureSingleServer()).change },
  realtimeDomainEvent,
  realtimeAcrossReplicas,
];
