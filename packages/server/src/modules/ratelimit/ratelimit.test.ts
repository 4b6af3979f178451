import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OrgUsage, Problem } from '@plinth/shared';
import type { FastifyPluginAsync, LightMyRequestResponse } from 'fastify';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { buildApp, type PlinthApp } from '../../app.ts';
import {
  bearer,
  cleanupAfterEach,
  createOperator,
  expectProblem,
  login,
  loginResponse,
  PASSWORD,
  startTestApp,
} from '../../test/auth-helpers.ts';
import { testDialects, testRedisUrl } from '../../test/dialects.ts';
import { createTestDatabase, installationSecrets, testConfig } from '../../test/harness.ts';
import { addMember, createApiKey, createOrg, signedInUser } from '../../test/org-helpers.ts';
import { TcpProxy } from '../../test/tcp-proxy.ts';

const cleanups = cleanupAfterEach();
afterEach(() => {
  vi.useRealTimers();
});

/** Writes a `RATE_LIMITS_FILE` with `limits` merged over the defaults, and returns its path. */
function limitsFile(limits: Record<string, unknown>): string {
  const file = join(mkdtempSync(join(tmpdir(), 'plinth-limits-')), 'limits.json');
  writeFileSync(file, JSON.stringify(limits));
  return file;
}

/**
 * Limits that no test reaches but the bucket under test: everything a signed-in flow needs (sign-up, sign-in)
 * stays far away from its limit, so each test sees only the limit it sets.
 */
const ROOMY = { points: 100_000, durationSeconds: 60, burst: null };
/** A limit as a test writes it: without a burst allowance unless it names one (the defaults have some). */
type TestLimit = {
  points: number;
  durationSeconds: number;
  burst?: { points: number; durationSeconds: number };
};
const withoutDefaultBurst = (limit: TestLimit) => ({ burst: null, ...limit });
function onlyThese(limits: Record<string, TestLimit | Record<string, TestLimit>>): string {
  const explicit = Object.fromEntries(
    Object.entries(limits).map(([name, value]) => [
      name,
      // authAccounts has no burst allowance at all.
      name === 'authAccounts'
        ? value
        : 'points' in value
          ? withoutDefaultBurst(value as TestLimit)
          : Object.fromEntries(
              Object.entries(value as Record<string, TestLimit>).map(([plan, l]) => [
                plan,
                withoutDefaultBurst(l),
              ]),
            ),
    ]),
  );
  return limitsFile({
    anonymous: ROOMY,
    auth: ROOMY,
    authAccounts: { points: ROOMY.points, durationSeconds: ROOMY.durationSeconds },
    user: ROOMY,
    expensive: ROOMY,
    apikey: { default: ROOMY, free: ROOMY, basic: ROOMY, premium: ROOMY, enterprise: ROOMY },
    org: { default: ROOMY, free: ROOMY, basic: ROOMY, premium: ROOMY, enterprise: ROOMY },
    ...explicit,
  });
}

const ENV = { REQUIRE_EMAIL_VERIFICATION: 'false' };

/** A public endpoint that does nothing but answer, so a test counts requests and nothing else. */
const anonymousGet = (app: PlinthApp, headers: Record<string, string> = {}, remoteAddress = '203.0.113.7') =>
  app.inject({ method: 'GET', url: '/.well-known/jwks.json', headers, remoteAddress });

const listMembers = (app: PlinthApp, orgId: string, token: string) =>
  app.inject({ method: 'GET', url: `/api/v1/orgs/${orgId}/members`, headers: bearer(token) });

function expectLimited(res: LightMyRequestResponse, bucket: string): void {
  expectProblem(res, 429, 'RATE_LIMITED');
  expect(Problem.parse(res.json()).bucket).toBe(bucket);
  const retryAfter = Number(res.headers['retry-after']);
  expect(Number.isInteger(retryAfter) && retryAfter >= 1).toBe(true);
}

