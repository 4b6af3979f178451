import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { buildApp, type PlinthApp } from '../../app.ts';
import {
  bearer,
  cleanupAfterEach,
  createFakeClock,
  DAY,
  findUser,
  latestOutboxMail,
  linkFromMail,
  login,
  loginResponse,
  MAIL_SUBJECT,
  MINUTE,
  me,
  outboxMails,
  refresh,
  SECOND,
  STRONG_PASSWORDS,
  settleBackgroundWork,
  signupAndVerify,
  startTestApp,
  tokenFromLink,
} from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { createTestDatabase, type TestAppOptions, testConfig } from '../../test/harness.ts';

const [P0 = '', P1 = '', P2 = '', P3 = '', P4 = '', P5 = '', P6 = ''] = STRONG_PASSWORDS;
const ADA = { email: 'ada@example.com', password: P0, name: 'Ada Lovelace' };

describe.each(testDialects)('passwords on %s', (dialect) => {
  const cleanups = cleanupAfterEach();

  const start = (options: TestAppOptions = {}): Promise<PlinthApp> =>
    startTestApp(dialect, cleanups, options);

  const changePassword = (
    app: PlinthApp,
    accessToken: string,
    currentPassword: string,
    newPassword: string,
  ) =>
    app.inject({
      method: 'POST',
      url: '/api/v1/auth/password/change',
      headers: bearer(accessToken),
      payload: { currentPassword, newPassword },
    });
  const forgot = (app: PlinthApp, email: string) =>
    app.inject({ method: 'POST', url: '/api/v1/auth/password/forgot', payload: { email } });
  const reset = (app: PlinthApp, token: string, password: string) =>
    app.inject({ method: 'POST', url: '/api/v1/auth/password/reset', payload: { token, password } });

  /** Asks for a reset link and returns its token (the `minCount`-th reset mail to the address). */
  async function resetToken(app: PlinthApp, email: string, minCount = 1): Promise<string> {
    expect((await forgot(app, email)).statusCode).toBe(202);
    return tokenFromLink(
      linkFromMail(await latestOutboxMail(app, email, { subject: MAIL_SUBJECT.resetPassword, minCount })),
    );
  }

  const historyOf = (app: PlinthApp, userId: string) =>
    app.database.db
      .selectFrom('password_history')
      .select(['password_hash', 'created_at'])
      .where('user_id', '=', userId)
      .execute();
  const sessionsOf = (app: PlinthApp, userId: string) =>
    app.database.db
      .selectFrom('sessions')
      .select(['id', 'revoked_at', 'revoked_reason'])
      .where('user_id', '=', userId)
      .execute();

  describe('POST /auth/password/change', () => {
    it('refuses a wrong current password with 403 WRONG_PASSWORD and changes nothing', async () => {
      const app = await start();
      const { userId } = await signupAndVerify(app, ADA);
      const mine = await login(app, ADA.email, P0);
      const other = await login(app, ADA.email, P0);
      const before = await findUser(app, ADA.email);
      const historyBefore = await historyOf(app, userId);

      const response = await changePassword(app, mine.accessToken, P6, P1);

      expect(response.statusCode).toBe(403);
      expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(response.json()).toMatchObject({ code: 'WRONG_PASSWORD' });
      expect(await findUser(app, ADA.email)).toEqual(before);
      expect(await historyOf(app, userId)).toEqual(historyBefore);
      expect((await sessionsOf(app, userId)).every((s) => s.revoked_at === null)).toBe(true);
      expect((await me(app, other.accessToken)).statusCode).toBe(200);
      expect((await loginResponse(app, ADA.email, P1)).statusCode).toBe(401);
      await settleBackgroundWork();
      expect((await outboxMails(app, ADA.email)).map((m) => m.subject)).not.toContain(
        MAIL_SUBJECT.passwordChanged,
      );
    });

    it("changes the password, ends every other session at once and keeps the caller's", async () => {
      const app = await start();
      const { userId } = await signupAndVerify(app, ADA);
      const mine = await login(app, ADA.email, P0);
      const other = await login(app, ADA.email, P0, { remoteAddress: '198.51.100.20' });

      const response = await changePassword(app, mine.accessToken, P0, P1);

      expect(response.statusCode).toBe(204);
      // The other session is over: its access token is refused before it expires, and it cannot refresh.
      const otherMe = await me(app, other.accessToken);
      expect(otherMe.statusCode).toBe(401);
      expect(otherMe.json()).toMatchObject({ code: 'SESSION_REVOKED' });
      expect((await refresh(app, other.refreshToken)).statusCode).toBe(401);
      // The caller's session goes on.
      expect((await me(app, mine.accessToken)).statusCode).toBe(200);
      const refreshed = await refresh(app, mine.refreshToken);
      expect(refreshed.statusCode).toBe(200);
      expect((await me(app, refreshed.json<{ accessToken: string }>().accessToken)).statusCode).toBe(200);

      const sessions = await sessionsOf(app, userId);
      expect(sessions.filter((s) => s.revoked_at !== null).map((s) => s.revoked_reason)).toEqual([
        'password_changed',
      ]);
      expect((await loginResponse(app, ADA.email, P0)).statusCode).toBe(401);
      expect((await loginResponse(app, ADA.email, P1)).statusCode).toBe(200);
      const notice = await latestOutboxMail(app, ADA.email, { subject: MAIL_SUBJECT.passwordChanged });
      expect(notice.text_body).not.toContain(P1);
    });

    it('counts wrong current passwords towards the lockout, so a stolen session cannot guess the password here', async () => {
      const app = await start();
      await signupAndVerify(app, ADA);
      const { accessToken } = await login(app, ADA.email, P0);

      for (let i = 0; i < 5; i += 1) {
        expect((await changePassword(app, accessToken, P6, P1)).json()).toMatchObject({
          code: 'WRONG_PASSWORD',
        });
      }

      const locked = await changePassword(app, accessToken, P0, P1);
      expect(locked.statusCode).toBe(423);
      expect(locked.json()).toMatchObject({ code: 'ACCOUNT_LOCKED' });
      expect((await loginResponse(app, ADA.email, P0)).statusCode).toBe(423);
      expect((await loginResponse(app, ADA.email, P1)).statusCode).toBe(423);
    });

    it('applies the password policy to the new password', async () => {
      const app = await start();
      await signupAndVerify(app, ADA);
      const { accessToken } = await login(app, ADA.email, P0);
      const hashBefore = (await findUser(app, ADA.email))?.password_hash;

      const short = await changePassword(app, accessToken, P0, 'Xq7#pL9!vR2$kM');
      expect(short.statusCode).toBe(400);
      expect(short.json()).toMatchObject({
        code: 'PASSWORD_TOO_WEAK',
        detail: expect.stringMatching(/at least 15 characters/),
        errors: [expect.objectContaining({ path: 'body.newPassword' })],
      });
      const personal = await changePassword(app, accessToken, P0, 'lovelace ada 1815 engine notes');
      expect(personal.statusCode).toBe(400);
      expect(personal.json()).toMatchObject({
        code: 'PASSWORD_TOO_WEAK',
        detail: expect.stringMatching(/name and email/),
      });
      const tooLong = await changePassword(app, accessToken, P0, 'x'.repeat(257));
      expect(tooLong.statusCode).toBe(400);
      expect(tooLong.json()).toMatchObject({ code: 'VALIDATION_FAILED' });
      expect((await findUser(app, ADA.email))?.password_hash).toBe(hashBefore);
    });

    it('needs a signed-in caller', async () => {
      const app = await start();
      const response = await app.inject({
        method: 'POST',
        url: '/api/v1/auth/password/change',
        payload: { currentPassword: P0, newPassword: P1 },
      });
      expect(response.statusCode).toBe(401);
    });

    it('refuses any of the last five passwords with 400 PASSWORD_REUSED, and allows the sixth-oldest', async () => {
      const clock = createFakeClock();
      const app = await start({ clock });
      const { userId } = await signupAndVerify(app, ADA);
      const { accessToken } = await login(app, ADA.email, P0);
      let current = P0;
      for (const next of [P1, P2, P3, P4, P5]) {
        clock.advance(SECOND);
        expect((await changePassword(app, accessToken, current, next)).statusCode).toBe(204);
        current = next;
      }
      expect(await historyOf(app, userId)).toHaveLength(6);
      const hashBefore = (await findUser(app, ADA.email))?.password_hash;

      for (const recent of [P5, P4, P3, P2, P1]) {
        const response = await changePassword(app, accessToken, P5, recent);
        expect(response.statusCode).toBe(400);
        expect(response.json()).toMatchObject({
          code: 'PASSWORD_REUSED',
          detail: expect.stringContaining('5'),
        });
      }
      expect((await findUser(app, ADA.email))?.password_hash).toBe(hashBefore);

      // P0 is now the sixth-newest: no longer remembered.
      expect((await changePassword(app, accessToken, P5, P0)).statusCode).toBe(204);
      expect((await loginResponse(app, ADA.email, P0)).statusCode).toBe(200);
    });

    it('follows PASSWORD_HISTORY', async () => {
      const app = await start({ env: { PASSWORD_HISTORY: '1' } });
      await signupAndVerify(app, ADA);
      const { accessToken } = await login(app, ADA.email, P0);
      expect((await changePassword(app, accessToken, P0, P1)).statusCode).toBe(204);

      expect((await changePassword(app, accessToken, P1, P1)).json()).toMatchObject({
        code: 'PASSWORD_REUSED',
      });
      expect((await changePassword(app, accessToken, P1, P0)).statusCode).toBe(204);
    });
  });

  describe('POST /auth/password/forgot', () => {
    it('answers a known and an unknown address identically, and mails only the known one', async () => {
      const app = await start();
      const { userId } = await signupAndVerify(app, ADA);

      const unknown = await forgot(app, 'nobody@example.com');
      const known = await forgot(app, ADA.email);

      expect(known.statusCode).toBe(202);
      expect(unknown.statusCode).toBe(known.statusCode);
      expect(unknown.body).toBe(known.body);
      expect(known.json()).toEqual({ message: expect.any(String) });
      const headerNames = (r: typeof known) =>
        Object.keys(r.headers)
          .filter((h) => h !== 'x-request-id')
          .sort();
      expect(headerNames(unknown)).toEqual(headerNames(known));
      expect(unknown.headers['content-type']).toBe(known.headers['content-type']);
      expect(unknown.headers['content-length']).toBe(known.headers['content-length']);

      const mail = await latestOutboxMail(app, ADA.email, { subject: MAIL_SUBJECT.resetPassword });
      expect(linkFromMail(mail).startsWith(`${app.config.publicUrl}/reset-password#token=`)).toBe(true);
      await settleBackgroundWork();
      expect(await outboxMails(app, 'nobody@example.com')).toEqual([]);
      const tokens = await app.database.db
        .selectFrom('one_time_tokens')
        .select(['user_id', 'purpose'])
        .where('purpose', '=', 'reset_password')
        .execute();
      expect(tokens).toEqual([{ user_id: userId, purpose: 'reset_password' }]);
    });

    it('refuses a malformed address with 400, like every endpoint', async () => {
      const app = await start();
      const response = await forgot(app, 'not an address');
      expect(response.statusCode).toBe(400);
      expect(response.json()).toMatchObject({ code: 'VALIDATION_FAILED' });
    });
  });

  describe('POST /auth/password/reset', () => {
    it('sets the new password once, ends every session and keeps the token hashed at rest', async () => {
      const app = await start();
      const { userId } = await signupAndVerify(app, ADA);
      const session = await login(app, ADA.email, P0);
      const token = await resetToken(app, ADA.email);
      expect(
        JSON.stringify(await app.database.db.selectFrom('one_time_tokens').selectAll().execute()),
      ).not.toContain(token);

      const response = await reset(app, token, P1);

      expect(response.statusCode).toBe(204);
      expect((await me(app, session.accessToken)).statusCode).toBe(401);
      expect((await refresh(app, session.refreshToken)).statusCode).toBe(401);
      expect((await sessionsOf(app, userId)).map((s) => s.revoked_reason)).toEqual(['password_reset']);
      expect((await loginResponse(app, ADA.email, P0)).statusCode).toBe(401);
      expect((await loginResponse(app, ADA.email, P1)).statusCode).toBe(200);
      await latestOutboxMail(app, ADA.email, { subject: MAIL_SUBJECT.passwordChanged });

      const again = await reset(app, token, P2);
      expect(again.statusCode).toBe(400);
      expect(again.json()).toMatchObject({ code: 'INVALID_ONE_TIME_TOKEN' });
      expect((await loginResponse(app, ADA.email, P1)).statusCode).toBe(200);
    });

    it('a reset link expires after 30 minutes', async () => {
      const clock = createFakeClock();
      const app = await start({ clock });
      await signupAndVerify(app, ADA);
      await signupAndVerify(app, { email: 'bob@example.com', password: P0, name: 'Bob' });
      const stale = await resetToken(app, ADA.email);
      const fresh = await resetToken(app, 'bob@example.com');

      clock.advance(29 * MINUTE);
      expect((await reset(app, fresh, P1)).statusCode).toBe(204);

      clock.advance(2 * MINUTE);
      const expired = await reset(app, stale, P1);
      expect(expired.statusCode).toBe(400);
      expect(expired.json()).toMatchObject({ code: 'INVALID_ONE_TIME_TOKEN' });
      expect((await loginResponse(app, ADA.email, P0)).statusCode).toBe(200);
      expect((await loginResponse(app, ADA.email, P1)).statusCode).toBe(401);
    });

    it('applies the password policy and history, and a refused password leaves the link usable', async () => {
      const app = await start();
      await signupAndVerify(app, ADA);
      const token = await resetToken(app, ADA.email);
      const hashBefore = (await findUser(app, ADA.email))?.password_hash;

      const weak = await reset(app, token, 'Xq7#pL9!vR2$kM');
      expect(weak.statusCode).toBe(400);
      expect(weak.json()).toMatchObject({
        code: 'PASSWORD_TOO_WEAK',
        detail: expect.stringMatching(/at least 15 characters/),
      });
      const common = await reset(app, token, '1qaz2wsx3edc4rfv');
      expect(common.json()).toMatchObject({
        code: 'PASSWORD_TOO_WEAK',
        detail: expect.stringMatching(/common/),
      });
      const reused = await reset(app, token, P0);
      expect(reused.statusCode).toBe(400);
      expect(reused.json()).toMatchObject({ code: 'PASSWORD_REUSED' });
      expect((await findUser(app, ADA.email))?.password_hash).toBe(hashBefore);

      expect((await reset(app, token, P1)).statusCode).toBe(204);
      expect((await loginResponse(app, ADA.email, P1)).statusCode).toBe(200);
    });

    it('spends every other reset link of the account, and a password change spends them too', async () => {
      const app = await start();
      await signupAndVerify(app, ADA);
      const first = await resetToken(app, ADA.email, 1);
      const second = await resetToken(app, ADA.email, 2);
      expect(second).not.toBe(first);

      expect((await reset(app, second, P1)).statusCode).toBe(204);
      expect((await reset(app, first, P2)).json()).toMatchObject({ code: 'INVALID_ONE_TIME_TOKEN' });

      const pending = await resetToken(app, ADA.email, 3);
      const { accessToken } = await login(app, ADA.email, P1);
      expect((await changePassword(app, accessToken, P1, P3)).statusCode).toBe(204);
      expect((await reset(app, pending, P4)).json()).toMatchObject({ code: 'INVALID_ONE_TIME_TOKEN' });
      expect((await loginResponse(app, ADA.email, P3)).statusCode).toBe(200);
    });

    it('ends a lockout of the account', async () => {
      const clock = createFakeClock();
      const app = await start({ clock });
      await signupAndVerify(app, ADA);
      for (let i = 0; i < 5; i += 1) await loginResponse(app, ADA.email, P6);
      expect((await loginResponse(app, ADA.email, P0)).statusCode).toBe(423);

      expect((await reset(app, await resetToken(app, ADA.email), P1)).statusCode).toBe(204);

      expect((await loginResponse(app, ADA.email, P1)).statusCode).toBe(200);
    });

    it('refuses garbage tokens with 400', async () => {
      const app = await start();
      await signupAndVerify(app, ADA);
      const garbage = await reset(app, randomBytes(32).toString('base64url'), P1);
      expect(garbage.statusCode).toBe(400);
      expect(garbage.json()).toMatchObject({ code: 'INVALID_ONE_TIME_TOKEN' });
      expect((await reset(app, 'short', P1)).json()).toMatchObject({ code: 'VALIDATION_FAILED' });
      expect((await loginResponse(app, ADA.email, P0)).statusCode).toBe(200);
    });
  });

  describe('password expiry', () => {
    it('with PASSWORD_EXPIRY_DAYS=90, a 91-day-old password is refused with 403 PASSWORD_EXPIRED until reset', async () => {
      const clock = createFakeClock();
      const app = await start({ clock, env: { PASSWORD_EXPIRY_DAYS: '90' } });
      await signupAndVerify(app, ADA);

      clock.advance(89 * DAY);
      expect((await loginResponse(app, ADA.email, P0)).statusCode).toBe(200);

      clock.advance(2 * DAY);
      const expired = await loginResponse(app, ADA.email, P0);
      expect(expired.statusCode).toBe(403);
      expect(expired.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(expired.json()).toMatchObject({ code: 'PASSWORD_EXPIRED' });
      // The state of the account is told only to someone who knows the password.
      expect((await loginResponse(app, ADA.email, P6)).json()).toMatchObject({ code: 'INVALID_CREDENTIALS' });

      expect((await reset(app, await resetToken(app, ADA.email), P1)).statusCode).toBe(204);
      expect((await loginResponse(app, ADA.email, P1)).statusCode).toBe(200);
    });

    it('never expires passwords by default', async () => {
      const clock = createFakeClock();
      const app = await start({ clock });
      await signupAndVerify(app, ADA);
      clock.advance(3650 * DAY);
      expect((await loginResponse(app, ADA.email, P0)).statusCode).toBe(200);
    });
  });

  it('raising ARGON2_TIME_COST re-hashes a password at its next sign-in', async () => {
    const database = await createTestDatabase(dialect);
    cleanups.push(() => database.drop());
    const phcTimeCost = (hash: string | undefined) =>
      Number(/\$argon2id\$v=19\$m=\d+,t=(\d+),p=\d+\$/.exec(hash ?? '')?.[1]);

    const before = await buildApp(testConfig(database, { ARGON2_TIME_COST: '2' }));
    try {
      await signupAndVerify(before, ADA);
    } finally {
      await before.close();
    }

    const after = await buildApp(testConfig(database, { ARGON2_TIME_COST: '3' }));
    cleanups.push(() => after.close());
    const oldHash = (await findUser(after, ADA.email))?.password_hash;
    expect(phcTimeCost(oldHash)).toBe(2);

    await login(after, ADA.email, P0);

    const newHash = (await findUser(after, ADA.email))?.password_hash;
    expect(phcTimeCost(newHash)).toBe(3);
    expect(newHash).not.toBe(oldHash);
    expect((await loginResponse(after, ADA.email, P0)).statusCode).toBe(200);
    expect((await loginResponse(after, ADA.email, P1)).statusCode).toBe(401);
  });

  describe('PATCH /me', () => {
    const patchMe = (app: PlinthApp, accessToken: string, payload: Record<string, unknown>) =>
      app.inject({ method: 'PATCH', url: '/api/v1/me', headers: bearer(accessToken), payload });

    it('changes the name', async () => {
      const app = await start();
      const { userId } = await signupAndVerify(app, ADA);
      const { accessToken } = await login(app, ADA.email, P0);

      const response = await patchMe(app, accessToken, { name: 'Ada King' });

      expect(response.statusCode).toBe(200);
      expect(response.json()).toMatchObject({
        id: userId,
        name: 'Ada King',
        email: ADA.email,
        emailChangePending: false,
      });
      expect((await me(app, accessToken)).json()).toMatchObject({ name: 'Ada King' });
      expect((await findUser(app, ADA.email))?.name).toBe('Ada King');
    });

    it('ignores privileged fields (mass assignment)', async () => {
      const app = await start();
      const { userId } = await signupAndVerify(app, ADA);
      const { accessToken } = await login(app, ADA.email, P0);

      const response = await patchMe(app, accessToken, {
        name: 'Ada King',
        platformRole: 'superadmin',
        emailVerified: false,
        mfaEnabled: true,
        id: '01234567-89ab-7def-8123-456789abcdef',
      });

      expect(response.statusCode).toBe(200);
      expect(response.json()).toMatchObject({
        id: userId,
        platformRole: null,
        emailVerified: true,
        mfaEnabled: false,
      });
      expect(await findUser(app, ADA.email)).toMatchObject({
        id: userId,
        platform_role: null,
        totp_enabled_at: null,
      });
    });

    it('an email change without the current password, or with a wrong one, is 403 and changes nothing', async () => {
      const app = await start();
      await signupAndVerify(app, ADA);
      const { accessToken } = await login(app, ADA.email, P0);
      const before = await findUser(app, ADA.email);

      const without = await patchMe(app, accessToken, { email: 'ada@new.example' });
      expect(without.statusCode).toBe(403);
      expect(without.json()).toMatchObject({ code: 'WRONG_PASSWORD' });
      const wrong = await patchMe(app, accessToken, { email: 'ada@new.example', currentPassword: P6 });
      expect(wrong.statusCode).toBe(403);
      expect(wrong.json()).toMatchObject({ code: 'WRONG_PASSWORD' });

      expect(await findUser(app, ADA.email)).toEqual(before);
      await settleBackgroundWork();
      expect(await outboxMails(app, 'ada@new.example')).toEqual([]);
      expect((await outboxMails(app, ADA.email)).map((m) => m.subject)).not.toContain(
        MAIL_SUBJECT.emailChangeRequested,
      );
    });

    it('an email change takes effect once the new address is verified, and the old address is told', async () => {
      const app = await start();
      await signupAndVerify(app, ADA);
      const { accessToken } = await login(app, ADA.email, P0);

      const response = await patchMe(app, accessToken, { email: ' Ada@New.Example ', currentPassword: P0 });

      expect(response.statusCode).toBe(200);
      expect(response.json()).toMatchObject({ email: ADA.email, emailChangePending: true });
      const notice = await latestOutboxMail(app, ADA.email, { subject: MAIL_SUBJECT.emailChangeRequested });
      expect(notice.text_body).toContain('ada@new.example');
      const link = linkFromMail(
        await latestOutboxMail(app, 'ada@new.example', { subject: MAIL_SUBJECT.verifyEmail }),
      );
      expect(link.startsWith(`${app.config.publicUrl}/verify-email#token=`)).toBe(true);
      // Nothing changes until the link is followed.
      expect((await me(app, accessToken)).json()).toMatchObject({ email: ADA.email });
      expect((await loginResponse(app, 'ada@new.example', P0)).statusCode).toBe(401);

      const verified = await app.inject({
        method: 'POST',
        url: '/api/v1/auth/email/verify',
        payload: { token: tokenFromLink(link) },
      });

      expect(verified.statusCode).toBe(204);
      expect((await me(app, accessToken)).json()).toMatchObject({
        email: 'ada@new.example',
        emailVerified: true,
      });
      expect(await findUser(app, ADA.email)).toBeUndefined();
      expect((await loginResponse(app, 'ada@new.example', P0)).statusCode).toBe(200);
      expect((await loginResponse(app, ADA.email, P0)).statusCode).toBe(401);
    });

    it('once a new address is verified, links to other addresses asked for earlier no longer work', async () => {
      const app = await start();
      await signupAndVerify(app, ADA);
      const { accessToken } = await login(app, ADA.email, P0);
      await patchMe(app, accessToken, { email: 'ada@first.example', currentPassword: P0 });
      await patchMe(app, accessToken, { email: 'ada@second.example', currentPassword: P0 });
      const first = tokenFromLink(
        linkFromMail(await latestOutboxMail(app, 'ada@first.example', { subject: MAIL_SUBJECT.verifyEmail })),
      );
      const second = tokenFromLink(
        linkFromMail(
          await latestOutboxMail(app, 'ada@second.example', { subject: MAIL_SUBJECT.verifyEmail }),
        ),
      );

      const verify = (token: string) =>
        app.inject({ method: 'POST', url: '/api/v1/auth/email/verify', payload: { token } });
      expect((await verify(second)).statusCode).toBe(204);

      expect((await verify(first)).json()).toMatchObject({ code: 'INVALID_ONE_TIME_TOKEN' });
      expect((await me(app, accessToken)).json()).toMatchObject({ email: 'ada@second.example' });
    });

    it('an email change to a taken address answers the same and never takes the address', async () => {
      const app = await start();
      await signupAndVerify(app, ADA);
      const bob = await signupAndVerify(app, { email: 'bob@example.com', password: P1, name: 'Bob' });
      const { accessToken } = await login(app, ADA.email, P0);

      const taken = await patchMe(app, accessToken, { email: 'bob@example.com', currentPassword: P0 });
      const free = await patchMe(app, accessToken, { email: 'ada@new.example', currentPassword: P0 });

      expect(taken.statusCode).toBe(free.statusCode);
      expect(Object.keys(taken.json<Record<string, unknown>>()).sort()).toEqual(
        Object.keys(free.json<Record<string, unknown>>()).sort(),
      );
      expect(taken.json()).toMatchObject({ email: ADA.email, emailChangePending: true });
      await latestOutboxMail(app, 'ada@new.example', { subject: MAIL_SUBJECT.verifyEmail });
      await settleBackgroundWork();
      expect(
        (await outboxMails(app, 'bob@example.com')).filter((m) => m.subject === MAIL_SUBJECT.verifyEmail),
      ).toHaveLength(1);
      expect(await findUser(app, 'bob@example.com')).toMatchObject({ id: bob.userId });
    });

    it('refuses an invalid name or address with 400 and an anonymous caller with 401', async () => {
      const app = await start();
      await signupAndVerify(app, ADA);
      const { accessToken } = await login(app, ADA.email, P0);

      expect((await patchMe(app, accessToken, { name: 'n'.repeat(101) })).json()).toMatchObject({
        code: 'VALIDATION_FAILED',
      });
      expect((await patchMe(app, accessToken, { name: '   ' })).json()).toMatchObject({
        code: 'VALIDATION_FAILED',
      });
      expect((await patchMe(app, accessToken, { email: 'nope', currentPassword: P0 })).json()).toMatchObject({
        code: 'VALIDATION_FAILED',
      });
      expect(
        (await app.inject({ method: 'PATCH', url: '/api/v1/me', payload: { name: 'X' } })).statusCode,
      ).toBe(401);
      expect((await findUser(app, ADA.email))?.name).toBe(ADA.name);
    });
  });

  describe('logs (ASVS 16.2.5)', () => {
    /** Signs up, verifies, signs in (also wrongly), changes the password, and resets it; returns every secret used. */
    async function fullRun(app: PlinthApp): Promise<string[]> {
      const secrets: string[] = [P0, P1, P2, P6];
      const weak = 'Xq7#pL9!vR2$kM';
      secrets.push(weak);
      expect(
        (
          await app.inject({
            method: 'POST',
            url: '/api/v1/auth/signup',
            payload: { ...ADA, password: weak },
          })
        ).statusCode,
      ).toBe(400);
      expect(
        (await app.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: ADA })).statusCode,
      ).toBe(201);
      const verifyToken = tokenFromLink(
        linkFromMail(await latestOutboxMail(app, ADA.email, { subject: MAIL_SUBJECT.verifyEmail })),
      );
      secrets.push(verifyToken);
      expect(
        (
          await app.inject({
            method: 'POST',
            url: '/api/v1/auth/email/verify',
            payload: { token: verifyToken },
          })
        ).statusCode,
      ).toBe(204);
      expect((await loginResponse(app, ADA.email, P6)).statusCode).toBe(401);
      expect((await loginResponse(app, 'nobody@example.com', P6)).statusCode).toBe(401);
      const pair = await login(app, ADA.email, P0);
      secrets.push(pair.accessToken, pair.refreshToken);
      expect((await changePassword(app, pair.accessToken, P6, P1)).statusCode).toBe(403);
      expect((await changePassword(app, pair.accessToken, P0, P1)).statusCode).toBe(204);
      const token = await resetToken(app, ADA.email);
      secrets.push(token);
      expect((await reset(app, token, P2)).statusCode).toBe(204);
      const after = await login(app, ADA.email, P2);
      secrets.push(after.accessToken, after.refreshToken);
      await latestOutboxMail(app, ADA.email, { subject: MAIL_SUBJECT.passwordChanged, minCount: 2 });
      await settleBackgroundWork();
      return secrets;
    }

    function captureLogStream(): {
      stream: { write(line: string): void };
      text: () => string;
      messages: () => string[];
    } {
      const lines: string[] = [];
      return {
        stream: { write: (line: string) => void lines.push(line) },
        text: () => lines.join(''),
        messages: () => lines.map((line) => String((JSON.parse(line) as { msg?: unknown }).msg)),
      };
    }

    it('never writes a password to the log, at the most verbose level', async () => {
      const log = captureLogStream();
      const app = await start({ env: { LOG_LEVEL: 'trace' }, logStream: log.stream });

      await fullRun(app);

      // The run was logged (so the assertion below is about real lines), including the account events.
      expect(log.messages()).toEqual(
        expect.arrayContaining([
          'account created',
          'signed in',
          'sign-in failed',
          'password changed',
          'password reset',
        ]),
      );
      for (const password of [P0, P1, P2, P6, 'Xq7#pL9!vR2$kM']) {
        expect(log.text()).not.toContain(password);
        expect(log.text()).not.toContain(JSON.stringify(password).slice(1, -1));
      }
    });

    it('in production, writes neither passwords nor tokens to the log', async () => {
      const log = captureLogStream();
      const app = await start({
        env: {
          NODE_ENV: 'production',
          LOG_LEVEL: 'trace',
          ENCRYPTION_KEY: randomBytes(32).toString('base64'),
        },
        logStream: log.stream,
      });

      const secrets = await fullRun(app);

      expect(log.messages()).toEqual(
        expect.arrayContaining(['signed in', 'password reset', 'mail stored in outbox']),
      );
      for (const secret of secrets) expect(log.text()).not.toContain(secret);
    });
  });
});
