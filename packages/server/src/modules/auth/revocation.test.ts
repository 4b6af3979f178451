import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { TokenPair } from '@plinth/shared';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { buildApp, type PlinthApp } from '../../app.ts';
import { createBroadcast } from '../../core/broadcast.ts';
import {
  bearer,
  cleanupAfterEach,
  createFakeClock,
  expectProblem,
  type FakeClock,
  loginWithPassword,
  me,
  refresh,
  SECOND,
  signup,
  startTestApp,
} from '../../test/auth-helpers.ts';
import { testDialects, testRedisUrl } from '../../test/dialects.ts';
import { createTestDatabase, type TestDatabase, testConfig } from '../../test/harness.ts';
import { createRevokedSessions } from './revocation.ts';

// Revoking a session refuses its access tokens before they expire, without a database read per request: each
// replica keeps the recently revoked sessions in memory. These tests check that nothing is forgotten when a
// replica restarts, and (with Redis) that a revocation on one replica reaches the others.

const START = '2030-03-04T09:00:00.000Z';
const TTL = 900;
type Dialect = (typeof testDialects)[number];

const cleanups = cleanupAfterEach();

/** One database shared by several apps (replicas, or one app before and after a restart). */
async function sharedDatabase(dialect: Dialect): Promise<TestDatabase> {
  const database = await createTestDatabase(dialect);
  cleanups.push(() => database.drop());
  return database;
}

/** What every replica of one installation shares: the signing secret and the encryption key. */
function installationEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    REQUIRE_EMAIL_VERIFICATION: 'false',
    JWT_SECRET: randomBytes(32).toString('base64url'),
    ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    ...extra,
  };
}

/** Starts an app on `database`; it is closed after the test unless the test closes it first. */
async function startApp(
  database: TestDatabase,
  env: Record<string, string>,
  clock: FakeClock,
): Promise<PlinthApp> {
  const app = await buildApp(testConfig(database, env), { clock });
  let closed = false;
  app.addHook('onClose', async () => {
    closed = true;
  });
  cleanups.push(async () => {
    if (!closed) await app.close();
  });
  return app;
}

const logout = (app: PlinthApp, accessToken: string) =>
  app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(accessToken) });

/**
 * Asks `probe` again every 25 ms until it holds or `timeoutMs` has passed (real time: Redis delivery is
 * asynchronous). Returns whether it held; the bound only keeps a failing test from hanging.
 */
