import { randomUUID } from 'node:crypto';
import { Problem, SessionList, TokenPair } from '@plinth/shared';
import type { LightMyRequestResponse } from 'fastify';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { PlinthApp } from '../../app.ts';
import {
  bearer,
  cleanupAfterEach,
  createFakeClock,
  DAY,
  type FakeClock,
  loginWithPassword,
  me,
  PASSWORD,
  refresh,
  SECOND,
  signup,
  startTestApp,
} from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';

// Sessions as a client lives them: rotation with reuse detection, the grace window for concurrent refreshes,
// the sliding and absolute lifetimes, listing and ending sessions, and how unauthenticated calls are answered.

const START = '2030-03-04T09:00:00.000Z';

type Pair = z.infer<typeof TokenPair>;

const cleanups = cleanupAfterEach();

function startApp(dialect: (typeof testDialects)[number], clock: FakeClock): Promise<PlinthApp> {
  return startTestApp(dialect, cleanups, { clock, env: { REQUIRE_EMAIL_VERIFICATION: 'false' } });
}

const sessions = async (app: PlinthApp, accessToken: string) => {
  const res = await app.inject({ method: 'GET', url: '/api/v1/auth/sessions', headers: bearer(accessToken) });
  expect(res.statusCode).toBe(200);
  return SessionList.parse(res.json()).data;
};

/** The `sid` claim of an access token, read without verifying it (the server is what verifies). */
function sidOf(accessToken: string): string {
  const payload = accessToken.split('.')[1] ?? '';
  return z.object({ sid: z.string() }).parse(JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')))
    .sid;
}

/** Asserts an RFC 9457 problem with this status (and code, when given). */
function expectProblem(res: LightMyRequestResponse, status: number, code?: string): void {
  expect(res.statusCode).toBe(status);
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  const problem = Problem.parse(res.json());
  expect(problem.status).toBe(status);
  if (code) expect(problem.code).toBe(code);
}

describe.each(testDialects)('refresh-token rotation (%s)', (dialect) => {
  it('exchanges a refresh token for a new, different pair whose access token works', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    await signup(app, 'ada@example.com');
    const first = await loginWithPassword(app, 'ada@example.com');
    clock.advance(60 * SECOND);

    const res = await refresh(app, first.refreshToken);
    expect(res.statusCode).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    const second = TokenPair.parse(res.json());
    expect(second.refreshToken).not.toBe(first.refreshToken);
    expect(second.accessToken).not.toBe(first.accessToken);
    expect(second.tokenType).toBe('Bearer');
    expect(sidOf(second.accessToken)).toBe(sidOf(first.accessToken));
    expect((await me(app, second.accessToken)).statusCode).toBe(200);
    // The new refresh token rotates in turn.
    expect((await refresh(app, second.refreshToken)).statusCode).toBe(200);
  });

  it('answers a retry of the same refresh within the grace window with the same pair, not a new one', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    await signup(app, 'ada@example.com');
    const first = await loginWithPassword(app, 'ada@example.com');

    const original = await refresh(app, first.refreshToken);
    expect(original.statusCode).toBe(200);
    clock.advance(9 * SECOND);
    const retry = await refresh(app, first.refreshToken);
    expect(retry.statusCode).toBe(200);
    expect(TokenPair.parse(retry.json())).toEqual(TokenPair.parse(original.json()));
    expect((await me(app, first.accessToken)).statusCode).toBe(200);
  });

  it('refuses a spent refresh token after the grace window and ends the whole session (reuse detection)', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    await signup(app, 'ada@example.com');
    const first = await loginWithPassword(app, 'ada@example.com');
    const second = TokenPair.parse((await refresh(app, first.refreshToken)).json());
    const third = TokenPair.parse((await refresh(app, second.refreshToken)).json());
    expect((await me(app, third.accessToken)).statusCode).toBe(200);

    clock.advance(11 * SECOND);
    expectProblem(await refresh(app, first.refreshToken), 401, 'INVALID_REFRESH_TOKEN');

    // Whoever held the newest tokens — the client or a thief — is signed out too.
    expectProblem(await refresh(app, third.refreshToken), 401, 'INVALID_REFRESH_TOKEN');
    expectProblem(await me(app, third.accessToken), 401);
    expectProblem(await me(app, second.accessToken), 401);
  });

  it('leaves the other sessions of the user alone when one family is revoked for reuse', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    await signup(app, 'ada@example.com');
    const stolen = await loginWithPassword(app, 'ada@example.com');
    const other = await loginWithPassword(app, 'ada@example.com');
    await refresh(app, stolen.refreshToken);
    clock.advance(11 * SECOND);
    expectProblem(await refresh(app, stolen.refreshToken), 401, 'INVALID_REFRESH_TOKEN');

    expect((await me(app, other.accessToken)).statusCode).toBe(200);
    expect((await refresh(app, other.refreshToken)).statusCode).toBe(200);
  });

  it.each([2, 5])('gives %i concurrent refreshes of one token the very same new pair', async (count) => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    await signup(app, 'ada@example.com');
    const first = await loginWithPassword(app, 'ada@example.com');

    const responses = await Promise.all(
      Array.from({ length: count }, () => refresh(app, first.refreshToken)),
    );
    for (const res of responses) expect(res.statusCode).toBe(200);
    const pairs = responses.map((res) => TokenPair.parse(res.json()));
    for (const pair of pairs) expect(pair).toEqual(pairs[0]);
    expect(pairs[0]?.refreshToken).not.toBe(first.refreshToken);

    // One rotation happened, not several: the family holds the original token and one successor, and the
    // shared new pair works.
    const family = await app.database.db
      .selectFrom('refresh_tokens')
      .select('id')
      .where('session_id', '=', sidOf(first.accessToken))
      .execute();
    expect(family).toHaveLength(2);
    const shared = pairs[0] as Pair;
    expect((await me(app, shared.accessToken)).statusCode).toBe(200);
    expect((await refresh(app, shared.refreshToken)).statusCode).toBe(200);
  });

  it('refuses unknown and malformed refresh tokens', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    expectProblem(await refresh(app, 'x'.repeat(43)), 401, 'INVALID_REFRESH_TOKEN');
    expectProblem(await refresh(app, 'short'), 400, 'VALIDATION_FAILED');
    expectProblem(
      await app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: {} }),
      400,
      'VALIDATION_FAILED',
    );
  });
});

