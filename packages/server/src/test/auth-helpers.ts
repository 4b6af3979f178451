import { createHmac } from 'node:crypto';
import { Problem, TokenPair as TokenPairSchema } from '@plinth/shared';
import type { LightMyRequestResponse } from 'fastify';
import type { Selectable } from 'kysely';
import { afterEach, expect } from 'vitest';
import type { PlinthApp } from '../app.ts';
import type { Clock } from '../core/clock.ts';
import type { Dialect } from '../db/database.ts';
import type { MailOutboxTable, UsersTable } from '../db/schema.ts';
import { createAdmin } from '../modules/auth/index.ts';
import { MAIL_JOB, mailTemplates } from '../modules/mail/index.ts';
import { buildTestApp, type TestAppOptions } from './harness.ts';

/**
 * Helpers for tests that go through the identity endpoints: sign up, verify, sign in, and read the mail the
 * development outbox stored. Every helper drives the app through `app.inject`, exactly as a client would, and
 * reads the database only to observe. Shared by several test files: keep the signatures stable.
 */

/** A `Clock` whose time only moves when a test says so. */
export interface FakeClock extends Clock {
  /** Moves time forward by `ms` milliseconds (backwards when negative). */
  advance(ms: number): void;
  /** Jumps to an absolute time. */
  set(at: Date | string): void;
}

/** A fake clock starting at `start` (default 2026-01-15T09:00:00Z). */
export function createFakeClock(start: Date | string = '2026-01-15T09:00:00.000Z'): FakeClock {
  let current = new Date(start).getTime();
  return {
    now: () => new Date(current),
    advance(ms) {
      current += ms;
    },
    set(at) {
      current = new Date(at).getTime();
    },
  };
}

/** Milliseconds in common units, for `clock.advance`. */
export const SECOND = 1000;
export const MINUTE = 60 * SECOND;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;

/**
 * Passwords the default policy accepts (length ≥ 15, not common, zxcvbn score ≥ 3), all different, none built
 * from the names or addresses the helpers' callers typically use. Use them instead of inventing weak ones.
 */
export const STRONG_PASSWORDS = [
  'violet harbor quantum meadow',
  'amber tractor whisper glacier',
  'granite moss picnic tulip voyage',
  'cobalt fig lantern orbit sunrise',
  'maple river quartz violin zebra',
  'copper kettle nebula saffron dune',
  'hollow pepper tundra marble kite',
  'silent walrus obsidian ferry plum',
] as const;

/** The password of the accounts `signup` creates and `loginWithPassword` signs in to. */
export const PASSWORD = 'violet tractor humming under seven moons';

/** The TOTP time step (RFC 6238), in seconds. */
const TOTP_STEP_SECONDS = 30;

/**
 * Base32 (RFC 4648) decoding, written here independently of the server's implementation; throws on a character
 * outside the alphabet.
 */
