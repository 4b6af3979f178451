import { authErrors } from '@plinth/shared';
import type { Insertable, Kysely, Selectable } from 'kysely';
import { randomToken, sha256Hex } from '../../core/crypto.ts';
import { AppError } from '../../core/errors.ts';
import { newId } from '../../core/ids.ts';
import type { Database, UsersTable } from '../../db/schema.ts';
import { fieldChanges } from '../audit/record.ts';
import { mailTemplates, sendInBackground } from '../mail/index.ts';
import { type AccountCaller, auditAccount, selfCaller, systemCaller } from './account-audit.ts';
import { type AuthDeps, type ClientInfo, normalizeEmail } from './deps.ts';
import { hashPassword, verifyPassword } from './password.ts';
import { assertPasswordAcceptable } from './password-policy.ts';
import { revokeUserSessions } from './session.service.ts';
import { assertNotLocked, clearFailures, emailKey, recordAuditedFailure } from './throttle.ts';

/** How long an email-verification link stays valid, in seconds. */
const VERIFY_EMAIL_TTL_SECONDS = 24 * 60 * 60;
/** How long a password-reset link stays valid, in seconds. */
const RESET_PASSWORD_TTL_SECONDS = 30 * 60;

/** The account as its owner sees it (`GET /me`). Secrets and internal state never appear here. */
export interface Me {
  id: string;
  email: string;
  name: string;
  emailVerified: boolean;
  mfaEnabled: boolean;
  platformRole: 'superadmin' | null;
  createdAt: string;
}

export function toMe(
  user: Pick<
    Selectable<UsersTable>,
    'id' | 'email' | 'name' | 'email_verified_at' | 'totp_enabled_at' | 'platform_role' | 'created_at'
  >,
): Me {
  return {
    id: user.id,
    email: user.email,
    name: user.name,
    emailVerified: user.email_verified_at !== null,
    mfaEnabled: user.totp_enabled_at !== null,
    platformRole: user.platform_role,
    createdAt: user.created_at,
  };
}

const policyOf = (deps: Pick<AuthDeps, 'config'>) => ({
  minLength: deps.config.auth.passwordMinLength,
  minScore: deps.config.auth.passwordMinScore,
});

export async function findUserByEmail(deps: Pick<AuthDeps, 'db'>, email: string) {
  return deps.db
    .selectFrom('users')
    .selectAll()
    .where('email', '=', normalizeEmail(email))
    .executeTakeFirst();
}

export async function getUser(deps: AuthDeps, userId: string) {
  const user = await deps.db.selectFrom('users').selectAll().where('id', '=', userId).executeTakeFirst();
  if (!user) throw new AppError(authErrors.USER_NOT_FOUND);
  return user;
}

/** Creates a one-time token (stored hashed) and returns the link that carries it. */
async function issueOneTimeLink(
  deps: AuthDeps,
  userId: string,
  purpose: 'verify_email' | 'reset_password',
  ttlSeconds: number,
  target: string | null,
): Promise<string> {
  const now = deps.clock.now();
  const token = randomToken(32);
  await deps.db
    .insertInto('one_time_tokens')
    .values({
      id: newId(),
      user_id: userId,
      purpose,
      token_hash: sha256Hex(token),
      target,
      created_at: now.toISOString(),
      expires_at: new Date(now.getTime() + ttlSeconds * 1000).toISOString(),
      used_at: null,
    })
    .execute();
  const path = purpose === 'verify_email' ? 'verify-email' : 'reset-password';
  // The token travels in the fragment, which browsers never send to servers or put in Referer headers.
  return `${deps.config.publicUrl}/${path}#token=${token}`;
}

/** Finds a live one-time token (valid, unexpired, unused) without spending it, or INVALID_ONE_TIME_TOKEN. */
async function findOneTimeToken(deps: AuthDeps, token: string, purpose: 'verify_email' | 'reset_password') {
  const row = await deps.db
    .selectFrom('one_time_tokens')
    .select(['id', 'user_id', 'target'])
    .where('token_hash', '=', sha256Hex(token))
    .where('purpose', '=', purpose)
    .where('used_at', 'is', null)
    .where('expires_at', '>', deps.clock.now().toISOString())
    .executeTakeFirst();
  if (!row) throw new AppError(authErrors.INVALID_ONE_TIME_TOKEN);
  return row;
}