describe.each(testDialects)('ending sessions (%s)', (dialect) => {
  it('refuses the refresh and access tokens of a session after logout', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    await signup(app, 'ada@example.com');
    const pair = await loginWithPassword(app, 'ada@example.com');

    const res = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/logout',
      headers: bearer(pair.accessToken),
    });
    expect(res.statusCode).toBe(204);
    expectProblem(await refresh(app, pair.refreshToken), 401, 'INVALID_REFRESH_TOKEN');
    expectProblem(await me(app, pair.accessToken), 401, 'SESSION_REVOKED');
  });

  it('ends only the calling session on logout', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    await signup(app, 'ada@example.com');
    const leaving = await loginWithPassword(app, 'ada@example.com');
    const staying = await loginWithPassword(app, 'ada@example.com');

    await app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(leaving.accessToken) });
    expect((await me(app, staying.accessToken)).statusCode).toBe(200);
    expect((await refresh(app, staying.refreshToken)).statusCode).toBe(200);
  });

  it('ends every session of the user, and no one else’s, on logout-all', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    await signup(app, 'ada@example.com');
    await signup(app, 'grace@example.com');
    const laptop = await loginWithPassword(app, 'ada@example.com');
    const phone = await loginWithPassword(app, 'ada@example.com');
    const tablet = await loginWithPassword(app, 'ada@example.com');
    const someoneElse = await loginWithPassword(app, 'grace@example.com');

    const res = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/logout-all',
      headers: bearer(phone.accessToken),
    });
    expect(res.statusCode).toBe(204);
    for (const pair of [laptop, phone, tablet]) {
      expectProblem(await refresh(app, pair.refreshToken), 401, 'INVALID_REFRESH_TOKEN');
      expectProblem(await me(app, pair.accessToken), 401, 'SESSION_REVOKED');
    }
    expect((await me(app, someoneElse.accessToken)).statusCode).toBe(200);
    expect((await refresh(app, someoneElse.refreshToken)).statusCode).toBe(200);
  });
});

