import { MfaChallenge, RecoveryCodes, TokenPair, TotpEnrollment } from '@plinth/shared';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { PlinthApp } from '../../app.ts';
import {
  base32Decode,
  bearer,
  cleanupAfterEach,
  createFakeClock,
  expectProblem,
  type FakeClock,
  loginWithPassword,
  outboxMails,
  PASSWORD,
  SECOND,
  signup,
  startTestApp,
  totp,
} from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';

// Two-factor authentication with an authenticator app (ASVS 6.3.3, 6.4.3, 6.5.1, 6.5.5): enrolment behind the
// password, codes computed here independently from the RFCs, single use of every code, recovery codes, lockout,
// and no way around the second factor (not the MFA token, not a password reset).

const NEW_PASSWORD = 'copper lantern drifting past nine harbours';
const EMAIL = 'ada@example.com';
/** Ten seconds into a 30-second TOTP step, so that "the same step" and "the next step" are unambiguous. */
const START = '2030-03-04T09:00:10.000Z';
const STEP = 30;
type Dialect = (typeof testDialects)[number];

/** A code that is wrong at `at`: none of the codes of the steps a verifier may accept (±1). */
function wrongCode(secret: string, at: Date): string {
  const acceptable = [-STEP, 0, STEP].map((offset) => totp(secret, new Date(at.getTime() + offset * 1000)));
  for (let n = 0; ; n++) {
    const candidate = String(n).padStart(6, '0');
    if (!acceptable.includes(candidate)) return candidate;
  }
}

// --- The app and its API -------------------------------------------------------------------------------------------

const cleanups = cleanupAfterEach();

function startApp(dialect: Dialect, clock: FakeClock): Promise<PlinthApp> {
  return startTestApp(dialect, cleanups, { clock, env: { REQUIRE_EMAIL_VERIFICATION: 'false' } });
}

const loginRequest = (app: PlinthApp, password = PASSWORD, email = EMAIL) =>
  app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password } });

const loginWithoutMfa = (app: PlinthApp) => loginWithPassword(app, EMAIL);

/** Signs in with the password when two-factor authentication is on: the MFA token, and nothing else. */
async function passwordStep(app: PlinthApp, password = PASSWORD): Promise<string> {
  const res = await loginRequest(app, password);
  expect(res.statusCode).toBe(200);
  const body = z.record(z.string(), z.unknown()).parse(res.json());
  expect(Object.keys(body).sort()).toEqual(['mfaRequired', 'mfaToken']);
  return MfaChallenge.parse(body).mfaToken;
}

const verify = (app: PlinthApp, mfaToken: string, code: string) =>
  app.inject({ method: 'POST', url: '/api/v1/auth/mfa/verify', payload: { mfaToken, code } });

const enroll = (app: PlinthApp, accessToken: string, password = PASSWORD) =>
  app.inject({
    method: 'POST',
    url: '/api/v1/auth/mfa/totp/enroll',
    headers: bearer(accessToken),
    payload: { password },
  });

const confirm = (app: PlinthApp, accessToken: string, code: string) =>
  app.inject({
    method: 'POST',
    url: '/api/v1/auth/mfa/totp/confirm',
    headers: bearer(accessToken),
    payload: { code },
  });

async function mfaEnabled(app: PlinthApp, accessToken: string): Promise<boolean> {
  const res = await app.inject({ method: 'GET', url: '/api/v1/me', headers: bearer(accessToken) });
  expect(res.statusCode).toBe(200);
  return z.object({ mfaEnabled: z.boolean() }).parse(res.json()).mfaEnabled;
}