const status = (res: LightMyRequestResponse) => res.statusCode;

describe.each(testDialects)('rate limits (%s)', (dialect) => {
  const start = (limits: Parameters<typeof onlyThese>[0], env: Record<string, string> = {}) =>
    startTestApp(dialect, cleanups, { env: { ...ENV, RATE_LIMITS_FILE: onlyThese(limits), ...env } });

  describe('anonymous requests, per IP', () => {
    it('allows exactly the limit, then refuses with 429, Retry-After and the refusing bucket', async () => {
      const app = await start({ anonymous: { points: 3, durationSeconds: 60 } });
      const answers = [];
      for (let i = 0; i < 4; i++) answers.push(await anonymousGet(app));
      expect(answers.slice(0, 3).map(status)).toEqual([200, 200, 200]);
      expectLimited(answers[3] as LightMyRequestResponse, 'anonymous');
      expect(Number((answers[3] as LightMyRequestResponse).headers['retry-after'])).toBeLessThanOrEqual(60);
      // Another address has a budget of its own.
      expect(status(await anonymousGet(app, {}, '203.0.113.8'))).toBe(200);
    });

    it('counts down RateLimit-Remaining by one per request, with a constant limit, policy and a bounded reset', async () => {
      const app = await start({ anonymous: { points: 5, durationSeconds: 60 } });
      const seen: { limit: string; remaining: number; reset: number; policy: string }[] = [];
      for (let i = 0; i < 5; i++) {
        const res = await anonymousGet(app);
        seen.push({
          limit: String(res.headers['ratelimit-limit']),
          remaining: Number(res.headers['ratelimit-remaining']),
          reset: Number(res.headers['ratelimit-reset']),
          policy: String(res.headers['ratelimit-policy']),
        });
      }
      expect(seen.map((s) => s.remaining)).toEqual([4, 3, 2, 1, 0]);
      expect(new Set(seen.map((s) => s.limit))).toEqual(new Set(['5']));
      expect(new Set(seen.map((s) => s.policy))).toEqual(new Set(['5;w=60;name="anonymous"']));
      for (const s of seen) expect(s.reset).toBeGreaterThan(0);
      for (const s of seen) expect(s.reset).toBeLessThanOrEqual(60);
      // Resets never move later within one window.
      expect([...seen.map((s) => s.reset)].sort((a, b) => b - a)).toEqual(seen.map((s) => s.reset));
    });

    it('refills once the window has passed (fake clock)', async () => {
      vi.useFakeTimers({ toFake: ['Date'] });
      vi.setSystemTime(new Date('2026-06-01T10:00:00Z'));
      const app = await start({ anonymous: { points: 2, durationSeconds: 60 } });
      expect([await anonymousGet(app), await anonymousGet(app)].map(status)).toEqual([200, 200]);
      expectLimited(await anonymousGet(app), 'anonymous');
      vi.setSystemTime(new Date('2026-06-01T10:00:59Z'));
      expectLimited(await anonymousGet(app), 'anonymous');
      vi.setSystemTime(new Date('2026-06-01T10:01:01Z'));
      const refilled = await anonymousGet(app);
      expect(refilled.statusCode).toBe(200);
      expect(refilled.headers['ratelimit-remaining']).toBe('1');
    });

    it('draws on the burst allowance once the window is spent, and refuses when both are', async () => {
      vi.useFakeTimers({ toFake: ['Date'] });
      vi.setSystemTime(new Date('2026-06-01T10:00:00Z'));
      const app = await start({
        anonymous: { points: 2, durationSeconds: 60, burst: { points: 2, durationSeconds: 600 } },
      });
      const first = [];
      for (let i = 0; i < 5; i++) first.push(status(await anonymousGet(app)));
      expect(first).toEqual([200, 200, 200, 200, 429]);
      // A new window: its two requests, but the burst allowance is spent for ten minutes.
      vi.setSystemTime(new Date('2026-06-01T10:01:01Z'));
      const second = [];
      for (let i = 0; i < 3; i++) second.push(status(await anonymousGet(app)));
      expect(second).toEqual([200, 200, 429]);
    });

    it('keys on the socket address: a spoofed X-Forwarded-For changes nothing unless the proxy is trusted', async () => {
      const untrusted = await start({ anonymous: { points: 2, durationSeconds: 60 } });
      const spoofed = (app: PlinthApp, forwardedFor: string) =>
        anonymousGet(app, { 'x-forwarded-for': forwardedFor }, '10.1.2.3');
      expect(status(await spoofed(untrusted, '198.51.100.1'))).toBe(200);
      expect(status(await spoofed(untrusted, '198.51.100.2'))).toBe(200);
      expectLimited(await spoofed(untrusted, '198.51.100.3'), 'anonymous');

      const behindProxy = await start(
        { anonymous: { points: 2, durationSeconds: 60 } },
        { TRUST_PROXY: '10.0.0.0/8' },
      );
      for (const client of ['198.51.100.1', '198.51.100.2', '198.51.100.3']) {
        expect(status(await spoofed(behindProxy, client))).toBe(200);
      }
      // The same client behind the trusted proxy is counted as itself.
      expect(status(await spoofed(behindProxy, '198.51.100.1'))).toBe(200);
      expectLimited(await spoofed(behindProxy, '198.51.100.1'), 'anonymous');
    });

    it('counts an IPv6 client by its /64 network', async () => {
      const app = await start({ anonymous: { points: 2, durationSeconds: 60 } });
      expect(status(await anonymousGet(app, {}, '2001:db8:1:2::1'))).toBe(200);
      expect(status(await anonymousGet(app, {}, '2001:db8:1:2:ffff::9'))).toBe(200);
      expectLimited(await anonymousGet(app, {}, '2001:db8:1:2::3'), 'anonymous');
      expect(status(await anonymousGet(app, {}, '2001:db8:1:3::1'))).toBe(200);
    });

    it('counts requests whose credential is refused against their address, then refuses them up front', async () => {
      const app = await start({ anonymous: { points: 3, durationSeconds: 60 } });
      const junk = (remoteAddress: string) =>
        app.inject({ method: 'GET', url: '/api/v1/me', headers: bearer('junk'), remoteAddress });
      const answers: LightMyRequestResponse[] = [];
      // The count is taken once the 401 is sent, so the refusal can come a request or two after the budget.
      for (let i = 0; i < 10 && answers.at(-1)?.statusCode !== 429; i++)
        answers.push(await junk('203.0.113.70'));
      expect(answers.slice(0, 3).map(status)).toEqual([401, 401, 401]);
      expectLimited(answers.at(-1) as LightMyRequestResponse, 'anonymous');
      expect(answers.length).toBeLessThanOrEqual(6);
      // Only that address: another one's refused credentials are its own business.
      expect(status(await junk('203.0.113.71'))).toBe(401);
    });

    it('never limits the health and metrics endpoints, and sends them no rate-limit headers', async () => {
      const app = await start({ anonymous: { points: 1, durationSeconds: 60 } });
      for (let i = 0; i < 5; i++) {
        for (const url of ['/health/live', '/health/ready', '/metrics']) {
          const res = await app.inject({ method: 'GET', url, remoteAddress: '203.0.113.7' });
          expect(res.statusCode, url).toBe(200);
          expect(res.headers['ratelimit-limit']).toBeUndefined();
        }
      }
    });
  });

  describe('auth routes', () => {
    it('limits auth routes per IP much more strictly than the rest, whatever the credentials', async () => {
      const app = await start({
        auth: { points: 3, durationSeconds: 60 },
        anonymous: { points: 100, durationSeconds: 60 },
      });
      const attempts = [];
      for (let i = 0; i < 4; i++) {
        attempts.push(
          await loginResponse(app, `nobody${i}@example.com`, PASSWORD, { remoteAddress: '203.0.113.9' }),
        );
      }
      expect(attempts.slice(0, 3).map(status)).toEqual([401, 401, 401]);
      expectLimited(attempts[3] as LightMyRequestResponse, 'auth');
      // The same address may still use the rest of the API.
      expect(status(await anonymousGet(app, {}, '203.0.113.9'))).toBe(200);
    });

    it('refuses sign-in from an address once too many different accounts failed from it (credential stuffing)', async () => {
      const app = await start({ authAccounts: { points: 3, durationSeconds: 3600 } });
      await signedInUser(app, 'victim@example.com');
      const from = { remoteAddress: '198.51.100.77' };
      // One account failing again and again is one account.
      for (let i = 0; i < 4; i++)
        expect(status(await loginResponse(app, 'a@example.com', 'wrong password!!', from))).toBe(401);
      expect(status(await loginResponse(app, 'b@example.com', 'wrong password!!', from))).toBe(401);
      expect(status(await loginResponse(app, 'c@example.com', 'wrong password!!', from))).toBe(401);
      // Three distinct accounts failed: even the right password for a fourth is not tried.
      const stuffed = await loginResponse(app, 'victim@example.com', PASSWORD, from);
      expectLimited(stuffed, 'authAccounts');
      // Elsewhere, the account signs in as usual.
      expect(
        status(await loginResponse(app, 'victim@example.com', PASSWORD, { remoteAddress: '198.51.100.78' })),
      ).toBe(200);
    });

    it('does not count successful sign-ins toward the distinct-accounts limit', async () => {
      const app = await start({ authAccounts: { points: 1, durationSeconds: 3600 } });
      const from = { remoteAddress: '198.51.100.90' };
      for (const name of ['one', 'two', 'three']) {
        const user = await signedInUser(app, `${name}@example.com`);
        expect(status(await loginResponse(app, user.email, PASSWORD, from))).toBe(200);
      }
    });
  });

  describe('signed-in callers', () => {
    it('limits each person across organizations, and a person refused by their own limit does not drain the organization', async () => {
      const app = await start({
        user: { points: 3, durationSeconds: 60 },
        org: { default: { points: 5, durationSeconds: 60 }, free: { points: 5, durationSeconds: 60 } },
      });
      const owner = await signedInUser(app, 'owner@example.com');
      const org = await createOrg(app, owner.accessToken);
      const other = await addMember(app, owner.accessToken, org.id, 'member@example.com', 'member');
      // The owner has spent one request of their own budget (creating the organization) and the invitation another.
      const ownerAnswers = [];
      for (let i = 0; i < 3; i++) ownerAnswers.push(await listMembers(app, org.id, owner.accessToken));
      expect(ownerAnswers.map(status)).toEqual([200, 429, 429]);
      expectLimited(ownerAnswers[1] as LightMyRequestResponse, 'user');
      // The member still has the organization's remaining budget: refused requests were handed back to it.
      // Without the hand-back the owner's two refused requests would have spent the rest of it (2 + 2 + 2 > 5).
      const memberAnswers = [];
      for (let i = 0; i < 2; i++) {
        memberAnswers.push(status(await listMembers(app, org.id, other.accessToken)));
      }
      expect(memberAnswers).toEqual([200, 200]);
    });

    it('shares one organization budget between its members', async () => {
      const app = await start({
        org: { default: { points: 4, durationSeconds: 60 }, free: { points: 4, durationSeconds: 60 } },
      });
      const owner = await signedInUser(app, 'owner@example.com');
      const org = await createOrg(app, owner.accessToken);
      const member = await addMember(app, owner.accessToken, org.id, 'member@example.com', 'member');
      // The invitation cost the organization one request.
      const answers = [
        await listMembers(app, org.id, owner.accessToken),
        await listMembers(app, org.id, member.accessToken),
        await listMembers(app, org.id, owner.accessToken),
        await listMembers(app, org.id, member.accessToken),
      ];
      expect(answers.slice(0, 3).map(status)).toEqual([200, 200, 200]);
      expectLimited(answers[3] as LightMyRequestResponse, 'org');
      // Outside the organization the member is not limited by it.
      expect(
        status(await app.inject({ method: 'GET', url: '/api/v1/me', headers: bearer(member.accessToken) })),
      ).toBe(200);
    });

    it('limits API keys by their organization’s plan, and a plan change takes effect on the next request', async () => {
      const app = await start({
        apikey: { free: { points: 2, durationSeconds: 60 }, enterprise: { points: 50, durationSeconds: 60 } },
      });
      const owner = await signedInUser(app, 'owner@example.com');
      const org = await createOrg(app, owner.accessToken);
      const { key } = await createApiKey(app, owner.accessToken, org.id, { scopes: ['members:read'] });
      expect([await listMembers(app, org.id, key), await listMembers(app, org.id, key)].map(status)).toEqual([
        200, 200,
      ]);
      expectLimited(await listMembers(app, org.id, key), 'apikey');

      const operatorEmail = 'operator@example.com';
      const operatorPassword = 'granite moss picnic tulip voyage';
      await createOperator(app, { email: operatorEmail, password: operatorPassword });
      const operator = await login(app, operatorEmail, operatorPassword);
      const upgrade = await app.inject({
        method: 'PATCH',
        url: `/api/v1/admin/orgs/${org.id}`,
        headers: bearer(operator.accessToken),
        payload: { plan: 'enterprise' },
      });
      expect(upgrade.statusCode).toBe(200);
      const after = await listMembers(app, org.id, key);
      expect(after.statusCode).toBe(200);
      expect(after.headers['ratelimit-policy']).toContain('50;w=60;name="apikey"');
    });

    it('exempts installation operators from the per-person limit', async () => {
      const app = await start({ user: { points: 1, durationSeconds: 60 } });
      const email = 'operator@example.com';
      const password = 'granite moss picnic tulip voyage';
      await createOperator(app, { email, password });
      const { accessToken } = await login(app, email, password);
      for (let i = 0; i < 5; i++) {
        const res = await app.inject({
          method: 'GET',
          url: '/api/v1/admin/orgs',
          headers: bearer(accessToken),
        });
        expect(res.statusCode).toBe(200);
      }
    });
  });

  it('limits expensive routes per caller more strictly, leaving the rest of the API alone', async () => {
    const reportModule: FastifyPluginAsync = async (api) => {
      api.get(
        '/test-report',
        { onRequest: api.authenticate, config: { routeClass: 'expensive' } },
        async () => ({
          ok: true,
        }),
      );
    };
    const app = await startTestApp(dialect, cleanups, {
      modules: [reportModule],
      env: { ...ENV, RATE_LIMITS_FILE: onlyThese({ expensive: { points: 2, durationSeconds: 60 } }) },
    });
    const ada = await signedInUser(app, 'ada@example.com');
    const report = (token: string) =>
      app.inject({ method: 'GET', url: '/api/v1/test-report', headers: bearer(token) });
    expect([await report(ada.accessToken), await report(ada.accessToken)].map(status)).toEqual([200, 200]);
    const refused = await report(ada.accessToken);
    expectLimited(refused, 'expensive');
    expect(refused.headers['ratelimit-policy']).toContain('2;w=60;name="expensive"');
    expect(
      status(await app.inject({ method: 'GET', url: '/api/v1/me', headers: bearer(ada.accessToken) })),
    ).toBe(200);
    const grace = await signedInUser(app, 'grace@example.com');
    expect(status(await report(grace.accessToken))).toBe(200);
  });

  describe('GET /orgs/{orgId}/usage', () => {
    it('shows the plan and each bucket’s consumption, to those holding usage:read only', async () => {
      const app = await start({
        org: { free: { points: 100, durationSeconds: 60 } },
        apikey: { free: { points: 10, durationSeconds: 60 } },
      });
      const owner = await signedInUser(app, 'owner@example.com');
      const org = await createOrg(app, owner.accessToken);
      const { id: keyId, key } = await createApiKey(app, owner.accessToken, org.id, {
        scopes: ['members:read'],
        name: 'ci',
      });
      for (let i = 0; i < 3; i++) expect(status(await listMembers(app, org.id, key))).toBe(200);

      const res = await app.inject({
        method: 'GET',
        url: `/api/v1/orgs/${org.id}/usage`,
        headers: bearer(owner.accessToken),
      });
      expect(res.statusCode).toBe(200);
      const usage = OrgUsage.parse(res.json());
      expect(usage.plan).toBe('free');
      const keyBucket = usage.buckets.find((b) => b.bucket === 'apikey');
      expect(keyBucket).toMatchObject({
        subject: { type: 'apikey', id: keyId, name: 'ci' },
        limit: 10,
        used: 3,
        remaining: 7,
      });
      const orgBucket = usage.buckets.find((b) => b.bucket === 'org');
      expect(orgBucket?.limit).toBe(100);
      // Three key requests, the key's creation and this request itself.
      expect(orgBucket?.used).toBe(5);
      expect(usage.buckets.find((b) => b.bucket === 'user')?.subject.id).toBe(owner.userId);

      const viewer = await addMember(app, owner.accessToken, org.id, 'viewer@example.com', 'viewer');
      const denied = await app.inject({
        method: 'GET',
        url: `/api/v1/orgs/${org.id}/usage`,
        headers: bearer(viewer.accessToken),
      });
      expectProblem(denied, 403, 'PERMISSION_DENIED');
      const stranger = await signedInUser(app, 'stranger@example.com');
      const hidden = await app.inject({
        method: 'GET',
        url: `/api/v1/orgs/${org.id}/usage`,
        headers: bearer(stranger.accessToken),
      });
      expectProblem(hidden, 404, 'ORG_NOT_FOUND');
      expectProblem(
        await app.inject({ method: 'GET', url: `/api/v1/orgs/${org.id}/usage` }),
        401,
        'UNAUTHENTICATED',
      );
    });
  });

  it('counts decisions in rate_limit_decisions_total by route class and bucket, never by caller', async () => {
    const app = await start({ anonymous: { points: 1, durationSeconds: 60 } });
    await anonymousGet(app);
    await anonymousGet(app);
    const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toMatch(
      /rate_limit_decisions_total\{route_class="standard",outcome="allowed",bucket=""\} 1/,
    );
    expect(metrics).toMatch(
      /rate_limit_decisions_total\{route_class="standard",outcome="limited",bucket="anonymous"\} 1/,
    );
    expect(metrics).not.toContain('203.0.113.7');
  });

  it('sends no rate-limit headers and refuses nothing with RATE_LIMITS_ENABLED=false', async () => {
    const app = await start(
      { anonymous: { points: 1, durationSeconds: 60 } },
      { RATE_LIMITS_ENABLED: 'false' },
    );
    for (let i = 0; i < 5; i++) {
      const res = await anonymousGet(app);
      expect(res.statusCode).toBe(200);
      expect(res.headers['ratelimit-limit']).toBeUndefined();
    }
  });
});