export function base32Decode(text: string): Buffer {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let buffer = 0;
  const out: number[] = [];
  for (const char of text.replace(/=+$/, '')) {
    const value = alphabet.indexOf(char);
    if (value < 0) throw new Error(`not base32: ${char}`);
    buffer = ((buffer << 5) | value) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      out.push((buffer >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** The 6-digit HMAC-SHA-1 code of the 30-second step that contains `at`. */
export function totp(secret: string, at: Date): string {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(at.getTime() / 1000 / TOTP_STEP_SECONDS)));
  const mac = createHmac('sha1', base32Decode(secret)).update(counter).digest();
  const offset = (mac.at(-1) ?? 0) & 0x0f;
  return String((mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).padStart(6, '0');
}

/** The subjects of the mails the identity module sends, taken from the templates themselves. */
export const MAIL_SUBJECT = {
  verifyEmail: mailTemplates.verifyEmail({ name: 'x', url: 'https://x.test/' }).subject,
  resetPassword: mailTemplates.resetPassword({ name: 'x', url: 'https://x.test/', expiresInMinutes: 30 })
    .subject,
  passwordChanged: mailTemplates.passwordChanged({ name: 'x', at: new Date(0) }).subject,
  newLogin: mailTemplates.newLogin({ name: 'x', at: new Date(0) }).subject,
  signupAttempt: mailTemplates.signupAttemptOnExistingAccount({ name: 'x', resetUrl: 'https://x.test/' })
    .subject,
  emailChangeRequested: mailTemplates.emailChangeRequested({ name: 'x', newEmail: 'y@x.test' }).subject,
} as const;

/** The body of a successful `POST /auth/login` or `/auth/refresh`. */
export interface TokenPair {
  accessToken: string;
  refreshToken: string;
  tokenType: 'Bearer';
  expiresIn: number;
}

/** Where a request comes from, for the throttling rules (per IP) and the sessions list. */
export interface ClientOptions {
  /** The client's address as the socket reports it; `127.0.0.1` when omitted. */
  remoteAddress?: string;
  userAgent?: string;
}

/** `{ authorization: 'Bearer <token>' }`, for `app.inject({ headers })`. */
export function bearer(accessToken: string): { authorization: string } {
  return { authorization: `Bearer ${accessToken}` };
}

/** Things to undo after a test (close an app, drop a database), run last first. */
export type Cleanups = (() => Promise<void>)[];

/**
 * A list of cleanups that runs, last first, after each test of the suite this is called in (the file, when
 * called at the top level; a `describe` block, when called inside one).
 */
export function cleanupAfterEach(): Cleanups {
  const cleanups: Cleanups = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  return cleanups;
}

/** Builds a test app with `buildTestApp` and registers its closing in `cleanups`. */
export async function startTestApp(
  dialect: Dialect,
  cleanups: Cleanups,
  options: TestAppOptions = {},
): Promise<PlinthApp> {
  const app = await buildTestApp(dialect, options);
  cleanups.push(() => app.close());
  return app;
}

/** `GET /me` with this access token, returning the raw response. */
/** Makes (or takes over) an installation operator's account on `app`, as `plinth create-admin` does. */
export function createOperator(
  app: PlinthApp,
  account: { email: string; password: string; name?: string },
): Promise<{ id: string; created: boolean }> {
  return createAdmin(
    { db: app.database.db, database: app.database, config: app.config, clock: app.clock },
    account,
  );
}

export function me(app: PlinthApp, accessToken: string) {
  return app.inject({ method: 'GET', url: '/api/v1/me', headers: bearer(accessToken) });
}

/** `POST /auth/refresh` with this refresh token, returning the raw response. */
export function refresh(app: PlinthApp, refreshToken: string) {
  return app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refreshToken } });
}

/** Asserts an RFC 9457 problem+json answer with this status and `code`. */
export function expectProblem(res: LightMyRequestResponse, status: number, code: string): void {
  expect(res.statusCode).toBe(status);
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(Problem.parse(res.json()).code).toBe(code);
}

/**
 * Signs up `email` with `PASSWORD` (name Ada Lovelace), expecting 201. For installations that do not require
 * email verification; use `signupAndVerify` otherwise.
 */
export async function signup(app: PlinthApp, email: string): Promise<void> {
  const res = await app.inject({
    method: 'POST',
    url: '/api/v1/auth/signup',
    payload: { email, password: PASSWORD, name: 'Ada Lovelace' },
  });
  expect(res.statusCode).toBe(201);
}

/**
 * Signs in to an account made by `signup` (password `PASSWORD`), expecting 200, and returns the token pair
 * checked against the shared `TokenPair` schema.
 */
export async function loginWithPassword(
  app: PlinthApp,
  email: string,
  client: ClientOptions = {},
): Promise<TokenPair> {
  const res = await loginResponse(app, email, PASSWORD, client);
  expect(res.statusCode).toBe(200);
  return TokenPairSchema.parse(res.json());
}

/** The canonical form of an email address, as the server stores it (NFKC, trimmed, lower-cased). */
export function normalizedEmail(email: string): string {
  return email.normalize('NFKC').trim().toLowerCase();
}

/**
 * Signs up and, when the installation requires it, follows the verification link from the outbox, so the
 * account can sign in. Fails the test (throws) on any unexpected answer.
 *
 * @returns the new user's id and stored (normalised) address.
 */
export async function signupAndVerify(
  app: PlinthApp,
  input: { email: string; password: string; name: string },
): Promise<{ userId: string; email: string }> {
  const response = await app.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: input });
  if (response.statusCode !== 201)
    throw new Error(`sign-up answered ${response.statusCode}: ${response.body}`);
  const { verificationRequired } = response.json<{ email: string; verificationRequired: boolean }>();
  const email = normalizedEmail(input.email);
  if (verificationRequired) {
    const mail = await latestOutboxMail(app, email, { subject: MAIL_SUBJECT.verifyEmail });
    await verifyEmailToken(app, tokenFromLink(linkFromMail(mail)));
  }
  const user = await findUser(app, email);
  if (!user) throw new Error(`sign-up of ${email} left no user row`);
  return { userId: user.id, email };
}

/** `POST /auth/email/verify`; throws unless it answers 204. */
export async function verifyEmailToken(app: PlinthApp, token: string): Promise<void> {
  const response = await app.inject({ method: 'POST', url: '/api/v1/auth/email/verify', payload: { token } });
  if (response.statusCode !== 204)
    throw new Error(`email verification answered ${response.statusCode}: ${response.body}`);
}