/** Signs up, enrols and confirms an authenticator at the clock's time; the code used for that is now spent. */
async function userWithMfa(app: PlinthApp, clock: FakeClock) {
  await signup(app, EMAIL);
  const pair = await loginWithoutMfa(app);
  const enrolled = TotpEnrollment.parse((await enroll(app, pair.accessToken)).json());
  const confirmed = await confirm(app, pair.accessToken, totp(enrolled.secret, clock.now()));
  expect(confirmed.statusCode).toBe(200);
  const { recoveryCodes } = RecoveryCodes.parse(confirmed.json());
  return { pair, secret: enrolled.secret, recoveryCodes };
}

describe.each(testDialects)('TOTP enrolment (%s)', (dialect) => {
  it('needs the current password, and stores nothing on a wrong one', async () => {
    const app = await startApp(dialect, createFakeClock(START));
    await signup(app, EMAIL);
    const pair = await loginWithoutMfa(app);

    expectProblem(
      await enroll(app, pair.accessToken, 'not the password at all, sorry'),
      403,
      'WRONG_PASSWORD',
    );
    const row = await app.database.db
      .selectFrom('users')
      .select('totp_secret')
      .where('email', '=', EMAIL)
      .executeTakeFirstOrThrow();
    expect(row.totp_secret).toBeNull();
  });

  it('hands out a base32 secret and an otpauth URI for it, and keeps the secret encrypted', async () => {
    const app = await startApp(dialect, createFakeClock(START));
    await signup(app, EMAIL);
    const pair = await loginWithoutMfa(app);

    const res = await enroll(app, pair.accessToken);
    expect(res.statusCode).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    const { secret, otpauthUri } = TotpEnrollment.parse(res.json());
    expect(secret).toMatch(/^[A-Z2-7]{32}$/);
    expect(base32Decode(secret)).toHaveLength(20);

    const uri = new URL(otpauthUri);
    expect(uri.protocol).toBe('otpauth:');
    expect(uri.host).toBe('totp');
    expect(decodeURIComponent(uri.pathname)).toBe(`/Plinth:${EMAIL}`);
    expect(uri.searchParams.get('secret')).toBe(secret);
    expect(uri.searchParams.get('issuer')).toBe('Plinth');
    expect(uri.searchParams.get('algorithm')).toBe('SHA1');
    expect(uri.searchParams.get('digits')).toBe('6');
    expect(uri.searchParams.get('period')).toBe('30');

    const { totp_secret: stored } = await app.database.db
      .selectFrom('users')
      .select('totp_secret')
      .where('email', '=', EMAIL)
      .executeTakeFirstOrThrow();
    expect(stored).toEqual(expect.any(String));
    expect(stored).not.toBe(secret);
    expect(stored).not.toContain(secret);
    expect(stored?.toLowerCase()).not.toContain(secret.toLowerCase());
    expect(stored).not.toContain(base32Decode(secret).toString('hex'));
    expect(stored).not.toContain(base32Decode(secret).toString('base64url'));
  });

  it('does not turn two-factor authentication on before a code confirms it', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    await signup(app, EMAIL);
    const pair = await loginWithoutMfa(app);
    const { secret } = TotpEnrollment.parse((await enroll(app, pair.accessToken)).json());

    expectProblem(
      await confirm(app, pair.accessToken, wrongCode(secret, clock.now())),
      401,
      'INVALID_MFA_CODE',
    );
    expect(await mfaEnabled(app, pair.accessToken)).toBe(false);
    // Sign-in still needs only the password.
    expect(TokenPair.safeParse((await loginRequest(app)).json()).success).toBe(true);
  });

  it('is confirmed by a code computed from the secret, and returns ten distinct recovery codes', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    const { pair, recoveryCodes } = await userWithMfa(app, clock);

    expect(recoveryCodes).toHaveLength(10);
    expect(new Set(recoveryCodes).size).toBe(10);
    for (const code of recoveryCodes)
      expect(code.replace(/[^0-9a-z]/gi, '').length).toBeGreaterThanOrEqual(10);
    expect(await mfaEnabled(app, pair.accessToken)).toBe(true);
    // Recovery codes are stored as hashes only.
    const stored = await app.database.db.selectFrom('recovery_codes').select('code_hash').execute();
    expect(stored).toHaveLength(10);
    for (const { code_hash } of stored)
      for (const code of recoveryCodes) expect(code_hash).not.toContain(code);
  });

  it('refuses to enrol or confirm again while two-factor authentication is on', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    const { pair, secret } = await userWithMfa(app, clock);
    clock.advance(STEP * SECOND);
    expectProblem(await enroll(app, pair.accessToken), 409, 'MFA_ALREADY_ENABLED');
    expectProblem(
      await confirm(app, pair.accessToken, totp(secret, clock.now())),
      409,
      'MFA_ALREADY_ENABLED',
    );
  });

  it('refuses a confirmation without an enrolment', async () => {
    const app = await startApp(dialect, createFakeClock(START));
    await signup(app, EMAIL);
    const pair = await loginWithoutMfa(app);
    expectProblem(await confirm(app, pair.accessToken, '123456'), 409, 'MFA_NOT_ENROLLED');
  });
});

