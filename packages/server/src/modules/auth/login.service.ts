import { authErrors } from '@plinth/shared';
import type { Selectable } from 'kysely';
import { AppError } from '../../core/errors.ts';
import type { UsersTable } from '../../db/schema.ts';
import { mailTemplates, sendInBackground } from '../mail/index.ts';
import { findUserByEmail } from './account.service.ts';
import { anonymousCaller, selfCaller } from './account-audit.ts';
import { type AuthDeps, type ClientInfo, normalizeEmail } from './deps.ts';
import { burnPasswordVerification, hashPassword, verifyPassword } from './password.ts';
import { startSession, type TokenPair } from './session.service.ts';
import { assertNotLocked, clearFailures, emailKey, ipKey, recordAuditedFailure } from './throttle.ts';

export type LoginResult = { mfaRequired: false; pair: TokenPair } | { mfaRequired: true; mfaToken: string };

/**
 * Signs in with email and password. Unknown addresses cost the same hashing work and count towards the same
 * lockout as known ones, and both answer INVALID_CREDENTIALS, so neither timing nor lockout reveals which
 * addresses are registered. Account state (disabled, unverified, expired password) is only disclosed after the
 * correct password. With two-factor authentication on, the answer is an MFA token to present with a code.
 */
export async function login(
  deps: AuthDeps,
  input: { email: string; password: string },
  client: ClientInfo,
): Promise<LoginResult> {
  const { auth } = deps.config;
  const email = normalizeEmail(input.email);
  const keys = { email: emailKey(email), ip: ipKey(client.ip) };
  await assertNotLocked(deps, keys);

  const user = await findUserByEmail(deps, email);
  if (!user) {
    await burnPasswordVerification(input.password, auth.argon2);
    await recordAuditedFailure(deps, null, anonymousCaller(client), 'user.sign_in_failed', [
      keys.email,
      keys.ip,
    ]);
    deps.log.info({ ip: client.ip, outcome: 'failure' }, 'sign-in failed');
    throw new AppError(authErrors.INVALID_CREDENTIALS);
  }
  const { ok, needsRehash } = await verifyPassword(user.password_hash, input.password, auth.argon2);
  if (!ok) {
    await recordAuditedFailure(deps, user.id, selfCaller(user.id, client), 'user.sign_in_failed', [
      keys.email,
      keys.ip,
    ]);
    deps.log.info({ userId: user.id, ip: client.ip, outcome: 'failure' }, 'sign-in failed');
    throw new AppError(authErrors.INVALID_CREDENTIALS);
  }
  // With a second factor on, the sign-in is not over yet: clearing the failures here would let someone who knows
  // the password wipe out their wrong codes by signing in again, and guess codes without limit. verifyMfaLogin
  // clears them once the code is right.
  if (!user.totp_enabled_at) await clearFailures(deps.db, keys.email);
  if (needsRehash) {
    // The configured cost was raised since this hash was made: upgrade it while the password is at hand.
    const hash = await hashPassword(input.password, auth.argon2);
    await deps.db.updateTable('users').set({ password_hash: hash }).where('id', '=', user.id).execute();
  }

  if (user.disabled_at) throw new AppError(authErrors.ACCOUNT_DISABLED);
  if (auth.requireEmailVerification && !user.email_verified_at)
    throw new AppError(authErrors.EMAIL_NOT_VERIFIED);
  if (auth.passwordExpiryDays > 0) {
    const expiresAt = new Date(user.password_changed_at).getTime() + auth.passwordExpiryDays * 86_400_000;
    if (deps.clock.now().getTime() >= expiresAt) throw new AppError(authErrors.PASSWORD_EXPIRED);
  }
  if (user.totp_enabled_at) {
    return { mfaRequired: true, mfaToken: await deps.tokens.signMfaToken(user.id, deps.clock.now()) };
  }
  return { mfaRequired: false, pair: await completeLogin(deps, user, client) };
}

/** The last step of every sign-in: a new session, and a notice to the owner. */
export async function completeLogin(
  deps: AuthDeps,
  user: Pick<Selectable<UsersTable>, 'id' | 'email' | 'name'>,
  client: ClientInfo,
): Promise<TokenPair> {
  const pair = await startSession(deps, user.id, client);
  deps.log.info({ userId: user.id, ip: client.ip, outcome: 'success' }, 'signed in');
  const at = deps.clock.now();
  sendInBackground(
    deps.mailer,
    {
      to: user.email,
      ...mailTemplates.newLogin({
        name: user.name,
        at,
        ip: client.ip,
        userAgent: client.userAgent ?? 'unknown',
      }),
    },
    deps.log,
  );
  return pair;
}