/** Spends a token {@link findOneTimeToken} found, in `db`; INVALID_ONE_TIME_TOKEN if another request spent it. */
async function spendOneTimeToken(deps: AuthDeps, db: Kysely<Database>, id: string): Promise<void> {
  const spent = await db
    .updateTable('one_time_tokens')
    .set({ used_at: deps.clock.now().toISOString() })
    .where('id', '=', id)
    .where('used_at', 'is', null)
    .executeTakeFirst();
  if (Number(spent.numUpdatedRows) === 0) throw new AppError(authErrors.INVALID_ONE_TIME_TOKEN);
}

/** Spends a one-time token: valid, unexpired and unused, or INVALID_ONE_TIME_TOKEN. */
async function consumeOneTimeToken(
  deps: AuthDeps,
  token: string,
  purpose: 'verify_email' | 'reset_password',
) {
  const row = await findOneTimeToken(deps, token, purpose);
  await spendOneTimeToken(deps, deps.db, row.id);
  return row;
}

/**
 * Spends every link of one purpose a user still holds, once what they were for has happened: a link mailed
 * earlier (to an address since abandoned, or before the password changed) must not work afterwards.
 */
async function spendOutstandingTokens(
  db: AuthDeps['db'],
  userId: string,
  purpose: 'verify_email' | 'reset_password',
  nowIso: string,
): Promise<void> {
  await db
    .updateTable('one_time_tokens')
    .set({ used_at: nowIso })
    .where('user_id', '=', userId)
    .where('purpose', '=', purpose)
    .where('used_at', 'is', null)
    .execute();
}

async function sendVerification(
  deps: AuthDeps,
  user: { id: string; name: string },
  address: string,
): Promise<void> {
  const url = await issueOneTimeLink(deps, user.id, 'verify_email', VERIFY_EMAIL_TTL_SECONDS, address);
  sendInBackground(
    deps.mailer,
    { to: address, ...mailTemplates.verifyEmail({ name: user.name, url }), actionUrl: url },
    deps.log,
  );
}

/** A new, ordinary account's row: no second factor, no platform role. */
function newUserRow(input: {
  email: string;
  name: string;
  passwordHash: string;
  now: string;
  verified: boolean;
}): Insertable<UsersTable> {
  return {
    id: newId(),
    email: input.email,
    name: input.name,
    password_hash: input.passwordHash,
    password_changed_at: input.now,
    email_verified_at: input.verified ? input.now : null,
    disabled_at: null,
    platform_role: null,
    totp_secret: null,
    totp_enabled_at: null,
    totp_last_step: null,
    created_at: input.now,
    updated_at: input.now,
  };
}

/** Inserts an account and starts its password history. */
async function insertUser(db: Kysely<Database>, user: Insertable<UsersTable>): Promise<void> {
  await db.insertInto('users').values(user).execute();
  await db
    .insertInto('password_history')
    .values({ id: newId(), user_id: user.id, password_hash: user.password_hash, created_at: user.created_at })
    .execute();
}

/**
 * An account for someone accepting an invitation, created in the caller's transaction (together with the
 * membership). The invitation token proved the address, so it is verified; sign-up being closed does not
 * matter. The password policy is checked and the password hashed here, before the caller's transaction opens,
 * so that no transaction waits for argon2.
 */
export async function prepareInvitedAccount(
  deps: Pick<AuthDeps, 'config' | 'clock'>,
  input: { email: string; name: string; password: string },
): Promise<{ id: string; insert(db: Kysely<Database>): Promise<void> }> {
  const email = normalizeEmail(input.email);
  assertPasswordAcceptable(input.password, policyOf(deps), [email, input.name]);
  const passwordHash = await hashPassword(input.password, deps.config.auth.argon2);
  const user = newUserRow({
    email,
    name: input.name,
    passwordHash,
    now: deps.clock.now().toISOString(),
    verified: true,
  });
  return { id: user.id, insert: (db) => insertUser(db, user) };
}

/**
 * Registers an account. With email verification on (the default), an already-registered address gets the very
 * same answer as a new one — its owner is mailed a notice instead — so sign-up cannot be used to find out who
 * has an account. The password is hashed in both cases, so the answer takes as long either way.
 */
