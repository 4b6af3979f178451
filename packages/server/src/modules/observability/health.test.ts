import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { buildApp, type PlinthApp } from '../../app.ts';
import { isId } from '../../core/ids.ts';
import { migrateToLatest } from '../../db/migrate.ts';
import { migrations } from '../../db/migrations/index.ts';
import { testDialects, testPostgresUrl, testRedisUrl } from '../../test/dialects.ts';
import { buildTestApp, createTestDatabase, testConfig } from '../../test/harness.ts';
import { TcpProxy } from '../../test/tcp-proxy.ts';

const serverPackage = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

interface CheckBody {
  status: string;
  latencyMs: number;
}
interface ReadyBody {
  status: string;
  checks: Record<string, CheckBody>;
}
interface NotReadyBody extends ReadyBody {
  type: string;
  title: string;
  detail: string;
  code: string;
  requestId: string;
}

/** Apps and other resources a test opened, released after it whatever its outcome. */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function track(app: PlinthApp): PlinthApp {
  cleanups.push(() => app.close());
  return app;
}

/** Polls until `probe` holds, for at most `timeoutMs`; returns whether it did. */
async function eventually(probe: () => Promise<boolean>, timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe.each(testDialects)('health endpoints (%s)', (dialect) => {
  it('answers /health/live with 200 {status: ok}', async () => {
    const app = track(await buildTestApp(dialect));
    const res = await app.inject({ method: 'GET', url: '/health/live' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(res.json()).toEqual({ status: 'ok' });
    expect(res.headers['x-request-id']).toBeTruthy();
  });

  it('answers /health/ready with 200 when the database is reachable and migrations are current', async () => {
    // The production default: load shedding on an event-loop delay over 1 s (the harness turns it off).
    const app = track(await buildTestApp(dialect, { env: { LOAD_SHED_MAX_EVENT_LOOP_DELAY_MS: '1000' } }));
    const res = await app.inject({ method: 'GET', url: '/health/ready' });
    expect(res.statusCode).toBe(200);
    const body = res.json<ReadyBody>();
    expect(body.status).toBe('ok');
    // `load` is the load-shedding check.
    expect(Object.keys(body.checks).sort()).toEqual(['database', 'load', 'migrations']);
    for (const check of Object.values(body.checks)) {
      expect(check.status).toBe('ok');
      expect(check.latencyMs).toBeGreaterThanOrEqual(0);
    }
  });

  it('reports version, dialect, installation id, uptime, memory and checks on /health', async () => {
    const app = track(await buildTestApp(dialect));
    const res = await app.inject({ method: 'GET', url: '/health' });
    expect(res.statusCode).toBe(200);
    const body = res.json<{
      status: string;
      version: string;
      installationId: string;
      uptimeSeconds: number;
      database: { dialect: string; status: string; latencyMs: number };
      memory: { rssBytes: number; heapUsedBytes: number; heapTotalBytes: number };
      checks: Record<string, CheckBody>;
    }>();
    expect(body.status).toBe('ok');
    expect(body.version).toBe(serverPackage.version);
    expect(body.database).toMatchObject({ dialect, status: 'ok' });
    expect(isId(body.installationId)).toBe(true);
    const row = await app.database.db.selectFrom('installation').select('id').executeTakeFirstOrThrow();
    expect(body.installationId).toBe(row.id);
    expect(body.uptimeSeconds).toBeGreaterThanOrEqual(0);
    expect(body.memory.rssBytes).toBeGreaterThan(0);
    expect(body.memory.heapUsedBytes).toBeGreaterThan(0);
    expect(body.memory.heapTotalBytes).toBeGreaterThanOrEqual(body.memory.heapUsedBytes);
    expect(body.checks.database?.status).toBe('ok');
    expect(body.checks.migrations?.status).toBe('ok');
  });

  it('is not ready while migrations are pending, and ready once they are applied, without a restart', async () => {
    const app = track(await buildTestApp(dialect, { env: { AUTO_MIGRATE: 'false' } }));

    const pending = await app.inject({ method: 'GET', url: '/health/ready' });
    expect(pending.statusCode).toBe(503);
    expect(pending.headers['content-type']).toMatch(/^application\/problem\+json/);
    const problem = pending.json<NotReadyBody>();
    expect(problem).toMatchObject({ status: 503, code: 'SERVICE_UNAVAILABLE' });
    expect(problem.detail).toContain('migrations');
    expect(problem.detail).not.toContain('database');
    expect(problem.requestId).toBe(pending.headers['x-request-id']);
    expect(problem.checks.migrations?.status).toBe('fail');
    expect(problem.checks.database?.status).toBe('ok');
    // Why a check failed belongs in the log; the public probe names the check and nothing more.
    for (const name of Object.keys(migrations)) expect(pending.body).not.toContain(name);

    const report = await app.inject({ method: 'GET', url: '/health' });
    expect(report.statusCode).toBe(200);
    expect(report.json()).toMatchObject({ status: 'fail', installationId: null });

    await migrateToLatest(app.database.db, app.database.dialect);

    const ready = await app.inject({ method: 'GET', url: '/health/ready' });
    expect(ready.statusCode).toBe(200);
    expect(ready.json<ReadyBody>().checks.migrations?.status).toBe('ok');
    const after = await app.inject({ method: 'GET', url: '/health' });
    expect(isId(after.json<{ installationId: string }>().installationId)).toBe(true);
  });

  it('stays ready but reports redis as degraded while Redis is unreachable, naming no connection details', async () => {
    // Nothing listens on port 1 of the loopback interface, so every connection attempt is refused. Everything
    // kept in Redis has a per-replica fallback, so the replica keeps serving: it must not leave the load balancer.
    const app = track(await buildTestApp(dialect, { env: { REDIS_URL: 'redis://127.0.0.1:1' } }));
    const res = await app.inject({ method: 'GET', url: '/health/ready' });
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json<ReadyBody>();
    expect(body.checks.redis?.status).toBe('degraded');
    expect(body.checks.database?.status).toBe('ok');
    const report = await app.inject({ method: 'GET', url: '/health' });
    expect(report.json()).toMatchObject({ status: 'degraded' });
    expect(res.body + report.body).not.toMatch(/ECONNREFUSED|127\.0\.0\.1|redis:\/\//);
  });
});

if (testRedisUrl) {
  const redisUrl = testRedisUrl;
  describe.each(testDialects)('health with Redis (%s)', (dialect) => {
    it('includes an ok redis check in /health/ready, from the first probe after start-up', async () => {
      const app = track(await buildTestApp(dialect, { env: { REDIS_URL: redisUrl } }));
      // No waiting for the client to connect first: a replica that was just started and whose Redis is up
      // must not fail the load balancer's first probe.
      const res = await app.inject({ method: 'GET', url: '/health/ready' });
      expect(res.statusCode, res.body).toBe(200);
      const body = res.json<ReadyBody>();
      expect(body.checks.redis?.status).toBe('ok');
      expect(body.checks.database?.status).toBe('ok');
    });
  });
}

if (testPostgresUrl) {
  const postgresUrl = new URL(testPostgresUrl);
  describe('health when PostgreSQL goes away (postgres)', () => {
    it('is not ready while the database is unreachable and ready again once it is back, without a restart', async () => {
      const proxy = new TcpProxy(postgresUrl.hostname, Number(postgresUrl.port || 5432));
      await proxy.start();
      cleanups.push(() => proxy.stop());
      const database = await createTestDatabase('postgres');
      cleanups.push(() => database.drop());
      const viaProxy = new URL(database.url);
      viaProxy.hostname = '127.0.0.1';
      viaProxy.port = String(proxy.port);
      const app = track(await buildApp(testConfig({ ...database, url: viaProxy.toString() })));

      expect((await app.inject({ method: 'GET', url: '/health/ready' })).statusCode).toBe(200);

      await proxy.stop();
      const down = await app.inject({ method: 'GET', url: '/health/ready' });
      expect(down.statusCode).toBe(503);
      expect(down.headers['content-type']).toMatch(/^application\/problem\+json/);
      const problem = down.json<NotReadyBody>();
      expect(problem.detail).toContain('database');
      expect(problem.checks.database?.status).toBe('fail');
      // Connection errors name hosts, ports and users; none of that may reach a public endpoint.
      const { requestId: _ignored, ...rest } = problem;
      const exposed = JSON.stringify(rest);
      expect(exposed).not.toMatch(/ECONNREFUSED|ECONNRESET|connect|terminated|127\.0\.0\.1|localhost/i);
      expect(exposed).not.toContain(String(proxy.port));
      expect(exposed).not.toContain(postgresUrl.hostname);

      const report = await app.inject({ method: 'GET', url: '/health' });
      expect(report.statusCode).toBe(200);
      expect(report.json()).toMatchObject({
        status: 'fail',
        installationId: null,
        database: { dialect: 'postgres', status: 'fail' },
      });

      await proxy.start();
      const recovered = await eventually(
        async () => (await app.inject({ method: 'GET', url: '/health/ready' })).statusCode === 200,
      );
      expect(recovered).toBe(true);
      const back = await app.inject({ method: 'GET', url: '/health/ready' });
      expect(back.json<ReadyBody>().checks.database?.status).toBe('ok');
    });
  });
}