describe.each(testDialects)('session lifetimes (%s)', (dialect) => {
  it('ends a session left unused for longer than the refresh-token lifetime (7 days)', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    await signup(app, 'ada@example.com');
    const idle = await loginWithPassword(app, 'ada@example.com');
    const active = await loginWithPassword(app, 'ada@example.com');

    clock.advance(7 * DAY - SECOND);
    expect((await refresh(app, active.refreshToken)).statusCode).toBe(200);
    clock.advance(2 * SECOND);
    expectProblem(await refresh(app, idle.refreshToken), 401, 'INVALID_REFRESH_TOKEN');
  });

  it('slides: each refresh grants another 7 days from the time of the refresh', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    await signup(app, 'ada@example.com');
    let pair = await loginWithPassword(app, 'ada@example.com');
    for (let i = 0; i < 3; i++) {
      clock.advance(6 * DAY);
      const res = await refresh(app, pair.refreshToken);
      expect(res.statusCode).toBe(200);
      pair = TokenPair.parse(res.json());
    }
    // 18 days after sign-in, well past the 7 days of the first refresh token.
    clock.advance(7 * DAY + SECOND);
    expectProblem(await refresh(app, pair.refreshToken), 401, 'INVALID_REFRESH_TOKEN');
  });

  it('ends a session 30 days after sign-in however often it was refreshed (absolute lifetime)', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    await signup(app, 'ada@example.com');
    let pair = await loginWithPassword(app, 'ada@example.com');
    let previousDay = 0;
    for (const day of [6, 12, 18, 24, 29]) {
      clock.advance((day - previousDay) * DAY);
      previousDay = day;
      const res = await refresh(app, pair.refreshToken);
      expect(res.statusCode, `refresh on day ${day}`).toBe(200);
      pair = TokenPair.parse(res.json());
    }
    expect((await me(app, pair.accessToken)).statusCode).toBe(200);

    clock.advance(DAY + SECOND); // 30 days and 1 second after sign-in
    expectProblem(await refresh(app, pair.refreshToken), 401, 'INVALID_REFRESH_TOKEN');
    // A fresh sign-in starts a new 30 days.
    const again = await loginWithPassword(app, 'ada@example.com');
    expect((await refresh(app, again.refreshToken)).statusCode).toBe(200);
  });

  it('expires access tokens after ACCESS_TOKEN_TTL_SECONDS while the session lives on', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    await signup(app, 'ada@example.com');
    const pair = await loginWithPassword(app, 'ada@example.com');
    expect(pair.expiresIn).toBe(900);
    clock.advance((900 + 60) * SECOND);
    expectProblem(await me(app, pair.accessToken), 401, 'INVALID_TOKEN');
    const renewed = TokenPair.parse((await refresh(app, pair.refreshToken)).json());
    expect((await me(app, renewed.accessToken)).statusCode).toBe(200);
  });
});

