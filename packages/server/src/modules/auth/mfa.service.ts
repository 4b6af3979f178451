import { authErrors } from '@plinth/shared';
import type { Kysely } from 'kysely';
import { decryptSecret, encryptSecret } from '../../core/crypto.ts';
import { AppError } from '../../core/errors.ts';
import { newId } from '../../core/ids.ts';
import type { Database } from '../../db/schema.ts';
import { assertCurrentPassword, getUser } from './account.service.ts';
import { type AccountCaller, auditAccount, selfCaller } from './account-audit.ts';
import type { AuthDeps, ClientInfo } from './deps.ts';
import { completeLogin } from './login.service.ts';
import type { TokenPair } from './session.service.ts';
import { assertNotLocked, clearFailures, emailKey, ipKey, recordAuditedFailure } from './throttle.ts';
import {
  generateRecoveryCodes,
  generateTotpSecret,
  hashRecoveryCode,
  normalizeRecoveryCode,
  totpUri,
  verifyTotp,
} from './totp.ts';

const TOTP_ISSUER = 'Plinth';

type UserRow = Awaited<ReturnType<typeof getUser>>;

/**
 * Starts TOTP enrolment (after re-authentication): a new secret, stored encrypted and bound to the user's id,
 * that becomes active only once a code from it is confirmed.
 */
export async function enrollTotp(
  deps: AuthDeps,
  caller: AccountCaller,
  password: string,
): Promise<{ secret: string; otpauthUri: string }> {
  const user = await getUser(deps, caller.actor.id);
  await assertCurrentPassword(deps, user, password, caller);
  if (user.totp_enabled_at) throw new AppError(authErrors.MFA_ALREADY_ENABLED);
  const secret = generateTotpSecret();
  await auditAccount(deps, user.id, caller, async (trx, record) => {
    await trx
      .updateTable('users')
      .set({
        totp_secret: encryptSecret(deps.config.encryptionKey, secret, user.id),
        totp_last_step: null,
        updated_at: deps.clock.now().toISOString(),
      })
      .where('id', '=', user.id)
      .execute();
    await record({ action: 'user.mfa_enrolment_started', target: { type: 'user', id: user.id } });
  });
  return { secret, otpauthUri: totpUri({ issuer: TOTP_ISSUER, account: user.email, secret }) };
}

/** Activates TOTP with a first code from the authenticator app, and hands out the recovery codes (once). */
export async function confirmTotp(
  deps: AuthDeps,
  caller: AccountCaller,
  code: string,
): Promise<{ recoveryCodes: string[] }> {
  const user = await getUser(deps, caller.actor.id);
  if (user.totp_enabled_at) throw new AppError(authErrors.MFA_ALREADY_ENABLED);
  if (!user.totp_secret) throw new AppError(authErrors.MFA_NOT_ENROLLED);
  const step = verifyTotp(
    decryptSecret(deps.config.encryptionKey, user.totp_secret, user.id),
    code,
    deps.clock.now(),
    user.totp_last_step,
  );
  if (step === null) throw new AppError(authErrors.INVALID_MFA_CODE);
  const now = deps.clock.now().toISOString();
  const recoveryCodes = generateRecoveryCodes();
  await auditAccount(deps, user.id, caller, async (trx, record) => {
    await trx
      .updateTable('users')
      .set({ totp_enabled_at: now, totp_last_step: step, updated_at: now })
      .where('id', '=', user.id)
      .execute();
    await replaceRecoveryCodes(deps, trx, user.id, recoveryCodes, now);
    await record({ action: 'user.mfa_enabled', target: { type: 'user', id: user.id } });
  });
  deps.log.info({ userId: user.id }, 'two-factor authentication enabled');
  return { recoveryCodes };
}

async function replaceRecoveryCodes(
  deps: AuthDeps,
  trx: Kysely<Database>,
  userId: string,
  codes: string[],
  now: string,
): Promise<void> {
  await trx.deleteFrom('recovery_codes').where('user_id', '=', userId).execute();
  await trx
    .insertInto('recovery_codes')
    .values(
      codes.map((code) => ({
        id: newId(),
        user_id: userId,
        code_hash: hashRecoveryCode(deps.config.encryptionKey, code),
        created_at: now,
        used_at: null,
      })),
    )
    .execute();
}

/**
 * Checks a second factor: a current TOTP code (each accepted once — its time step is recorded, so neither it
 * nor an older code works again) or an unused recovery code (spent on use).
 */