describe.each(testDialects)('signing in with a second factor (%s)', (dialect) => {
  it('answers the password with an MFA challenge only, and a current code with a token pair', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    const { secret } = await userWithMfa(app, clock);
    clock.advance(STEP * SECOND);

    const mfaToken = await passwordStep(app);
    const res = await verify(app, mfaToken, totp(secret, clock.now()));
    expect(res.statusCode).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    const pair = TokenPair.parse(res.json());
    expect(await mfaEnabled(app, pair.accessToken)).toBe(true);
  });

  it('accepts a code once: the same code is refused at a new sign-in in the same step; the next step’s works', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    const { secret } = await userWithMfa(app, clock);
    clock.advance(STEP * SECOND);
    const code = totp(secret, clock.now());
    expect((await verify(app, await passwordStep(app), code)).statusCode).toBe(200);

    clock.advance(5 * SECOND);
    expectProblem(await verify(app, await passwordStep(app), code), 401, 'INVALID_MFA_CODE');

    clock.advance(STEP * SECOND);
    const next = totp(secret, clock.now());
    expect(next).not.toBe(code);
    expect((await verify(app, await passwordStep(app), next)).statusCode).toBe(200);
    // Once a later step is used, an earlier step's code (still within the drift window) is refused too.
    clock.advance(1 * SECOND);
    expectProblem(await verify(app, await passwordStep(app), code), 401, 'INVALID_MFA_CODE');
  });

  it('refuses the code that confirmed the enrolment', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    const { secret } = await userWithMfa(app, clock);
    expectProblem(
      await verify(app, await passwordStep(app), totp(secret, clock.now())),
      401,
      'INVALID_MFA_CODE',
    );
  });

  it('accepts each recovery code once', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    const { recoveryCodes } = await userWithMfa(app, clock);
    const [first = '', second = ''] = recoveryCodes;

    expect((await verify(app, await passwordStep(app), first)).statusCode).toBe(200);
    expectProblem(await verify(app, await passwordStep(app), first), 401, 'INVALID_MFA_CODE');
    expect((await verify(app, await passwordStep(app), second)).statusCode).toBe(200);
  });

  it('locks the account after five wrong codes, even against a right code and the right password', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    const { secret } = await userWithMfa(app, clock);
    clock.advance(STEP * SECOND);

    const mfaToken = await passwordStep(app);
    for (let i = 0; i < 5; i++) {
      expectProblem(await verify(app, mfaToken, wrongCode(secret, clock.now())), 401, 'INVALID_MFA_CODE');
    }
    const locked = await verify(app, mfaToken, totp(secret, clock.now()));
    expectProblem(locked, 423, 'ACCOUNT_LOCKED');
    expect(Number(locked.headers['retry-after'])).toBeGreaterThan(0);
    expectProblem(await loginRequest(app), 423, 'ACCOUNT_LOCKED');

    // The lock is temporary; afterwards the second factor is still required.
    clock.advance((15 * 60 + 1) * SECOND);
    expect((await verify(app, await passwordStep(app), totp(secret, clock.now()))).statusCode).toBe(200);
  });

  it('does not let a correct password reset the count of wrong codes', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    const { secret } = await userWithMfa(app, clock);
    clock.advance(STEP * SECOND);

    // Someone who knows the password must not get unlimited guesses by signing in again between them.
    const first = await passwordStep(app);
    for (let i = 0; i < 4; i++) await verify(app, first, wrongCode(secret, clock.now()));
    const second = await passwordStep(app);
    expectProblem(await verify(app, second, wrongCode(secret, clock.now())), 401, 'INVALID_MFA_CODE');
    expectProblem(await verify(app, second, totp(secret, clock.now())), 423, 'ACCOUNT_LOCKED');
  });

  it('counts wrong passwords and wrong codes together', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    const { secret } = await userWithMfa(app, clock);
    clock.advance(STEP * SECOND);

    for (let i = 0; i < 3; i++) {
      expectProblem(await loginRequest(app, 'not the password at all, sorry'), 401, 'INVALID_CREDENTIALS');
    }
    const mfaToken = await passwordStep(app);
    for (let i = 0; i < 2; i++) await verify(app, mfaToken, wrongCode(secret, clock.now()));
    expectProblem(await verify(app, mfaToken, totp(secret, clock.now())), 423, 'ACCOUNT_LOCKED');
  });

  it('refuses an expired MFA token without spending the code', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    const { secret } = await userWithMfa(app, clock);
    const mfaToken = await passwordStep(app);

    clock.advance(6 * 60 * SECOND);
    const code = totp(secret, clock.now());
    expectProblem(await verify(app, mfaToken, code), 401, 'INVALID_TOKEN');
    expect((await verify(app, await passwordStep(app), code)).statusCode).toBe(200);
  });

  it('accepts only an MFA token: not an access token, a refresh token or a tampered MFA token', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    const { pair, secret } = await userWithMfa(app, clock);
    clock.advance(STEP * SECOND);
    const code = totp(secret, clock.now());

    expectProblem(await verify(app, pair.accessToken, code), 401, 'INVALID_TOKEN');
    expectProblem(await verify(app, pair.refreshToken, code), 401, 'INVALID_TOKEN');
    const mfaToken = await passwordStep(app);
    const [header, payload, signature = ''] = mfaToken.split('.');
    const flipped = `${signature.slice(0, -2)}${signature.endsWith('AA') ? 'BB' : 'AA'}`;
    expectProblem(await verify(app, `${header}.${payload}.${flipped}`, code), 401, 'INVALID_TOKEN');
    // None of that spent the code.
    expect((await verify(app, mfaToken, code)).statusCode).toBe(200);
  });

  it('is not bypassed by a password reset', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    const { pair, secret } = await userWithMfa(app, clock);

    const forgot = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/password/forgot',
      payload: { email: EMAIL },
    });
    expect(forgot.statusCode).toBe(202);
    const token = await resetTokenFromOutbox(app, EMAIL);
    const reset = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/password/reset',
      payload: { token, password: NEW_PASSWORD },
    });
    expect(reset.statusCode).toBe(204);

    // The reset ended the old sessions, and the new password still leads only to the second factor.
    expectProblem(
      await app.inject({ method: 'GET', url: '/api/v1/me', headers: bearer(pair.accessToken) }),
      401,
      'SESSION_REVOKED',
    );
    expectProblem(await loginRequest(app), 401, 'INVALID_CREDENTIALS');
    const mfaToken = await passwordStep(app, NEW_PASSWORD);
    clock.advance(STEP * SECOND);
    const signedIn = TokenPair.parse((await verify(app, mfaToken, totp(secret, clock.now()))).json());
    expect(await mfaEnabled(app, signedIn.accessToken)).toBe(true);
  });
});

