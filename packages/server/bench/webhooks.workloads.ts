import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { buildApp, type PlinthApp } from '../src/app.ts';
import { loadConfig } from '../src/config.ts';
import { durationSeconds, type Figures, type Measurement } from './workload.ts';

/**
 * Webhook deliveries per second, and the raw HTTP ceiling they run under. Both send the same JSON body to the same
 * local receiver (node:http on 127.0.0.1, answering 204) with the same concurrency (`WEBHOOK_BENCH_CONCURRENCY`,
 * default 16): the baseline is a bare undici POST loop; Plinth's figure is the whole way of a domain event — the
 * outbox row and its relay job, the fan-out to the endpoint, the delivery job (claim, decrypting the secret,
 * Standard Webhooks signing, the SSRF-checked connection, the POST), and the delivery log written afterwards — on
 * an embedded (SQLite) installation, its job worker draining the queue. The p50/p99 columns are the HTTP attempt's
 * own latency in both rows.
 */

export const WEBHOOK_DELIVERIES =
  'plinth: webhook deliveries to a local receiver (event → signed POST → log)';
export const WEBHOOK_BASELINE = 'baseline: raw HTTP POST loop to the webhook receiver';

const concurrency = Number(process.env.WEBHOOK_BENCH_CONCURRENCY ?? 16);
/** Events published per transaction; each becomes one delivery. */
const BATCH = 200;

interface Receiver {
  url: string;
  close(): Promise<void>;
}

async function startReceiver(): Promise<Receiver> {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(204);
      res.end();
    });
  });
  server.keepAliveTimeout = 10_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function percentile(sorted: number[], p: number): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
}

const BODY = JSON.stringify({
  id: '01900000-0000-7000-8000-000000000000',
  type: 'org.updated',
  timestamp: new Date().toISOString(),
  orgId: '01900000-0000-7000-8000-000000000001',
  data: {
    id: '01900000-0000-7000-8000-000000000001',
    name: 'Bench Fleet',
    slug: 'bench-fleet',
    plan: 'free',
  },
});

export const webhookBaseline: Measurement = {
  name: WEBHOOK_BASELINE,
  async measure(): Promise<Figures> {
    const receiver = await startReceiver();
    const agent = new Agent({ connections: 32, keepAliveTimeout: 4000 });
    const latencies: number[] = [];
    let errors = 0;
    try {
      const deadline = Date.now() + durationSeconds * 1000;
      const worker = async () => {
        while (Date.now() < deadline) {
          const started = performance.now();
          try {
            const res = await request(receiver.url, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: BODY,
              dispatcher: agent,
            });
            await res.body.dump();
            if (res.statusCode !== 204) errors++;
          } catch {
            errors++;
          }
          latencies.push(performance.now() - started);
        }
      };
      await Promise.all(Array.from({ length: concurrency }, worker));
    } finally {
      await agent.close();
      await receiver.close();
    }
    latencies.sort((a, b) => a - b);
    return {
      name: this.name,
      rate: Math.round(latencies.length / durationSeconds),
      p50Ms: round(percentile(latencies, 50)),
      p99Ms: round(percentile(latencies, 99)),
      non2xx: 0,
      errors,
    };
  },
};

export const webhookDeliveries: Measurement = {
  name: WEBHOOK_DELIVERIES,
  async measure(): Promise<Figures> {
    const receiver = await startReceiver();
    const dataDir = mkdtempSync(join(tmpdir(), 'plinth-bench-webhooks-'));
    let app: PlinthApp | undefined;
    try {
      app = await buildApp(
        loadConfig({
          NODE_ENV: 'test',
          LOG_LEVEL: 'silent',
          DATA_DIR: dataDir,
          DATABASE_URL: join(dataDir, 'plinth.db'),
          AUTO_MIGRATE: 'true',
          JOBS_WORKER: 'false',
          JOBS_CONCURRENCY: String(concurrency),
          RATE_LIMITS_ENABLED: 'false',
          REQUIRE_EMAIL_VERIFICATION: 'false',
          WEBHOOK_ALLOWED_HOSTS: '127.0.0.1',
        }),
      );
      const { orgId } = await organizationWithWebhook(app, receiver.url);
      const started = performance.now();
      const deadline = Date.now() + durationSeconds * 1000;
      let published = 0;
      while (Date.now() < deadline) {
        const live = app;
        await live.database.withTenant(orgId, async (db) => {
          for (let i = 0; i < BATCH; i++) {
            await live.domainEvents.publish(db, {
              orgId,
              type: 'org.updated',
              data: { id: orgId, name: `Bench Fleet ${published + i}`, slug: 'bench-fleet', plan: 'free' },
            });
          }
        });
        published += BATCH;
        await live.jobs.drain();
      }
      const elapsedSeconds = (performance.now() - started) / 1000;
      const rows = await app.database.withTenant(orgId, (db) =>
        db.selectFrom('webhook_delivery_attempts').select(['status_code', 'latency_ms']).execute(),
      );
      const succeeded = rows.filter((r) => r.status_code === 204).length;
      const latencies = rows.map((r) => r.latency_ms).sort((a, b) => a - b);
      return {
        name: this.name,
        rate: Math.round(succeeded / elapsedSeconds),
        p50Ms: percentile(latencies, 50),
        p99Ms: percentile(latencies, 99),
        non2xx: rows.length - succeeded,
        errors: published - rows.length,
      };
    } finally {
      await app?.close();
      await receiver.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  },
};

/** Signs up, creates an organization and registers an endpoint for every event, through the API. */
async function organizationWithWebhook(app: PlinthApp, url: string): Promise<{ orgId: string }> {
  const credentials = {
    email: 'fleet-operator@example.test',
    password: 'bench passphrase that is long enough 7',
  };
  const signup = await app.inject({
    method: 'POST',
    url: '/api/v1/auth/signup',
    payload: { ...credentials, name: 'Fleet Operator' },
  });
  if (signup.statusCode !== 201) throw new Error(`sign-up answered ${signup.statusCode}: ${signup.body}`);
  const login = await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: credentials });
  const token = String(login.json<{ accessToken: string }>().accessToken);
  const headers = { authorization: `Bearer ${token}` };
  const org = await app.inject({
    method: 'POST',
    url: '/api/v1/orgs',
    headers,
    payload: { name: 'Bench Fleet' },
  });
  const orgId = String(org.json<{ id: string }>().id);
  const hook = await app.inject({
    method: 'POST',
    url: `/api/v1/orgs/${orgId}/webhooks`,
    headers,
    payload: { url, events: ['*'] },
  });
  if (hook.statusCode !== 201)
    throw new Error(`registering the endpoint answered ${hook.statusCode}: ${hook.body}`);
  return { orgId };
}

function round(value: number | undefined): number | undefined {
  return value === undefined ? undefined : Math.round(value * 100) / 100;
}

export const webhookWorkloads: Measurement[] = [webhookBaseline, webhookDeliveries];