/**
 * Signs in with email and password and returns the token pair. Throws when the answer is anything else
 * (an error, or a second-factor challenge).
 */
export async function login(
  app: PlinthApp,
  email: string,
  password: string,
  client: ClientOptions = {},
): Promise<TokenPair> {
  const response = await loginResponse(app, email, password, client);
  if (response.statusCode !== 200)
    throw new Error(`sign-in answered ${response.statusCode}: ${response.body}`);
  const body = response.json<TokenPair | { mfaRequired: true }>();
  if ('mfaRequired' in body) throw new Error('sign-in asked for a second factor');
  return body;
}

/** `POST /auth/login`, returning the raw response whatever it is. */
export function loginResponse(app: PlinthApp, email: string, password: string, client: ClientOptions = {}) {
  return app.inject({
    method: 'POST',
    url: '/api/v1/auth/login',
    payload: { email, password },
    ...(client.remoteAddress === undefined ? {} : { remoteAddress: client.remoteAddress }),
    ...(client.userAgent === undefined ? {} : { headers: { 'user-agent': client.userAgent } }),
  });
}

/** The user row with this address (normalised first), or undefined. */
export async function findUser(app: PlinthApp, email: string): Promise<Selectable<UsersTable> | undefined> {
  return app.database.db
    .selectFrom('users')
    .selectAll()
    .where('email', '=', normalizedEmail(email))
    .executeTakeFirst();
}

/** A row of the development outbox (`mail_outbox`). */
export type OutboxMail = Selectable<MailOutboxTable>;

/**
 * Every mail the outbox holds for `to` (normalised first), oldest first — after sending every mail that is due
 * (mail is a job, and test apps run jobs only when a test drains them).
 */
export async function outboxMails(app: PlinthApp, to: string): Promise<OutboxMail[]> {
  await app.jobs.drain({ names: [MAIL_JOB] });
  return (
    app.database.db
      .selectFrom('mail_outbox')
      .selectAll()
      .where('recipient', '=', normalizedEmail(to))
      .orderBy('created_at', 'asc')
      // Ids are UUIDv7, increasing within the process, so they order mails stored in the same millisecond.
      .orderBy('id', 'asc')
      .execute()
  );
}

export interface MailWaitOptions {
  /** Only mails with this subject (exact string, or a pattern). */
  subject?: string | RegExp;
  /** Wait until at least this many matching mails exist (default 1), e.g. 2 for the second verification mail. */
  minCount?: number;
  /** How long to poll before failing, in milliseconds (default 5000). */
  timeoutMs?: number;
}

/**
 * The newest mail to `to` in the outbox, waiting for it: mail is sent in the background after the response,
 * so the row appears shortly after the request that caused it. Throws if none arrives in time.
 */
export async function latestOutboxMail(
  app: PlinthApp,
  to: string,
  options: MailWaitOptions = {},
): Promise<OutboxMail> {
  const { subject, minCount = 1, timeoutMs = 5000 } = options;
  const matches = (mail: OutboxMail) =>
    subject === undefined ||
    (typeof subject === 'string' ? mail.subject === subject : subject.test(mail.subject));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const mails = (await outboxMails(app, to)).filter(matches);
    const latest = mails.at(-1);
    if (latest && mails.length >= minCount) return latest;
    if (Date.now() > deadline) {
      throw new Error(
        `no mail${subject === undefined ? '' : ` "${String(subject)}"`} to ${to} (wanted ${minCount}, found ${mails.length})`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/**
 * Gives work started in the background (mail, deferred account tasks) time to finish, before a test asserts
 * that something was *not* sent. Prefer waiting for a positive signal where there is one.
 */
export function settleBackgroundWork(ms = 150): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The action link (the first URL carrying `#token=`) of a mail's text part. */
export function linkFromMail(mail: Pick<OutboxMail, 'text_body'>): string {
  const match = /https?:\/\/\S+#token=[A-Za-z0-9_-]+/.exec(mail.text_body);
  if (!match) throw new Error(`no link with a token in mail:\n${mail.text_body}`);
  return match[0];
}

/** The token of a link of the form `<PUBLIC_URL>/<page>#token=<token>`. */
export function tokenFromLink(url: string): string {
  const token = new URLSearchParams(new URL(url).hash.slice(1)).get('token');
  if (!token) throw new Error(`no #token= in ${url}`);
  return token;
}

/** A problem+json body without its `requestId`, which differs per request, for comparing two answers. */
export function withoutRequestId(body: string): Record<string, unknown> {
  const { requestId: _requestId, ...rest } = JSON.parse(body) as Record<string, unknown>;
  return rest;
}