if (testRedisUrl) {
  const redisUrl = new URL(testRedisUrl);
  describe.each(testDialects)('rate limits across replicas on Redis (%s)', (dialect) => {
    /** Two replicas of one installation: one database, one Redis (through `redis`), the same secrets. */
    async function twoReplicas(
      redis: string,
      limits: Parameters<typeof onlyThese>[0],
    ): Promise<[PlinthApp, PlinthApp]> {
      const database = await createTestDatabase(dialect);
      cleanups.push(() => database.drop());
      const env = {
        ...ENV,
        REDIS_URL: redis,
        RATE_LIMITS_FILE: onlyThese(limits),
        ...installationSecrets(),
      };
      const a = await buildApp(testConfig(database, env));
      cleanups.push(() => a.close());
      const b = await buildApp(testConfig(database, env));
      cleanups.push(() => b.close());
      return [a, b];
    }

    it('shares one budget between two replicas: together they allow the limit, no more', async () => {
      const [a, b] = await twoReplicas(testRedisUrl as string, {
        anonymous: { points: 6, durationSeconds: 60 },
      });
      const answers = [];
      for (let i = 0; i < 10; i++) answers.push(status(await anonymousGet(i % 2 === 0 ? a : b)));
      expect(answers.filter((s) => s === 200)).toHaveLength(6);
      expect(answers.slice(6)).toEqual([429, 429, 429, 429]);
    });

    it('hands a refused request back to the organization on Redis too, without blocking it on the replica', async () => {
      const [a] = await twoReplicas(testRedisUrl as string, {
        user: { points: 2, durationSeconds: 60 },
        org: { default: { points: 2, durationSeconds: 60 }, free: { points: 2, durationSeconds: 60 } },
      });
      const owner = await signedInUser(a, 'owner@example.com');
      // The owner spends their two requests: creating the organization, and the invitation (the org's first).
      const org = await createOrg(a, owner.accessToken);
      const member = await addMember(a, owner.accessToken, org.id, 'member@example.com', 'member');
      // Refused by the owner's own limit: the organization's count reaches its limit, and is handed back.
      expectLimited(await listMembers(a, org.id, owner.accessToken), 'user');
      // So the organization still has one request left, which this replica must not refuse from memory.
      expect(status(await listMembers(a, org.id, member.accessToken))).toBe(200);
    });

    it('falls back to per-replica limits while Redis is unreachable, without a 5xx, and shares again once it is back', async () => {
      const proxy = new TcpProxy(redisUrl.hostname, Number(redisUrl.port || 6379));
      await proxy.start();
      cleanups.push(() => proxy.stop());
      const [a, b] = await twoReplicas(`redis://127.0.0.1:${proxy.port}`, {
        anonymous: { points: 3, durationSeconds: 60 },
      });
      // Shared: the budget of 3 is spent across both.
      const shared = [];
      for (let i = 0; i < 4; i++)
        shared.push(status(await anonymousGet(i % 2 === 0 ? a : b, {}, '203.0.113.50')));
      expect(shared).toEqual([200, 200, 200, 429]);

      await proxy.stop();
      // Each replica now limits by itself: a fresh address gets 3 on each, then 429 — never a 500, never unlimited.
      const alone = { a: [] as number[], b: [] as number[] };
      for (let i = 0; i < 4; i++) {
        alone.a.push(status(await anonymousGet(a, {}, '203.0.113.51')));
        alone.b.push(status(await anonymousGet(b, {}, '203.0.113.51')));
      }
      expect(alone.a).toEqual([200, 200, 200, 429]);
      expect(alone.b).toEqual([200, 200, 200, 429]);
      const ready = await a.inject({ method: 'GET', url: '/health/ready' });
      expect(ready.statusCode, ready.body).toBe(200);
      expect(ready.json<{ checks: Record<string, { status: string }> }>().checks.redis?.status).toBe(
        'degraded',
      );

      await proxy.start();
      const deadline = Date.now() + 15_000;
      const bothReady = async () =>
        (await Promise.all([a, b].map((app) => app.inject({ method: 'GET', url: '/health/ready' })))).every(
          (r) => r.json<{ checks: Record<string, { status: string }> }>().checks.redis?.status === 'ok',
        );
      while (!(await bothReady())) {
        if (Date.now() > deadline) throw new Error('the replicas did not reconnect to Redis within 15 s');
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      const again = [];
      for (let i = 0; i < 4; i++)
        again.push(status(await anonymousGet(i % 2 === 0 ? a : b, {}, '203.0.113.52')));
      expect(again).toEqual([200, 200, 200, 429]);
    }, 40_000);
  });
}