/** The token of the newest password-reset link mailed to `email` (the development outbox), waiting briefly for it. */
async function resetTokenFromOutbox(app: PlinthApp, email: string): Promise<string> {
  // The mail is written after the 202 is sent; poll for it, bounded so a missing mail fails instead of hanging.
  for (let attempt = 0; attempt < 100; attempt++) {
    const rows = await outboxMails(app, email);
    for (const { text_body } of rows) {
      const match = /reset-password#token=([A-Za-z0-9_-]+)/.exec(text_body);
      if (match?.[1]) return match[1];
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`no password-reset mail for ${email} in the outbox`);
}

describe.each(testDialects)('managing two-factor authentication (%s)', (dialect) => {
  const disable = (app: PlinthApp, accessToken: string, password: string, code: string) =>
    app.inject({
      method: 'POST',
      url: '/api/v1/auth/mfa/totp/disable',
      headers: bearer(accessToken),
      payload: { password, code },
    });
  const regenerate = (app: PlinthApp, accessToken: string, password: string, code: string) =>
    app.inject({
      method: 'POST',
      url: '/api/v1/auth/mfa/recovery-codes',
      headers: bearer(accessToken),
      payload: { password, code },
    });

  it('turns off only with the password and a current code', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    const { pair, secret } = await userWithMfa(app, clock);
    clock.advance(STEP * SECOND);
    const code = totp(secret, clock.now());

    expectProblem(
      await disable(app, pair.accessToken, 'not the password at all, sorry', code),
      403,
      'WRONG_PASSWORD',
    );
    expectProblem(
      await disable(app, pair.accessToken, PASSWORD, wrongCode(secret, clock.now())),
      401,
      'INVALID_MFA_CODE',
    );
    expect(await mfaEnabled(app, pair.accessToken)).toBe(true);

    const res = await disable(app, pair.accessToken, PASSWORD, code);
    expect(res.statusCode).toBe(204);
    expect(await mfaEnabled(app, pair.accessToken)).toBe(false);
    expect(TokenPair.safeParse((await loginRequest(app)).json()).success).toBe(true);
    const row = await app.database.db
      .selectFrom('users')
      .select(['totp_secret', 'totp_enabled_at'])
      .where('email', '=', EMAIL)
      .executeTakeFirstOrThrow();
    expect(row).toEqual({ totp_secret: null, totp_enabled_at: null });
    expect(await app.database.db.selectFrom('recovery_codes').select('id').execute()).toEqual([]);
    clock.advance(STEP * SECOND);
    expectProblem(
      await disable(app, pair.accessToken, PASSWORD, totp(secret, clock.now())),
      409,
      'MFA_NOT_ENABLED',
    );
  });

  it('replaces the recovery codes, with the password and a current code; the old ones stop working', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock);
    const { pair, secret, recoveryCodes: old } = await userWithMfa(app, clock);
    clock.advance(STEP * SECOND);
    const code = totp(secret, clock.now());

    expectProblem(
      await regenerate(app, pair.accessToken, 'not the password at all, sorry', code),
      403,
      'WRONG_PASSWORD',
    );
    expectProblem(
      await regenerate(app, pair.accessToken, PASSWORD, wrongCode(secret, clock.now())),
      401,
      'INVALID_MFA_CODE',
    );
    const res = await regenerate(app, pair.accessToken, PASSWORD, code);
    expect(res.statusCode).toBe(200);
    const { recoveryCodes: fresh } = RecoveryCodes.parse(res.json());
    expect(fresh).toHaveLength(10);
    expect(new Set(fresh).size).toBe(10);
    expect(fresh.filter((c) => old.includes(c))).toEqual([]);

    expectProblem(await verify(app, await passwordStep(app), old[0] ?? ''), 401, 'INVALID_MFA_CODE');
    expect((await verify(app, await passwordStep(app), fresh[0] ?? '')).statusCode).toBe(200);
  });
});