async function eventually(probe: () => Promise<boolean>, timeoutMs = 2000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

const sessionId = (accessToken: string) =>
  z
    .object({ sid: z.string() })
    .parse(JSON.parse(Buffer.from(accessToken.split('.')[1] ?? '', 'base64url').toString('utf8'))).sid;

describe.each(testDialects)('revocation across a restart (%s)', (dialect) => {
  it('refuses, after a restart, the access token of a session revoked before it', async () => {
    const clock = createFakeClock(START);
    const database = await sharedDatabase(dialect);
    const env = installationEnv();
    const before = await startApp(database, env, clock);
    await signup(before, 'ada@example.com');
    const revoked = await loginWithPassword(before, 'ada@example.com');
    const kept = await loginWithPassword(before, 'ada@example.com');
    expect((await logout(before, revoked.accessToken)).statusCode).toBe(204);
    await before.close();

    clock.advance(60 * SECOND);
    const after = await startApp(database, env, clock);
    expectProblem(await me(after, revoked.accessToken), 401, 'SESSION_REVOKED');
    expectProblem(await refresh(after, revoked.refreshToken), 401, 'INVALID_REFRESH_TOKEN');
    // The installation's keys survived the restart: an unrevoked session's token is still good.
    expect((await me(after, kept.accessToken)).statusCode).toBe(200);
  });

  it('remembers every kind of revocation: logout-all, ending one session, refresh-token reuse', async () => {
    const clock = createFakeClock(START);
    const database = await sharedDatabase(dialect);
    const env = installationEnv();
    const before = await startApp(database, env, clock);
    await signup(before, 'ada@example.com');
    await signup(before, 'grace@example.com');
    await signup(before, 'linus@example.com');
    const ada = [
      await loginWithPassword(before, 'ada@example.com'),
      await loginWithPassword(before, 'ada@example.com'),
    ] as const;
    const grace = [
      await loginWithPassword(before, 'grace@example.com'),
      await loginWithPassword(before, 'grace@example.com'),
    ] as const;
    const linus = await loginWithPassword(before, 'linus@example.com');

    await before.inject({
      method: 'POST',
      url: '/api/v1/auth/logout-all',
      headers: bearer(ada[0].accessToken),
    });
    const del = await before.inject({
      method: 'DELETE',
      url: `/api/v1/auth/sessions/${sessionId(grace[1].accessToken)}`,
      headers: bearer(grace[0].accessToken),
    });
    expect(del.statusCode).toBe(204);
    await refresh(before, linus.refreshToken);
    clock.advance(11 * SECOND);
    expectProblem(await refresh(before, linus.refreshToken), 401, 'INVALID_REFRESH_TOKEN');
    await before.close();

    const after = await startApp(database, env, clock);
    for (const pair of [ada[0], ada[1], grace[1], linus]) {
      expectProblem(await me(after, pair.accessToken), 401, 'SESSION_REVOKED');
    }
    expect((await me(after, grace[0].accessToken)).statusCode).toBe(200);
  });

  it('still refuses a revoked token restarted into the last seconds of its life, clock skew included', async () => {
    const clock = createFakeClock(START);
    const database = await sharedDatabase(dialect);
    const env = installationEnv();
    const before = await startApp(database, env, clock);
    await signup(before, 'ada@example.com');
    const revoked = await loginWithPassword(before, 'ada@example.com');
    const kept = await loginWithPassword(before, 'ada@example.com');
    await logout(before, revoked.accessToken);
    await before.close();

    // Past `exp`, but within the few seconds of skew a verifier allows: the kept token still works, so only
    // the revocation can refuse the other.
    clock.advance((TTL + 3) * SECOND);
    const after = await startApp(database, env, clock);
    expect((await me(after, kept.accessToken)).statusCode).toBe(200);
    expectProblem(await me(after, revoked.accessToken), 401, 'SESSION_REVOKED');
  });
});

// Replicas share the database and Redis; revocations travel between them through Redis pub/sub.
if (testRedisUrl) {
  const redisUrl = testRedisUrl;

  describe.each(testDialects)('revocation across replicas through Redis (%s)', (dialect) => {
    async function twoReplicas() {
      const clock = createFakeClock(START);
      const database = await sharedDatabase(dialect);
      const env = installationEnv({ REDIS_URL: redisUrl });
      const a = await startApp(database, env, clock);
      const b = await startApp(database, env, clock);
      await signup(a, 'ada@example.com');
      return { a, b, clock };
    }

    it('hears other replicas even when the shared Redis client was connected before the revocation set started', async () => {
      // The composition root hands over a client that may already be connected; its settings then differ from
      // a fresh one's (no more offline queue), and the broadcast must subscribe all the same.
      const app = await startTestApp(dialect, cleanups, { env: { REDIS_URL: redisUrl } });
      const redis = app.redis;
      if (!redis) throw new Error('REDIS_URL is set, so the app must have a Redis client');
      if (redis.status !== 'ready') await once(redis, 'ready');
      const open = async () => {
        const broadcast = createBroadcast(redis, app.log);
        const revoked = await createRevokedSessions({
          db: app.database.db,
          clock: createFakeClock(START),
          accessTokenTtlSeconds: TTL,
          broadcast,
          log: app.log,
        });
        cleanups.push(async () => {
          revoked.close();
          await broadcast.close();
        });
        return revoked;
      };
      const here = await open();
      const there = await open();

      const revokedId = randomUUID();
      await here.add([revokedId]);
      expect(here.has(revokedId)).toBe(true);
      expect(await eventually(async () => there.has(revokedId))).toBe(true);
    });

    it('refuses on replica B, within a short wait, an access token logged out on replica A', async () => {
      const { a, b } = await twoReplicas();
      const pair = await loginWithPassword(a, 'ada@example.com');
      const other = await loginWithPassword(a, 'ada@example.com');
      expect((await me(b, pair.accessToken)).statusCode).toBe(200);

      expect((await logout(a, pair.accessToken)).statusCode).toBe(204);
      expectProblem(await me(a, pair.accessToken), 401, 'SESSION_REVOKED');
      const refusedOnB = await eventually(async () => (await me(b, pair.accessToken)).statusCode === 401);
      expect(refusedOnB).toBe(true);
      expectProblem(await me(b, pair.accessToken), 401, 'SESSION_REVOKED');
      expectProblem(await refresh(b, pair.refreshToken), 401, 'INVALID_REFRESH_TOKEN');
      // Only that session: the user's other session is untouched on both replicas.
      expect((await me(a, other.accessToken)).statusCode).toBe(200);
      expect((await me(b, other.accessToken)).statusCode).toBe(200);
    });

    it('carries logout-all and the ending of one session from B back to A', async () => {
      const { a, b } = await twoReplicas();
      const first = await loginWithPassword(a, 'ada@example.com');
      const second = await loginWithPassword(b, 'ada@example.com');
      const third = await loginWithPassword(a, 'ada@example.com');

      const del = await b.inject({
        method: 'DELETE',
        url: `/api/v1/auth/sessions/${sessionId(first.accessToken)}`,
        headers: bearer(second.accessToken),
      });
      expect(del.statusCode).toBe(204);
      expect(await eventually(async () => (await me(a, first.accessToken)).statusCode === 401)).toBe(true);
      expect((await me(a, third.accessToken)).statusCode).toBe(200);

      await b.inject({ method: 'POST', url: '/api/v1/auth/logout-all', headers: bearer(second.accessToken) });
      for (const pair of [second, third]) {
        expect(await eventually(async () => (await me(a, pair.accessToken)).statusCode === 401)).toBe(true);
        expectProblem(await me(a, pair.accessToken), 401, 'SESSION_REVOKED');
      }
    });

    it('carries a revocation for refresh-token reuse detected on B to replica A', async () => {
      const { a, b, clock } = await twoReplicas();
      const pair = await loginWithPassword(a, 'ada@example.com');
      const rotated = TokenPair.parse((await refresh(a, pair.refreshToken)).json());
      expect((await me(a, rotated.accessToken)).statusCode).toBe(200);

      // The spent token turns up again, at the other replica, after the grace window.
      clock.advance(11 * SECOND);
      expectProblem(await refresh(b, pair.refreshToken), 401, 'INVALID_REFRESH_TOKEN');
      expect(await eventually(async () => (await me(a, rotated.accessToken)).statusCode === 401)).toBe(true);
      expectProblem(await me(a, rotated.accessToken), 401, 'SESSION_REVOKED');
    });
  });
}