describe.each(testDialects)('listing and revoking sessions (%s)', (dialect) => {
  it('lists live sessions newest first with their client, times and the caller marked current', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    await signup(app, 'ada@example.com');
    const laptop = await loginWithPassword(app, 'ada@example.com', {
      userAgent: 'Laptop/1.0',
      remoteAddress: '203.0.113.7',
    });
    const laptopAt = clock.now().toISOString();
    clock.advance(60 * SECOND);
    const phone = await loginWithPassword(app, 'ada@example.com', {
      userAgent: 'Phone/2.0',
      remoteAddress: '198.51.100.23',
    });
    const phoneAt = clock.now().toISOString();
    clock.advance(60 * SECOND);
    const ended = await loginWithPassword(app, 'ada@example.com', {
      userAgent: 'Kiosk/3.0',
      remoteAddress: '192.0.2.1',
    });
    await app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(ended.accessToken) });
    clock.advance(60 * SECOND);
    await refresh(app, laptop.refreshToken);
    const laptopUsedAt = clock.now().toISOString();

    const list = await sessions(app, phone.accessToken);
    expect(list).toEqual([
      {
        id: sidOf(phone.accessToken),
        userAgent: 'Phone/2.0',
        ip: '198.51.100.23',
        createdAt: phoneAt,
        lastUsedAt: phoneAt,
        current: true,
      },
      {
        id: sidOf(laptop.accessToken),
        userAgent: 'Laptop/1.0',
        ip: '203.0.113.7',
        createdAt: laptopAt,
        lastUsedAt: laptopUsedAt,
        current: false,
      },
    ]);
    // Seen from the other session, the marks swap.
    const fromLaptop = await sessions(app, laptop.accessToken);
    expect(fromLaptop.map((s) => [s.id, s.current])).toEqual([
      [sidOf(phone.accessToken), false],
      [sidOf(laptop.accessToken), true],
    ]);
  });

  it('lists only the caller’s own sessions', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    await signup(app, 'ada@example.com');
    await signup(app, 'grace@example.com');
    const ada = await loginWithPassword(app, 'ada@example.com');
    await loginWithPassword(app, 'grace@example.com');
    expect((await sessions(app, ada.accessToken)).map((s) => s.id)).toEqual([sidOf(ada.accessToken)]);
  });

  it('ends another of the caller’s sessions at once: its access token and refresh token stop working', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    await signup(app, 'ada@example.com');
    const mine = await loginWithPassword(app, 'ada@example.com');
    const lost = await loginWithPassword(app, 'ada@example.com');
    expect((await me(app, lost.accessToken)).statusCode).toBe(200);

    const res = await app.inject({
      method: 'DELETE',
      url: `/api/v1/auth/sessions/${sidOf(lost.accessToken)}`,
      headers: bearer(mine.accessToken),
    });
    expect(res.statusCode).toBe(204);
    expectProblem(await me(app, lost.accessToken), 401, 'SESSION_REVOKED');
    expectProblem(await refresh(app, lost.refreshToken), 401, 'INVALID_REFRESH_TOKEN');
    expect((await me(app, mine.accessToken)).statusCode).toBe(200);
    expect((await sessions(app, mine.accessToken)).map((s) => s.id)).toEqual([sidOf(mine.accessToken)]);
  });

  it('answers 404 for another user’s session and leaves it working', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    await signup(app, 'ada@example.com');
    await signup(app, 'mallory@example.com');
    const victim = await loginWithPassword(app, 'ada@example.com');
    const attacker = await loginWithPassword(app, 'mallory@example.com');

    const res = await app.inject({
      method: 'DELETE',
      url: `/api/v1/auth/sessions/${sidOf(victim.accessToken)}`,
      headers: bearer(attacker.accessToken),
    });
    expectProblem(res, 404, 'SESSION_NOT_FOUND');
    expect((await me(app, victim.accessToken)).statusCode).toBe(200);
    expect((await refresh(app, victim.refreshToken)).statusCode).toBe(200);
  });

  it('answers 404 for an unknown or already-ended session id and 400 for a malformed one', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    await signup(app, 'ada@example.com');
    const mine = await loginWithPassword(app, 'ada@example.com');
    const ended = await loginWithPassword(app, 'ada@example.com');
    await app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(ended.accessToken) });
    const del = (id: string) =>
      app.inject({ method: 'DELETE', url: `/api/v1/auth/sessions/${id}`, headers: bearer(mine.accessToken) });

    expectProblem(await del(randomUUID()), 404, 'SESSION_NOT_FOUND');
    expectProblem(await del(sidOf(ended.accessToken)), 404, 'SESSION_NOT_FOUND');
    expectProblem(await del('not-a-session-id'), 400, 'VALIDATION_FAILED');
    expectProblem(await del("1' or '1'='1"), 400, 'VALIDATION_FAILED');
    expect((await me(app, mine.accessToken)).statusCode).toBe(200);
  });
});