export async function signup(
  deps: AuthDeps,
  input: { email: string; password: string; name: string },
  client: ClientInfo,
): Promise<{ email: string; verificationRequired: boolean }> {
  const { auth } = deps.config;
  if (!auth.signupEnabled) throw new AppError(authErrors.SIGNUP_DISABLED);
  const email = normalizeEmail(input.email);
  assertPasswordAcceptable(input.password, policyOf(deps), [email, input.name]);
  const passwordHash = await hashPassword(input.password, auth.argon2);

  const existing = await findUserByEmail(deps, email);
  if (existing) {
    if (!auth.requireEmailVerification) throw new AppError(authErrors.EMAIL_TAKEN);
    const resetUrl = `${deps.config.publicUrl}/forgot-password`;
    sendInBackground(
      deps.mailer,
      { to: email, ...mailTemplates.signupAttemptOnExistingAccount({ name: existing.name, resetUrl }) },
      deps.log,
    );
    return { email, verificationRequired: true };
  }

  const now = deps.clock.now().toISOString();
  const user = newUserRow({
    email,
    name: input.name,
    passwordHash,
    now,
    verified: !auth.requireEmailVerification,
  });
  const userId = user.id as string;
  try {
    await auditAccount(deps, userId, selfCaller(userId, client), async (trx, record) => {
      await insertUser(trx, user);
      await record({ action: 'user.created', target: { type: 'user', id: userId } });
    });
  } catch (error) {
    // Two sign-ups for one address at the same moment: the unique index decides, the loser is answered as above.
    if (await findUserByEmail(deps, email)) {
      if (!auth.requireEmailVerification) throw new AppError(authErrors.EMAIL_TAKEN);
      return { email, verificationRequired: true };
    }
    throw error;
  }
  if (auth.requireEmailVerification) await sendVerification(deps, user, email);
  deps.log.info({ userId: user.id }, 'account created');
  return { email, verificationRequired: auth.requireEmailVerification };
}

/** Confirms an address from a verification link: the account's own, or a new one the owner asked to switch to. */
export async function verifyEmail(deps: AuthDeps, token: string, client: ClientInfo): Promise<void> {
  const row = await consumeOneTimeToken(deps, token, 'verify_email');
  const now = deps.clock.now().toISOString();
  const user = await getUser(deps, row.user_id);
  const address = row.target ?? user.email;
  if (address !== user.email && (await findUserByEmail(deps, address))) {
    throw new AppError(authErrors.EMAIL_TAKEN);
  }
  await auditAccount(deps, user.id, selfCaller(user.id, client), async (trx, record) => {
    await trx
      .updateTable('users')
      .set({ email: address, email_verified_at: now, updated_at: now })
      .where('id', '=', user.id)
      .execute();
    // Older links (to this address or to another one asked for earlier) could otherwise switch the address back.
    await spendOutstandingTokens(trx, user.id, 'verify_email', now);
    await record(
      address === user.email
        ? { action: 'user.email_verified', target: { type: 'user', id: user.id } }
        : {
            action: 'user.email_changed',
            target: { type: 'user', id: user.id },
            changes: fieldChanges({ email: user.email }, { email: address }),
          },
    );
  });
}

/** Sends a new verification link if the address belongs to an unverified account; answers the same either way. */
export function resendVerification(deps: AuthDeps, email: string): void {
  inBackground(deps, async () => {
    const user = await findUserByEmail(deps, email);
    if (user && !user.email_verified_at) await sendVerification(deps, user, user.email);
  });
}

/**
 * Starts a password reset. Whether or not the address is registered, the work happens after the response, so
 * the answer (always 202) and its timing say nothing about which addresses have accounts.
 */
export function forgotPassword(deps: AuthDeps, email: string): void {
  inBackground(deps, async () => {
    const user = await findUserByEmail(deps, email);
    if (!user || user.disabled_at) return;
    const url = await issueOneTimeLink(deps, user.id, 'reset_password', RESET_PASSWORD_TTL_SECONDS, null);
    const message = mailTemplates.resetPassword({
      name: user.name,
      url,
      expiresInMinutes: RESET_PASSWORD_TTL_SECONDS / 60,
    });
    sendInBackground(deps.mailer, { to: user.email, ...message, actionUrl: url }, deps.log);
  });
}

function inBackground(deps: AuthDeps, work: () => Promise<void>): void {
  setImmediate(() => {
    work().catch((err: unknown) => deps.log.error({ err }, 'background account task failed'));
  });
}

/** Refuses a password that is one of the user's last `PASSWORD_HISTORY` passwords. */
async function assertNotRecentlyUsed(deps: AuthDeps, userId: string, password: string): Promise<void> {
  const limit = deps.config.auth.passwordHistory;
  if (limit === 0) return;
  const recent = await deps.db
    .selectFrom('password_history')
    .select('password_hash')
    .where('user_id', '=', userId)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(limit)
    .execute();
  for (const { password_hash } of recent) {
    if ((await verifyPassword(password_hash, password, deps.config.auth.argon2)).ok) {
      throw new AppError(authErrors.PASSWORD_REUSED, {
        detail: `Choose a password you have not used for your last ${limit} passwords.`,
      });
    }
  }
}

