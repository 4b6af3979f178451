import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { PlinthApp } from '../../app.ts';
import {
  bearer,
  cleanupAfterEach,
  createFakeClock,
  findUser,
  HOUR,
  latestOutboxMail,
  linkFromMail,
  login,
  loginResponse,
  MAIL_SUBJECT,
  MINUTE,
  outboxMails,
  STRONG_PASSWORDS,
  settleBackgroundWork,
  signupAndVerify,
  startTestApp,
  tokenFromLink,
} from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import type { TestAppOptions } from '../../test/harness.ts';
import { MAIL_JOB } from '../mail/index.ts';
import { startSmtpServer, type TestSmtpServer } from '../mail/testing.ts';

const [PASSWORD = '', OTHER_PASSWORD = ''] = STRONG_PASSWORDS;
const ADA = { email: 'ada@example.com', password: PASSWORD, name: 'Ada Lovelace' };

/** A 64-character passphrase of ordinary words: long, easy to remember, and accepted. */
const PASSPHRASE_64 = 'ocean lantern cobalt fig maple river quartz sunset violin zebra!';

describe.each(testDialects)('sign-up and email verification on %s', (dialect) => {
  const cleanups = cleanupAfterEach();

  const start = (options: TestAppOptions = {}): Promise<PlinthApp> =>
    startTestApp(dialect, cleanups, options);

  const signup = (app: PlinthApp, payload: unknown) =>
    app.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: payload as Record<string, unknown> });

  const countUsers = async (app: PlinthApp) =>
    Number(
      (
        await app.database.db
          .selectFrom('users')
          .select((eb) => eb.fn.countAll().as('n'))
          .executeTakeFirstOrThrow()
      ).n,
    );

  describe('POST /auth/signup', () => {
    it('creates an unverified account and mails a verification link that works', async () => {
      const app = await start();

      const response = await signup(app, ADA);

      expect(response.statusCode).toBe(201);
      expect(response.headers['content-type']).toMatch(/^application\/json/);
      expect(response.json()).toEqual({ email: 'ada@example.com', verificationRequired: true });
      const user = await findUser(app, ADA.email);
      expect(user).toMatchObject({
        name: 'Ada Lovelace',
        email_verified_at: null,
        platform_role: null,
        disabled_at: null,
      });
      expect(user?.password_hash).toMatch(/^\$argon2id\$/);
      expect(user?.password_hash).not.toContain(PASSWORD);

      const mail = await latestOutboxMail(app, ADA.email, { subject: MAIL_SUBJECT.verifyEmail });
      const link = linkFromMail(mail);
      expect(link.startsWith(`${app.config.publicUrl}/verify-email#token=`)).toBe(true);
      const token = tokenFromLink(link);
      // Only a hash of the token is kept.
      const stored = await app.database.db.selectFrom('one_time_tokens').selectAll().execute();
      expect(stored).toHaveLength(1);
      expect(JSON.stringify(stored)).not.toContain(token);

      const verified = await app.inject({
        method: 'POST',
        url: '/api/v1/auth/email/verify',
        payload: { token },
      });
      expect(verified.statusCode).toBe(204);
      expect((await findUser(app, ADA.email))?.email_verified_at).not.toBeNull();
      await expect(login(app, ADA.email, PASSWORD)).resolves.toMatchObject({ tokenType: 'Bearer' });
    });

    it('answers a sign-up for a registered address exactly like a new one, and mails the owner a notice instead', async () => {
      const app = await start();
      await signupAndVerify(app, ADA);
      const before = await findUser(app, ADA.email);
      const historyBefore = await app.database.db.selectFrom('password_history').selectAll().execute();

      const fresh = await signup(app, { email: 'bob@example.com', password: OTHER_PASSWORD, name: 'Bob' });
      const again = await signup(app, {
        email: '  ADA@example.com ',
        password: OTHER_PASSWORD,
        name: 'Mallory',
      });

      expect(again.statusCode).toBe(fresh.statusCode);
      expect(again.statusCode).toBe(201);
      expect(again.headers['content-type']).toBe(fresh.headers['content-type']);
      const freshBody = fresh.json<Record<string, unknown>>();
      const againBody = again.json<Record<string, unknown>>();
      expect(Object.keys(againBody).sort()).toEqual(Object.keys(freshBody).sort());
      expect(againBody).toEqual({ email: 'ada@example.com', verificationRequired: true });
      expect(freshBody).toEqual({ email: 'bob@example.com', verificationRequired: true });

      const notice = await latestOutboxMail(app, ADA.email, { subject: MAIL_SUBJECT.signupAttempt });
      expect(notice.text_body).toContain('Ada Lovelace');
      expect(notice.text_body).not.toContain('Mallory');

      // Still one account for the address, with its password untouched.
      const rows = await app.database.db
        .selectFrom('users')
        .select(['id', 'email'])
        .where('email', '=', 'ada@example.com')
        .execute();
      expect(rows).toEqual([{ id: before?.id, email: 'ada@example.com' }]);
      expect(await countUsers(app)).toBe(2);
      const after = await findUser(app, ADA.email);
      expect(after?.password_hash).toBe(before?.password_hash);
      expect(after?.name).toBe('Ada Lovelace');
      expect(
        await app.database.db
          .selectFrom('password_history')
          .where('user_id', '=', before?.id ?? '')
          .selectAll()
          .execute(),
      ).toEqual(historyBefore.filter((h) => h.user_id === before?.id));
      await expect(login(app, ADA.email, PASSWORD)).resolves.toMatchObject({ tokenType: 'Bearer' });
      expect((await loginResponse(app, ADA.email, OTHER_PASSWORD)).statusCode).toBe(401);
      // No verification mail for the second attempt: only the one from the real sign-up.
      await settleBackgroundWork();
      expect(
        (await outboxMails(app, ADA.email)).filter((m) => m.subject === MAIL_SUBJECT.verifyEmail),
      ).toHaveLength(1);
    });

    it('never creates a second account when sign-ups for one address arrive at once', async () => {
      const app = await start();

      const responses = await Promise.all(
        STRONG_PASSWORDS.slice(0, 5).map((password, i) =>
          signup(app, {
            email: i % 2 === 0 ? 'ada@example.com' : 'ADA@example.com',
            password,
            name: `Ada ${i}`,
          }),
        ),
      );

      for (const response of responses) {
        expect(response.statusCode).toBe(201);
        expect(response.json()).toEqual({ email: 'ada@example.com', verificationRequired: true });
      }
      expect(await countUsers(app)).toBe(1);
    });

    it('refuses a registered address with 409 EMAIL_TAKEN when verification is off, changing nothing', async () => {
      const app = await start({ env: { REQUIRE_EMAIL_VERIFICATION: 'false' } });
      const first = await signup(app, ADA);
      expect(first.statusCode).toBe(201);
      expect(first.json()).toEqual({ email: 'ada@example.com', verificationRequired: false });
      // Without verification the account signs in at once.
      await login(app, ADA.email, PASSWORD);
      const before = await findUser(app, ADA.email);

      const again = await signup(app, {
        email: 'Ada@Example.com',
        password: OTHER_PASSWORD,
        name: 'Mallory',
      });

      expect(again.statusCode).toBe(409);
      expect(again.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(again.json()).toMatchObject({ status: 409, code: 'EMAIL_TAKEN' });
      expect(await countUsers(app)).toBe(1);
      expect(await findUser(app, ADA.email)).toEqual(before);
    });

    it('refuses every sign-up with 403 SIGNUP_DISABLED when sign-up is closed', async () => {
      const app = await start({ env: { SIGNUP_ENABLED: 'false' } });

      const response = await signup(app, ADA);

      expect(response.statusCode).toBe(403);
      expect(response.json()).toMatchObject({ status: 403, code: 'SIGNUP_DISABLED' });
      expect(await countUsers(app)).toBe(0);
      await settleBackgroundWork();
      expect(await outboxMails(app, ADA.email)).toEqual([]);
    });

    it('normalises addresses (trimmed, lower-cased, NFKC), so variants of one address are one account', async () => {
      const app = await start();
      // Full-width letters, "＠" and "．", as an East Asian input method produces them, plus stray spaces and capitals.
      const fullWidth = '  ＡＤＡ＠Ｅｘａｍｐｌｅ．ＣＯＭ ';

      const response = await signup(app, { ...ADA, email: fullWidth });

      expect(response.statusCode).toBe(201);
      expect(response.json()).toEqual({ email: 'ada@example.com', verificationRequired: true });
      const user = await findUser(app, 'ada@example.com');
      expect(user?.email).toBe('ada@example.com');
      const mail = await latestOutboxMail(app, 'ada@example.com', { subject: MAIL_SUBJECT.verifyEmail });
      await app.inject({
        method: 'POST',
        url: '/api/v1/auth/email/verify',
        payload: { token: tokenFromLink(linkFromMail(mail)) },
      });

      // Every spelling signs in to the same account and is the same address for sign-up.
      for (const variant of ['ada@example.com', 'ADA@EXAMPLE.COM', ' Ada@Example.Com', fullWidth]) {
        expect((await loginResponse(app, variant, PASSWORD)).statusCode).toBe(200);
      }
      const again = await signup(app, { ...ADA, email: 'Ａda@example.com', password: OTHER_PASSWORD });
      expect(again.statusCode).toBe(201);
      expect(await countUsers(app)).toBe(1);
      await latestOutboxMail(app, 'ada@example.com', { subject: MAIL_SUBJECT.signupAttempt });
    });

    it('accepts an address of 254 characters and refuses one of 255 with 400', async () => {
      const app = await start();
      const domain = `${`${'b'.repeat(60)}.`.repeat(3)}cdefgh`;
      const longest = `${'a'.repeat(64)}@${domain}`;
      expect(longest).toHaveLength(254);

      const tooLong = await signup(app, { ...ADA, email: `a${longest}` });
      expect(tooLong.statusCode).toBe(400);
      expect(tooLong.json()).toMatchObject({
        code: 'VALIDATION_FAILED',
        errors: expect.arrayContaining([expect.objectContaining({ path: 'body.email' })]),
      });
      expect(await countUsers(app)).toBe(0);

      const accepted = await signup(app, { ...ADA, email: longest });
      expect(accepted.statusCode).toBe(201);
    });

    it('accepts a name of 100 characters and refuses one of 101 with 400', async () => {
      const app = await start();

      const tooLong = await signup(app, { ...ADA, name: 'n'.repeat(101) });
      expect(tooLong.statusCode).toBe(400);
      expect(tooLong.json()).toMatchObject({
        code: 'VALIDATION_FAILED',
        errors: expect.arrayContaining([expect.objectContaining({ path: 'body.name' })]),
      });
      expect(await countUsers(app)).toBe(0);

      expect((await signup(app, { ...ADA, name: 'n'.repeat(100) })).statusCode).toBe(201);
    });

    it('refuses a password over 256 characters with 400 VALIDATION_FAILED, without creating anything', async () => {
      const app = await start();

      const response = await signup(app, { ...ADA, password: `${PASSPHRASE_64} `.repeat(5).slice(0, 257) });

      expect(response.statusCode).toBe(400);
      expect(response.json()).toMatchObject({
        code: 'VALIDATION_FAILED',
        errors: [{ path: 'body.password', message: expect.stringContaining('256') }],
      });
      expect(await countUsers(app)).toBe(0);
    });

    it('refuses a 14-character password with 400 PASSWORD_TOO_WEAK, saying why', async () => {
      const app = await start();

      const response = await signup(app, { ...ADA, password: 'Xq7#pL9!vR2$kM' });

      expect(response.statusCode).toBe(400);
      expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
      const problem = response.json<{
        code: string;
        detail: string;
        errors: { path: string; message: string }[];
      }>();
      expect(problem.code).toBe('PASSWORD_TOO_WEAK');
      expect(problem.detail).toMatch(/at least 15 characters/);
      expect(problem.errors).toContainEqual({ path: 'body.password', message: problem.detail });
      expect(await countUsers(app)).toBe(0);
    });

    it('follows PASSWORD_MIN_LENGTH', async () => {
      const app = await start({ env: { PASSWORD_MIN_LENGTH: '40' } });

      const short = await signup(app, { ...ADA, password: PASSWORD });
      expect(short.statusCode).toBe(400);
      expect(short.json()).toMatchObject({
        code: 'PASSWORD_TOO_WEAK',
        detail: expect.stringMatching(/at least 40 characters/),
      });

      expect((await signup(app, { ...ADA, password: PASSPHRASE_64 })).statusCode).toBe(201);
    });

    it('accepts a 64-character passphrase of plain words, with no composition rules, and signs in with it', async () => {
      const app = await start({ env: { REQUIRE_EMAIL_VERIFICATION: 'false' } });
      expect(PASSPHRASE_64).toHaveLength(64);

      expect((await signup(app, { ...ADA, password: PASSPHRASE_64 })).statusCode).toBe(201);
      await expect(login(app, ADA.email, PASSPHRASE_64)).resolves.toMatchObject({ tokenType: 'Bearer' });
      // Never truncated: the first 63 characters are not the password.
      expect((await loginResponse(app, ADA.email, PASSPHRASE_64.slice(0, 63))).statusCode).toBe(401);
    });

    it('accepts a password of exactly 256 characters', async () => {
      const app = await start();
      const words =
        'anchor bramble cinder dapple ember fathom gossamer hearth indigo juniper kestrel lumen mistral nettle opal '
          .concat(
            'pewter quill russet sorrel thistle umber vellum willow xylem yarrow zephyr alcove bellows cobble drizzle ',
          )
          .concat('fennel gable hazel ivory jasper kelp larch marrow nimbus oriole parsley quince rafter');
      const password = words.slice(0, 256);
      expect(password).toHaveLength(256);

      expect((await signup(app, { ...ADA, password })).statusCode).toBe(201);
    });

    it('refuses a commonly used password, saying that it is common', async () => {
      const app = await start();

      for (const password of ['1qaz2wsx3edc4rfv', 'passwordpassword', 'iloveyou12345678']) {
        const response = await signup(app, { ...ADA, password });
        expect(response.statusCode, password).toBe(400);
        expect(response.json(), password).toMatchObject({
          code: 'PASSWORD_TOO_WEAK',
          detail: expect.stringMatching(/common/i),
        });
      }
      expect(await countUsers(app)).toBe(0);
    });

    it('answers malformed JSON, wrong types and missing fields with 400 problem+json', async () => {
      const app = await start();

      const malformed = await app.inject({
        method: 'POST',
        url: '/api/v1/auth/signup',
        headers: { 'content-type': 'application/json' },
        payload: '{"email": "ada@example.com", "password": ',
      });
      expect(malformed.statusCode).toBe(400);
      expect(malformed.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(malformed.json()).toMatchObject({ code: 'INVALID_JSON' });

      const wrongTypes = await signup(app, { email: 42, password: true, name: ['Ada'] });
      expect(wrongTypes.statusCode).toBe(400);
      const wrongPaths = wrongTypes.json<{ code: string; errors: { path: string }[] }>();
      expect(wrongPaths.code).toBe('VALIDATION_FAILED');
      expect(wrongPaths.errors.map((e) => e.path).sort()).toEqual([
        'body.email',
        'body.name',
        'body.password',
      ]);

      const missing = await signup(app, {});
      expect(missing.statusCode).toBe(400);
      const missingPaths = missing.json<{ code: string; errors: { path: string }[] }>();
      expect(missingPaths.code).toBe('VALIDATION_FAILED');
      expect(missingPaths.errors.map((e) => e.path).sort()).toEqual([
        'body.email',
        'body.name',
        'body.password',
      ]);

      const notAnObject = await app.inject({
        method: 'POST',
        url: '/api/v1/auth/signup',
        headers: { 'content-type': 'application/json' },
        payload: '["ada@example.com"]',
      });
      expect(notAnObject.statusCode).toBe(400);

      const invalidEmail = await signup(app, { ...ADA, email: 'not an address' });
      expect(invalidEmail.statusCode).toBe(400);
      expect(invalidEmail.json()).toMatchObject({
        code: 'VALIDATION_FAILED',
        errors: expect.arrayContaining([expect.objectContaining({ path: 'body.email' })]),
      });

      expect(await countUsers(app)).toBe(0);
    });

    it.each([
      ['SQL', "Robert'); DROP TABLE users;--"],
      ['HTML', '<script>alert(1)</script>'],
    ])('stores a %s-looking name verbatim and returns it verbatim as JSON', async (_kind, name) => {
      const app = await start();
      await signupAndVerify(app, { email: 'bob@example.com', password: OTHER_PASSWORD, name: 'Bob' });
      const { userId } = await signupAndVerify(app, { ...ADA, name });

      const row = await app.database.db
        .selectFrom('users')
        .select('name')
        .where('id', '=', userId)
        .executeTakeFirstOrThrow();
      expect(row.name).toBe(name);
      expect(await countUsers(app)).toBe(2);

      const { accessToken } = await login(app, ADA.email, PASSWORD);
      const me = await app.inject({ method: 'GET', url: '/api/v1/me', headers: bearer(accessToken) });
      expect(me.statusCode).toBe(200);
      // JSON, never sniffed as HTML, is what keeps the markup inert.
      expect(me.headers['content-type']).toMatch(/^application\/json/);
      expect(me.headers['x-content-type-options']).toBe('nosniff');
      expect(me.json<{ name: string }>().name).toBe(name);
    });

    it('ignores privileged fields in the body (mass assignment)', async () => {
      const app = await start();
      const chosenId = '01234567-89ab-7def-8123-456789abcdef';

      const response = await signup(app, {
        ...ADA,
        id: chosenId,
        platformRole: 'superadmin',
        platform_role: 'superadmin',
        emailVerified: true,
        email_verified_at: '2020-01-01T00:00:00.000Z',
        disabledAt: null,
        createdAt: '2000-01-01T00:00:00.000Z',
      });

      expect(response.statusCode).toBe(201);
      expect(response.json()).toEqual({ email: 'ada@example.com', verificationRequired: true });
      const user = await findUser(app, ADA.email);
      expect(user?.id).not.toBe(chosenId);
      expect(user?.platform_role).toBeNull();
      expect(user?.email_verified_at).toBeNull();
      expect(user?.created_at).not.toBe('2000-01-01T00:00:00.000Z');
      expect((await loginResponse(app, ADA.email, PASSWORD)).json()).toMatchObject({
        code: 'EMAIL_NOT_VERIFIED',
      });
    });
  });

  describe('email verification', () => {
    const verify = (app: PlinthApp, token: string) =>
      app.inject({ method: 'POST', url: '/api/v1/auth/email/verify', payload: { token } });
    const resend = (app: PlinthApp, email: string) =>
      app.inject({ method: 'POST', url: '/api/v1/auth/email/resend', payload: { email } });

    async function signupForToken(app: PlinthApp, input = ADA): Promise<string> {
      expect((await signup(app, input)).statusCode).toBe(201);
      return tokenFromLink(
        linkFromMail(await latestOutboxMail(app, input.email, { subject: MAIL_SUBJECT.verifyEmail })),
      );
    }

    it('a verification link works once; the second use is 400 INVALID_ONE_TIME_TOKEN', async () => {
      const app = await start();
      const token = await signupForToken(app);

      expect((await verify(app, token)).statusCode).toBe(204);
      const verifiedAt = (await findUser(app, ADA.email))?.email_verified_at;
      expect(verifiedAt).not.toBeNull();

      const second = await verify(app, token);
      expect(second.statusCode).toBe(400);
      expect(second.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(second.json()).toMatchObject({ code: 'INVALID_ONE_TIME_TOKEN' });
      expect((await findUser(app, ADA.email))?.email_verified_at).toBe(verifiedAt);
    });

    it('a verification link expires after 24 hours', async () => {
      const clock = createFakeClock();
      const app = await start({ clock });
      const stale = await signupForToken(app);
      const fresh = await signupForToken(app, {
        email: 'bob@example.com',
        password: OTHER_PASSWORD,
        name: 'Bob',
      });

      clock.advance(24 * HOUR - MINUTE);
      expect((await verify(app, fresh)).statusCode).toBe(204);

      clock.advance(2 * MINUTE);
      const expired = await verify(app, stale);
      expect(expired.statusCode).toBe(400);
      expect(expired.json()).toMatchObject({ code: 'INVALID_ONE_TIME_TOKEN' });
      expect((await findUser(app, ADA.email))?.email_verified_at).toBeNull();

      // A new link, asked for after expiry, works.
      expect((await resend(app, ADA.email)).statusCode).toBe(202);
      const mail = await latestOutboxMail(app, ADA.email, { subject: MAIL_SUBJECT.verifyEmail, minCount: 2 });
      expect((await verify(app, tokenFromLink(linkFromMail(mail)))).statusCode).toBe(204);
    });

    it('refuses garbage tokens with 400', async () => {
      const app = await start();
      await signupForToken(app);

      const random = await verify(app, randomBytes(32).toString('base64url'));
      expect(random.statusCode).toBe(400);
      expect(random.json()).toMatchObject({ code: 'INVALID_ONE_TIME_TOKEN' });

      const short = await verify(app, 'abc');
      expect(short.statusCode).toBe(400);
      expect(short.json()).toMatchObject({ code: 'VALIDATION_FAILED' });

      const wrongType = await app.inject({
        method: 'POST',
        url: '/api/v1/auth/email/verify',
        payload: { token: 12345 },
      });
      expect(wrongType.statusCode).toBe(400);

      expect((await findUser(app, ADA.email))?.email_verified_at).toBeNull();
    });

    it('does not accept a password-reset token as a verification token', async () => {
      const app = await start();
      await signupForToken(app);
      await app.inject({
        method: 'POST',
        url: '/api/v1/auth/password/forgot',
        payload: { email: ADA.email },
      });
      const reset = tokenFromLink(
        linkFromMail(await latestOutboxMail(app, ADA.email, { subject: MAIL_SUBJECT.resetPassword })),
      );

      const response = await verify(app, reset);

      expect(response.statusCode).toBe(400);
      expect(response.json()).toMatchObject({ code: 'INVALID_ONE_TIME_TOKEN' });
      expect((await findUser(app, ADA.email))?.email_verified_at).toBeNull();
    });

    it('resend always answers 202 with the same body, and mails only an unverified account', async () => {
      const app = await start();
      await signupForToken(app);
      await signupAndVerify(app, { email: 'bob@example.com', password: OTHER_PASSWORD, name: 'Bob' });

      const unknown = await resend(app, 'nobody@example.com');
      const verified = await resend(app, 'bob@example.com');
      const unverified = await resend(app, ADA.email);

      for (const response of [unknown, verified, unverified]) {
        expect(response.statusCode).toBe(202);
        expect(response.body).toBe(unverified.body);
        expect(response.headers['content-type']).toBe(unverified.headers['content-type']);
      }
      const second = await latestOutboxMail(app, ADA.email, {
        subject: MAIL_SUBJECT.verifyEmail,
        minCount: 2,
      });
      await settleBackgroundWork();
      expect(await outboxMails(app, 'nobody@example.com')).toEqual([]);
      expect(
        (await outboxMails(app, 'bob@example.com')).filter((m) => m.subject === MAIL_SUBJECT.verifyEmail),
      ).toHaveLength(1);
      expect((await verify(app, tokenFromLink(linkFromMail(second)))).statusCode).toBe(204);
    });

    it('verifying the address spends every other verification link of the account', async () => {
      const app = await start();
      const first = await signupForToken(app);
      await resend(app, ADA.email);
      const second = tokenFromLink(
        linkFromMail(
          await latestOutboxMail(app, ADA.email, { subject: MAIL_SUBJECT.verifyEmail, minCount: 2 }),
        ),
      );

      expect((await verify(app, second)).statusCode).toBe(204);

      expect((await verify(app, first)).json()).toMatchObject({ code: 'INVALID_ONE_TIME_TOKEN' });
    });

    it('before verification, sign-in answers 403 EMAIL_NOT_VERIFIED to the right password only', async () => {
      const app = await start();
      const token = await signupForToken(app);

      const right = await loginResponse(app, ADA.email, PASSWORD);
      expect(right.statusCode).toBe(403);
      expect(right.json()).toMatchObject({ code: 'EMAIL_NOT_VERIFIED' });

      const wrong = await loginResponse(app, ADA.email, OTHER_PASSWORD);
      expect(wrong.statusCode).toBe(401);
      expect(wrong.json()).toMatchObject({ code: 'INVALID_CREDENTIALS' });
      expect(await app.database.db.selectFrom('sessions').selectAll().execute()).toEqual([]);

      await verify(app, token);
      expect((await loginResponse(app, ADA.email, PASSWORD)).statusCode).toBe(200);
    });
  });

  describe('with a real SMTP server', () => {
    /** The decoded text of a raw message whose parts are quoted-printable (what nodemailer sends for long lines). */
    function decodeQuotedPrintable(raw: string): string {
      return raw
        .replace(/=\r?\n/g, '')
        .replace(/=([0-9A-F]{2})/g, (_match, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
    }

    /** The mail to `to` the SMTP server received, sending due mail jobs while it waits (the worker is off). */
    async function waitForMail(app: PlinthApp, smtp: TestSmtpServer, to: string): Promise<string> {
      const deadline = Date.now() + 10_000;
      for (;;) {
        await app.jobs.drain({ names: [MAIL_JOB] });
        const mail = smtp.received.find((m) => m.rcptTo.includes(to));
        if (mail) return mail.raw;
        if (Date.now() > deadline) throw new Error(`no mail to ${to} reached the SMTP server`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }

    it('delivers the verification mail through SMTP, with a link that verifies the address', async () => {
      const smtp = await startSmtpServer();
      cleanups.push(() => smtp.close());
      const app = await start({ env: { SMTP_URL: smtp.url, MAIL_FROM: 'Plinth <no-reply@example.test>' } });

      expect((await signup(app, ADA)).statusCode).toBe(201);

      const raw = decodeQuotedPrintable(await waitForMail(app, smtp, ADA.email));
      expect(raw).toMatch(/^Subject: Confirm your email address/m);
      const link = /https?:\/\/\S+\/verify-email#token=[A-Za-z0-9_-]+/.exec(raw)?.[0];
      expect(link?.startsWith(`${app.config.publicUrl}/verify-email#token=`)).toBe(true);
      expect(smtp.received[0]?.mailFrom).toBe('no-reply@example.test');
      // SMTP replaces the outbox: nothing is stored there.
      expect(await outboxMails(app, ADA.email)).toEqual([]);

      const verified = await app.inject({
        method: 'POST',
        url: '/api/v1/auth/email/verify',
        payload: { token: tokenFromLink(link ?? '') },
      });
      expect(verified.statusCode).toBe(204);
      await expect(login(app, ADA.email, PASSWORD)).resolves.toMatchObject({ tokenType: 'Bearer' });
    });
  });
});