describe.each(testDialects)('authenticated responses (%s)', (dialect) => {
  it('marks authenticated responses and token responses Cache-Control: no-store', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    await signup(app, 'ada@example.com');
    const loginRes = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      payload: { email: 'ada@example.com', password: PASSWORD },
    });
    expect(loginRes.statusCode).toBe(200);
    expect(loginRes.headers['cache-control']).toBe('no-store');
    const pair = TokenPair.parse(loginRes.json());

    const meRes = await me(app, pair.accessToken);
    expect(meRes.statusCode).toBe(200);
    expect(meRes.headers['cache-control']).toBe('no-store');
    const listRes = await app.inject({
      method: 'GET',
      url: '/api/v1/auth/sessions',
      headers: bearer(pair.accessToken),
    });
    expect(listRes.statusCode).toBe(200);
    expect(listRes.headers['cache-control']).toBe('no-store');
    // Refusals of authenticated routes are not cached either.
    expect((await me(app, 'garbage')).headers['cache-control']).toBe('no-store');
  });

  it('answers every bearer-protected route without a token with 401 and WWW-Authenticate: Bearer', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    const doc = z
      .object({ paths: z.record(z.string(), z.record(z.string(), z.unknown())) })
      .parse((await app.inject({ method: 'GET', url: '/openapi.json' })).json());
    const Operation = z.object({ security: z.array(z.record(z.string(), z.unknown())).optional() });

    const protectedRoutes: { method: string; url: string }[] = [];
    for (const [path, operations] of Object.entries(doc.paths)) {
      for (const [method, operation] of Object.entries(operations)) {
        const parsed = Operation.safeParse(operation);
        if (!parsed.success || !parsed.data.security?.some((s) => 'bearerAuth' in s)) continue;
        // `{}` among the requirements: signing in is optional there (accepting an invitation).
        if (parsed.data.security.some((s) => Object.keys(s).length === 0)) continue;
        protectedRoutes.push({ method: method.toUpperCase(), url: path.replace(/\{[^}]+\}/g, randomUUID()) });
      }
    }
    // The routes this file is about must be among them; the check then covers whatever else is protected.
    const listed = protectedRoutes.map((r) => `${r.method} ${r.url.replace(/[0-9a-f-]{36}/g, '{id}')}`);
    for (const route of [
      'GET /api/v1/me',
      'POST /api/v1/auth/logout',
      'POST /api/v1/auth/logout-all',
      'GET /api/v1/auth/sessions',
      'DELETE /api/v1/auth/sessions/{id}',
      'POST /api/v1/auth/mfa/totp/enroll',
    ]) {
      expect(listed).toContain(route);
    }

    for (const route of protectedRoutes) {
      // An empty (invalid) body where one is expected: authentication is decided before validation.
      const withBody = ['POST', 'PUT', 'PATCH'].includes(route.method);
      const method = z.enum(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']).parse(route.method);
      const res = await app.inject({ method, url: route.url, ...(withBody ? { payload: {} } : {}) });
      expect(res.statusCode, `${route.method} ${route.url}`).toBe(401);
      expect(res.headers['www-authenticate'], `${route.method} ${route.url}`).toMatch(/^Bearer\b/);
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    }
  });
});