/** Stores a new password hash (hashed by the caller, outside the transaction) in `db`, with its history. */
async function setPassword(
  deps: AuthDeps,
  db: Kysely<Database>,
  userId: string,
  hash: string,
): Promise<void> {
  const now = deps.clock.now().toISOString();
  await db
    .updateTable('users')
    .set({ password_hash: hash, password_changed_at: now, updated_at: now })
    .where('id', '=', userId)
    .execute();
  await db
    .insertInto('password_history')
    .values({ id: newId(), user_id: userId, password_hash: hash, created_at: now })
    .execute();
  // A reset link mailed before this change must not undo it.
  await spendOutstandingTokens(db, userId, 'reset_password', now);
}

/** Changes the password of a signed-in user, who must prove the current one; every other session ends. */
export async function changePassword(
  deps: AuthDeps,
  actor: { userId: string; sessionId: string },
  input: { currentPassword: string; newPassword: string },
  client: ClientInfo,
): Promise<void> {
  const user = await getUser(deps, actor.userId);
  const caller = selfCaller(user.id, client, actor.sessionId);
  await assertCurrentPassword(deps, user, input.currentPassword, caller);
  assertPasswordAcceptable(input.newPassword, policyOf(deps), [user.email, user.name], 'body.newPassword');
  await assertNotRecentlyUsed(deps, user.id, input.newPassword);
  const hash = await hashPassword(input.newPassword, deps.config.auth.argon2);
  await auditAccount(deps, user.id, caller, async (trx, record) => {
    await setPassword(deps, trx, user.id, hash);
    await revokeUserSessions(deps, trx, user.id, 'password_changed', actor.sessionId);
    await record({ action: 'user.password_changed', target: { type: 'user', id: user.id } });
  });
  sendInBackground(
    deps.mailer,
    { to: user.email, ...mailTemplates.passwordChanged({ name: user.name, at: deps.clock.now() }) },
    deps.log,
  );
  deps.log.info({ userId: user.id }, 'password changed');
}

/** Sets a new password from a reset link. Every session ends; two-factor authentication stays as it was. */
export async function resetPassword(
  deps: AuthDeps,
  input: { token: string; password: string },
  client: ClientInfo,
): Promise<void> {
  const row = await findOneTimeToken(deps, input.token, 'reset_password');
  const user = await getUser(deps, row.user_id);
  // The link is spent only once the new password is acceptable, so a refused password can be corrected.
  assertPasswordAcceptable(input.password, policyOf(deps), [user.email, user.name]);
  await assertNotRecentlyUsed(deps, user.id, input.password);
  const hash = await hashPassword(input.password, deps.config.auth.argon2);
  await auditAccount(deps, user.id, selfCaller(user.id, client), async (trx, record) => {
    await spendOneTimeToken(deps, trx, row.id);
    await setPassword(deps, trx, user.id, hash);
    await revokeUserSessions(deps, trx, user.id, 'password_reset');
    await clearFailures(trx, emailKey(user.email));
    // Following the mailed link proves control of the address, as a verification link would.
    if (!user.email_verified_at) {
      await trx
        .updateTable('users')
        .set({ email_verified_at: deps.clock.now().toISOString() })
        .where('id', '=', user.id)
        .execute();
    }
    await record({ action: 'user.password_reset', target: { type: 'user', id: user.id } });
  });
  sendInBackground(
    deps.mailer,
    { to: user.email, ...mailTemplates.passwordChanged({ name: user.name, at: deps.clock.now() }) },
    deps.log,
  );
  deps.log.info({ userId: user.id }, 'password reset');
}

/**
 * Re-authentication for sensitive changes (email, password, MFA): WRONG_PASSWORD unless `password` is current.
 * Wrong answers count towards the account's sign-in lockout, so a stolen access token cannot be used to guess
 * the password here instead of at sign-in.
 */
export async function assertCurrentPassword(
  deps: AuthDeps,
  user: Pick<Selectable<UsersTable>, 'id' | 'email' | 'password_hash'>,
  password: string,
  caller: AccountCaller,
): Promise<void> {
  const key = emailKey(user.email);
  await assertNotLocked(deps, { email: key });
  const { ok } = await verifyPassword(user.password_hash, password, deps.config.auth.argon2);
  if (!ok) {
    await recordAuditedFailure(deps, user.id, caller, 'user.reauthentication_failed', [key]);
    throw new AppError(authErrors.WRONG_PASSWORD);
  }
}