async function acceptSecondFactor(deps: AuthDeps, user: UserRow, code: string): Promise<boolean> {
  if (!user.totp_enabled_at || !user.totp_secret) return false;
  const now = deps.clock.now();
  const secret = decryptSecret(deps.config.encryptionKey, user.totp_secret, user.id);
  const step = verifyTotp(secret, code, now, user.totp_last_step);
  if (step !== null) {
    // Conditional update: of two concurrent requests with the same code, only one records the step.
    const result = await deps.db
      .updateTable('users')
      .set({ totp_last_step: step })
      .where('id', '=', user.id)
      .where((eb) => eb.or([eb('totp_last_step', 'is', null), eb('totp_last_step', '<', step)]))
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 1;
  }
  const codeHash = hashRecoveryCode(deps.config.encryptionKey, normalizeRecoveryCode(code));
  const spent = await deps.db
    .updateTable('recovery_codes')
    .set({ used_at: now.toISOString() })
    .where('user_id', '=', user.id)
    .where('code_hash', '=', codeHash)
    .where('used_at', 'is', null)
    .executeTakeFirst();
  return Number(spent.numUpdatedRows) === 1;
}

/** Completes a sign-in that needs a second factor. Wrong codes count towards the same lockout as passwords. */
export async function verifyMfaLogin(
  deps: AuthDeps,
  input: { mfaToken: string; code: string },
  client: ClientInfo,
): Promise<TokenPair> {
  const userId = await deps.tokens.verifyMfaToken(input.mfaToken, deps.clock.now());
  const user = await getUser(deps, userId);
  const keys = { email: emailKey(user.email), ip: ipKey(client.ip) };
  await assertNotLocked(deps, keys);
  if (user.disabled_at) throw new AppError(authErrors.ACCOUNT_DISABLED);
  if (!(await acceptSecondFactor(deps, user, input.code))) {
    await recordAuditedFailure(deps, user.id, selfCaller(user.id, client), 'user.mfa_failed', [
      keys.email,
      keys.ip,
    ]);
    deps.log.info({ userId: user.id, ip: client.ip, outcome: 'failure' }, 'second factor refused');
    throw new AppError(authErrors.INVALID_MFA_CODE);
  }
  await clearFailures(deps.db, keys.email);
  return completeLogin(deps, user, client);
}

/**
 * Re-authentication for the gravest changes (turning two-factor off, erasing the account): the current password,
 * and a second-factor code whenever two-factor authentication is on. Wrong answers count towards the lockout.
 */
export async function reauthenticate(
  deps: AuthDeps,
  caller: AccountCaller,
  input: { password: string; code?: string | undefined },
): Promise<UserRow> {
  const user = await getUser(deps, caller.actor.id);
  await assertCurrentPassword(deps, user, input.password, caller);
  if (user.totp_enabled_at) {
    const accepted = input.code !== undefined && (await acceptSecondFactor(deps, user, input.code));
    if (!accepted) {
      await recordAuditedFailure(deps, user.id, caller, 'user.mfa_failed', [emailKey(user.email)]);
      throw new AppError(authErrors.INVALID_MFA_CODE, {
        detail: input.code === undefined ? 'Two-factor authentication is on: send `code` too.' : undefined,
      });
    }
  }
  return user;
}

async function reauthenticateWithSecondFactor(
  deps: AuthDeps,
  caller: AccountCaller,
  input: { password: string; code: string },
): Promise<UserRow> {
  const user = await getUser(deps, caller.actor.id);
  if (!user.totp_enabled_at) throw new AppError(authErrors.MFA_NOT_ENABLED);
  return reauthenticate(deps, caller, input);
}

/** Turns TOTP off; needs the password and a current code (or a recovery code). */
export async function disableTotp(
  deps: AuthDeps,
  caller: AccountCaller,
  input: { password: string; code: string },
): Promise<void> {
  const user = await reauthenticateWithSecondFactor(deps, caller, input);
  const now = deps.clock.now().toISOString();
  await auditAccount(deps, user.id, caller, async (trx, record) => {
    await trx
      .updateTable('users')
      .set({ totp_secret: null, totp_enabled_at: null, totp_last_step: null, updated_at: now })
      .where('id', '=', user.id)
      .execute();
    await trx.deleteFrom('recovery_codes').where('user_id', '=', user.id).execute();
    await record({ action: 'user.mfa_disabled', target: { type: 'user', id: user.id } });
  });
  deps.log.info({ userId: user.id }, 'two-factor authentication disabled');
}

/** Replaces every recovery code with ten new ones; needs the password and a current code. */
export async function regenerateRecoveryCodes(
  deps: AuthDeps,
  caller: AccountCaller,
  input: { password: string; code: string },
): Promise<{ recoveryCodes: string[] }> {
  const user = await reauthenticateWithSecondFactor(deps, caller, input);
  const recoveryCodes = generateRecoveryCodes();
  await auditAccount(deps, user.id, caller, async (trx, record) => {
    await replaceRecoveryCodes(deps, trx, user.id, recoveryCodes, deps.clock.now().toISOString());
    await record({ action: 'user.recovery_codes_replaced', target: { type: 'user', id: user.id } });
  });
  return { recoveryCodes };
}
