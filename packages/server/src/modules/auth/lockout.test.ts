import { afterEach, describe, expect, it } from 'vitest';
import type { PlinthApp } from '../../app.ts';
import {
  bearer,
  createFakeClock,
  createOperator,
  type FakeClock,
  findUser,
  login,
  loginResponse,
  SECOND,
  STRONG_PASSWORDS,
  signupAndVerify,
  withoutRequestId,
} from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { buildTestApp } from '../../test/harness.ts';

const [PASSWORD = '', WRONG = '', ADMIN_PASSWORD = ''] = STRONG_PASSWORDS;
const ADA = { email: 'ada@example.com', password: PASSWORD, name: 'Ada Lovelace' };
const ADMIN = { email: 'operator@example.com', password: ADMIN_PASSWORD };

describe.each(testDialects)('sign-in lockout on %s', (dialect) => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  /** An app on a fake clock with Ada signed up and verified. */
  async function start(): Promise<{ app: PlinthApp; clock: FakeClock; userId: string }> {
    const clock = createFakeClock();
    const app = await buildTestApp(dialect, { clock });
    cleanups.push(() => app.close());
    const { userId } = await signupAndVerify(app, ADA);
    return { app, clock, userId };
  }

  /** `count` wrong passwords for `email`, each of which must answer 401. */
  async function fail(app: PlinthApp, email: string, count: number, remoteAddress?: string): Promise<void> {
    for (let i = 0; i < count; i += 1) {
      const response = await loginResponse(
        app,
        email,
        WRONG,
        remoteAddress === undefined ? {} : { remoteAddress },
      );
      expect(response.statusCode, `failure ${i + 1} for ${email}`).toBe(401);
    }
  }

  async function adminToken(app: PlinthApp): Promise<string> {
    await createOperator(app, ADMIN);
    return (await login(app, ADMIN.email, ADMIN.password)).accessToken;
  }

  const adminAction = (
    app: PlinthApp,
    action: 'unlock' | 'disable' | 'enable',
    userId: string,
    accessToken?: string,
  ) =>
    app.inject({
      method: 'POST',
      url: `/api/v1/admin/users/${userId}/${action}`,
      ...(accessToken === undefined ? {} : { headers: bearer(accessToken) }),
    });

  it('locks the account for 60 s after 5 failures, even against the right password, with Retry-After', async () => {
    const { app, clock } = await start();
    await fail(app, ADA.email, 5);

    const locked = await loginResponse(app, ADA.email, PASSWORD);

    expect(locked.statusCode).toBe(423);
    expect(locked.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(locked.headers['retry-after']).toBe('60');
    expect(locked.json()).toMatchObject({
      status: 423,
      code: 'ACCOUNT_LOCKED',
      requestId: expect.any(String),
    });
    // The lock holds from any address.
    expect(
      (await loginResponse(app, ADA.email, PASSWORD, { remoteAddress: '198.51.100.1' })).statusCode,
    ).toBe(423);

    clock.advance(59 * SECOND);
    const stillLocked = await loginResponse(app, ADA.email, PASSWORD);
    expect(stillLocked.statusCode).toBe(423);
    expect(stillLocked.headers['retry-after']).toBe('1');

    clock.advance(2 * SECOND);
    expect((await loginResponse(app, ADA.email, PASSWORD)).statusCode).toBe(200);
  });

  it('doubles the lock with each further lockout, up to 15 minutes, and a success starts over', async () => {
    const { app, clock } = await start();

    // No successful sign-in between the lockouts. Each round comes from its own address, so the per-IP limit
    // (which would otherwise engage after 20 failures) stays out of the way.
    for (const [round, seconds] of [60, 120, 240, 480, 900, 900].entries()) {
      const remoteAddress = `192.0.2.${round + 1}`;
      await fail(app, ADA.email, 5, remoteAddress);
      const locked = await loginResponse(app, ADA.email, PASSWORD, { remoteAddress });
      expect(locked.statusCode, `round ${round + 1}`).toBe(423);
      expect(locked.headers['retry-after'], `round ${round + 1}`).toBe(String(seconds));
      clock.advance((seconds + 1) * SECOND);
    }

    expect((await loginResponse(app, ADA.email, PASSWORD, { remoteAddress: '192.0.2.50' })).statusCode).toBe(
      200,
    );
    await fail(app, ADA.email, 5, '192.0.2.51');
    expect(
      (await loginResponse(app, ADA.email, PASSWORD, { remoteAddress: '192.0.2.51' })).headers['retry-after'],
    ).toBe('60');
  });

  it('lets no more than 100 failures per hour reach an account, even from a different address each time', async () => {
    const { app, clock } = await start();
    const startedAt = clock.now().getTime();
    let failures = 0;
    let attempt = 0;

    while (clock.now().getTime() - startedAt < 3600 * SECOND) {
      attempt += 1;
      const response = await loginResponse(app, ADA.email, WRONG, {
        remoteAddress: `10.${attempt >> 16}.${(attempt >> 8) & 255}.${attempt & 255}`,
      });
      if (response.statusCode === 401) failures += 1;
      else {
        expect(response.statusCode).toBe(423);
        clock.advance(Number(response.headers['retry-after']) * SECOND);
      }
    }

    // ASVS 6.3.1 allows at most 100; with the defaults (5, then locks of 1, 2, 4, 8, 15, 15… minutes) it is far fewer.
    expect(failures).toBeLessThanOrEqual(100);
    expect(failures).toBeGreaterThanOrEqual(25);
  });

  it('a successful sign-in resets the failure count', async () => {
    const { app } = await start();

    await fail(app, ADA.email, 4);
    expect((await loginResponse(app, ADA.email, PASSWORD)).statusCode).toBe(200);
    const throttles = await app.database.db.selectFrom('login_throttles').select('key').execute();
    expect(throttles.map((t) => t.key)).not.toContain('email:ada@example.com');

    await fail(app, ADA.email, 4);
    expect((await loginResponse(app, ADA.email, PASSWORD)).statusCode).toBe(200);
  });

  it('counts failures per address whatever its spelling', async () => {
    const { app } = await start();
    for (const spelling of [
      'ADA@example.com',
      ' ada@EXAMPLE.com',
      'ＡＤＡ@example.com',
      'Ada@Example.Com',
      'ada@example.com',
    ]) {
      expect((await loginResponse(app, spelling, WRONG)).statusCode).toBe(401);
    }
    expect((await loginResponse(app, ADA.email, PASSWORD)).statusCode).toBe(423);
  });

  it('treats an unknown address exactly like a registered one: same failures, same lock', async () => {
    const { app } = await start();
    const unknown = 'nobody@example.com';
    const compare = (
      known: Awaited<ReturnType<typeof loginResponse>>,
      other: Awaited<ReturnType<typeof loginResponse>>,
    ) => {
      expect(other.statusCode).toBe(known.statusCode);
      expect(withoutRequestId(other.body)).toEqual(withoutRequestId(known.body));
      expect(other.headers['content-type']).toBe(known.headers['content-type']);
      expect(other.headers['retry-after']).toBe(known.headers['retry-after']);
      expect(Object.keys(other.headers).sort()).toEqual(Object.keys(known.headers).sort());
    };

    for (let i = 0; i < 5; i += 1) {
      const known = await loginResponse(app, ADA.email, WRONG);
      const other = await loginResponse(app, unknown, WRONG);
      expect(known.statusCode).toBe(401);
      expect(known.json()).toMatchObject({ code: 'INVALID_CREDENTIALS' });
      compare(known, other);
    }

    const knownLocked = await loginResponse(app, ADA.email, PASSWORD);
    const unknownLocked = await loginResponse(app, unknown, PASSWORD);
    expect(knownLocked.statusCode).toBe(423);
    expect(knownLocked.headers['retry-after']).toBe('60');
    compare(knownLocked, unknownLocked);
  });

  it('locks a client address after 20 failures across accounts (429), and leaves other addresses alone', async () => {
    const { app } = await start();
    const attacker = '203.0.113.7';
    for (let i = 0; i < 20; i += 1) await fail(app, `victim${i}@example.com`, 1, attacker);

    const blocked = await loginResponse(app, ADA.email, PASSWORD, { remoteAddress: attacker });

    expect(blocked.statusCode).toBe(429);
    expect(blocked.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(blocked.headers['retry-after']).toBe('60');
    expect(blocked.json()).toMatchObject({ code: 'TOO_MANY_ATTEMPTS' });
    expect(
      (await loginResponse(app, 'victim0@example.com', WRONG, { remoteAddress: attacker })).statusCode,
    ).toBe(429);
    // The accounts themselves are not locked: the owner signs in from elsewhere.
    expect(
      (await loginResponse(app, ADA.email, PASSWORD, { remoteAddress: '198.51.100.9' })).statusCode,
    ).toBe(200);
  });

  it('locks the account when ten wrong passwords arrive at once', async () => {
    const { app } = await start();

    const responses = await Promise.all(
      Array.from({ length: 10 }, () => loginResponse(app, ADA.email, WRONG)),
    );

    for (const response of responses) expect([401, 423]).toContain(response.statusCode);
    const throttle = await app.database.db
      .selectFrom('login_throttles')
      .selectAll()
      .where('key', '=', 'email:ada@example.com')
      .executeTakeFirstOrThrow();
    expect(throttle.locks).toBeGreaterThanOrEqual(1);
    expect((await loginResponse(app, ADA.email, PASSWORD)).statusCode).toBe(423);
  });

  describe('operator actions', () => {
    it('a superadmin unlocks a locked account', async () => {
      const { app, userId } = await start();
      const admin = await adminToken(app);
      await fail(app, ADA.email, 5);
      expect((await loginResponse(app, ADA.email, PASSWORD)).statusCode).toBe(423);

      const response = await adminAction(app, 'unlock', userId, admin);

      expect(response.statusCode).toBe(204);
      expect((await loginResponse(app, ADA.email, PASSWORD)).statusCode).toBe(200);
    });

    it('only a superadmin may unlock, disable or enable an account', async () => {
      const { app, userId } = await start();
      const bob = await signupAndVerify(app, {
        email: 'bob@example.com',
        password: ADMIN_PASSWORD,
        name: 'Bob',
      });
      const bobToken = (await login(app, 'bob@example.com', ADMIN_PASSWORD)).accessToken;
      await fail(app, ADA.email, 5);

      for (const action of ['unlock', 'disable', 'enable'] as const) {
        const forbidden = await adminAction(app, action, userId, bobToken);
        expect(forbidden.statusCode, action).toBe(403);
        expect(forbidden.json(), action).toMatchObject({ code: 'FORBIDDEN' });
        expect((await adminAction(app, action, userId)).statusCode, action).toBe(401);
        // Not even on their own account.
        expect((await adminAction(app, action, bob.userId, bobToken)).statusCode, action).toBe(403);
      }
      expect((await loginResponse(app, ADA.email, PASSWORD)).statusCode).toBe(423);
      expect((await findUser(app, ADA.email))?.disabled_at).toBeNull();
      expect((await findUser(app, 'bob@example.com'))?.platform_role).toBeNull();
    });

    it('answers 404 for an unknown user and 400 for a malformed id', async () => {
      const { app } = await start();
      const admin = await adminToken(app);

      const unknown = await adminAction(app, 'unlock', '01234567-89ab-7def-8123-456789abcdef', admin);
      expect(unknown.statusCode).toBe(404);
      expect(unknown.json()).toMatchObject({ code: 'USER_NOT_FOUND' });
      expect((await adminAction(app, 'disable', 'not-a-uuid', admin)).statusCode).toBe(400);
    });

    it("disabling ends the user's sessions at once and refuses sign-in; enabling lets them back", async () => {
      const { app, userId } = await start();
      const admin = await adminToken(app);
      const session = await login(app, ADA.email, PASSWORD);
      expect(
        (await app.inject({ method: 'GET', url: '/api/v1/me', headers: bearer(session.accessToken) }))
          .statusCode,
      ).toBe(200);

      expect((await adminAction(app, 'disable', userId, admin)).statusCode).toBe(204);

      const me = await app.inject({ method: 'GET', url: '/api/v1/me', headers: bearer(session.accessToken) });
      expect(me.statusCode).toBe(401);
      const refreshed = await app.inject({
        method: 'POST',
        url: '/api/v1/auth/refresh',
        payload: { refreshToken: session.refreshToken },
      });
      expect(refreshed.statusCode).toBe(401);
      const disabled = await loginResponse(app, ADA.email, PASSWORD);
      expect(disabled.statusCode).toBe(403);
      expect(disabled.json()).toMatchObject({ code: 'ACCOUNT_DISABLED' });
      // Only the right password learns that the account is disabled.
      expect((await loginResponse(app, ADA.email, WRONG)).json()).toMatchObject({
        code: 'INVALID_CREDENTIALS',
      });
      const sessions = await app.database.db
        .selectFrom('sessions')
        .select('revoked_reason')
        .where('user_id', '=', userId)
        .execute();
      expect(sessions).toEqual([{ revoked_reason: 'account_disabled' }]);

      expect((await adminAction(app, 'enable', userId, admin)).statusCode).toBe(204);

      const again = await login(app, ADA.email, PASSWORD);
      expect(
        (await app.inject({ method: 'GET', url: '/api/v1/me', headers: bearer(again.accessToken) }))
          .statusCode,
      ).toBe(200);
      // The old session stays over.
      expect(
        (await app.inject({ method: 'GET', url: '/api/v1/me', headers: bearer(session.accessToken) }))
          .statusCode,
      ).toBe(401);
    });
  });
});