/**
 * Updates the profile. A new email address takes effect only once confirmed from a link sent to it, and needs
 * the current password; the old address is told.
 */
export async function updateMe(
  deps: AuthDeps,
  userId: string,
  input: { name?: string | undefined; email?: string | undefined; currentPassword?: string | undefined },
  caller: AccountCaller,
): Promise<{ me: Me; emailChangePending: boolean }> {
  const user = await getUser(deps, userId);
  const now = deps.clock.now().toISOString();
  let emailChangePending = false;
  if (input.email !== undefined && normalizeEmail(input.email) !== user.email) {
    await assertCurrentPassword(deps, user, input.currentPassword ?? '', caller);
    const address = normalizeEmail(input.email);
    // Whether the new address is taken is not revealed here; verification refuses it if it still is then.
    if (!(await findUserByEmail(deps, address))) await sendVerification(deps, user, address);
    sendInBackground(
      deps.mailer,
      { to: user.email, ...mailTemplates.emailChangeRequested({ name: user.name, newEmail: address }) },
      deps.log,
    );
    emailChangePending = true;
  }
  if (input.name !== undefined && input.name !== user.name) {
    const name = input.name;
    await auditAccount(deps, userId, caller, async (trx, record) => {
      await trx.updateTable('users').set({ name, updated_at: now }).where('id', '=', userId).execute();
      await record({
        action: 'user.updated',
        target: { type: 'user', id: userId },
        changes: fieldChanges({ name: user.name }, { name }),
      });
    });
  }
  return { me: toMe(await getUser(deps, userId)), emailChangePending };
}

/**
 * Creates an installation operator (`platform_role = superadmin`) with a verified address. Used by
 * `plinth create-admin` and by the embedded-mode bootstrap; there are no default accounts.
 */
export async function createAdmin(
  deps: Pick<AuthDeps, 'db' | 'database' | 'config' | 'clock'>,
  input: { email: string; password: string; name?: string },
  caller: AccountCaller = systemCaller('cli'),
): Promise<{ id: string; created: boolean }> {
  const email = normalizeEmail(input.email);
  assertPasswordAcceptable(input.password, policyOf(deps), [email]);
  const existing = await findUserByEmail(deps, email);
  const now = deps.clock.now().toISOString();
  const hash = await hashPassword(input.password, deps.config.auth.argon2);
  if (existing) {
    // The operator takes the account over: whoever registered the address before (perhaps not the operator)
    // loses it — the password is replaced, the address counts as verified, and every session ends.
    await auditAccount(deps, null, caller, async (trx, record) => {
      await trx
        .updateTable('users')
        .set({
          platform_role: 'superadmin',
          password_hash: hash,
          password_changed_at: now,
          email_verified_at: now,
          disabled_at: null,
          updated_at: now,
        })
        .where('id', '=', existing.id)
        .execute();
      await trx
        .insertInto('password_history')
        .values({ id: newId(), user_id: existing.id, password_hash: hash, created_at: now })
        .execute();
      await trx
        .updateTable('sessions')
        .set({ revoked_at: now, revoked_reason: 'admin_takeover' })
        .where('user_id', '=', existing.id)
        .where('revoked_at', 'is', null)
        .execute();
      await record({
        action: 'user.superadmin_granted',
        target: { type: 'user', id: existing.id },
        changes: fieldChanges({ platformRole: existing.platform_role }, { platformRole: 'superadmin' }),
      });
    });
    return { id: existing.id, created: false };
  }
  const id = newId();
  await auditAccount(deps, null, caller, async (trx, record) => {
    await trx
      .insertInto('users')
      .values({
        id,
        email,
        name: input.name ?? 'Administrator',
        password_hash: hash,
        password_changed_at: now,
        email_verified_at: now,
        disabled_at: null,
        platform_role: 'superadmin',
        totp_secret: null,
        totp_enabled_at: null,
        totp_last_step: null,
        created_at: now,
        updated_at: now,
      })
      .execute();
    await trx
      .insertInto('password_history')
      .values({ id: newId(), user_id: id, password_hash: hash, created_at: now })
      .execute();
    await record({ action: 'user.superadmin_created', target: { type: 'user', id } });
  });
  return { id, created: true };
}
