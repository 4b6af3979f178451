import { authErrors } from '@plinth/shared';
import { type Kysely, sql } from 'kysely';
import { AppError } from '../../core/errors.ts';
import type { Database } from '../../db/schema.ts';
import { type AccountCaller, auditAccount } from './account-audit.ts';
import type { AuthDeps } from './deps.ts';

/**
 * Brute-force protection for sign-in and second-factor attempts. Failures are counted per submitted email
 * address — whether or not an account exists, so a lock reveals nothing about which addresses are registered —
 * and per client IP, with a higher threshold (one address may serve several people). Reaching the threshold locks
 * the key for `LOCKOUT_BASE_SECONDS`, doubling with each consecutive lock up to `LOCKOUT_MAX_SECONDS`.
 */

/** An IP address may fail this many times more often than one account before it is locked. */
const IP_THRESHOLD_FACTOR = 4;
/** Failures older than this are forgotten, in milliseconds. */
const FAILURE_MEMORY_MS = 60 * 60 * 1000;

export const emailKey = (normalizedEmail: string) => `email:${normalizedEmail}`;
export const ipKey = (ip: string) => `ip:${ip}`;

function thresholdOf(deps: AuthDeps, key: string): number {
  const base = deps.config.auth.lockoutThreshold;
  return key.startsWith('ip:') ? base * IP_THRESHOLD_FACTOR : base;
}

/** @throws AppError ACCOUNT_LOCKED (423) or TOO_MANY_ATTEMPTS (429) with `Retry-After` while a key is locked. */
export async function assertNotLocked(deps: AuthDeps, keys: { email: string; ip?: string }): Promise<void> {
  const now = deps.clock.now();
  const checked = keys.ip === undefined ? [keys.email] : [keys.email, keys.ip];
  const rows = await deps.db
    .selectFrom('login_throttles')
    .select(['key', 'locked_until'])
    .where('key', 'in', checked)
    .execute();
  for (const key of checked) {
    const lockedUntil = rows.find((r) => r.key === key)?.locked_until;
    if (lockedUntil && new Date(lockedUntil) > now) {
      const retryAfter = Math.ceil((new Date(lockedUntil).getTime() - now.getTime()) / 1000);
      const definition = key.startsWith('ip:') ? authErrors.TOO_MANY_ATTEMPTS : authErrors.ACCOUNT_LOCKED;
      throw new AppError(definition, {
        detail: `Try again in ${retryAfter} seconds (at ${lockedUntil}).`,
        headers: { 'retry-after': String(retryAfter) },
      });
    }
  }
}

/**
 * Counts one failure against each key and locks the keys that reached their threshold, in `db` (the caller's
 * audited transaction). Returns the keys it locked.
 */
export async function recordFailure(
  deps: AuthDeps,
  db: Kysely<Database>,
  keys: readonly string[],
): Promise<string[]> {
  const locked: string[] = [];
  const now = deps.clock.now();
  const nowIso = now.toISOString();
  const forgetBefore = new Date(now.getTime() - FAILURE_MEMORY_MS).toISOString();
  for (const key of keys) {
    // One atomic upsert per key, so concurrent failures are all counted on both dialects.
    await db
      .insertInto('login_throttles')
      .values({ key, failures: 1, locks: 0, locked_until: null, updated_at: nowIso })
      .onConflict((oc) =>
        oc.column('key').doUpdateSet({
          failures: sql`case when login_throttles.updated_at < ${forgetBefore} then 1 else login_throttles.failures + 1 end`,
          locks: sql`case when login_throttles.updated_at < ${forgetBefore} then 0 else login_throttles.locks end`,
          updated_at: nowIso,
        }),
      )
      .execute();
    const row = await db
      .selectFrom('login_throttles')
      .select(['failures', 'locks'])
      .where('key', '=', key)
      .executeTakeFirstOrThrow();
    if (row.failures >= thresholdOf(deps, key)) {
      const { lockoutBaseSeconds, lockoutMaxSeconds } = deps.config.auth;
      const seconds = Math.min(lockoutBaseSeconds * 2 ** row.locks, lockoutMaxSeconds);
      const lockedUntil = new Date(now.getTime() + seconds * 1000).toISOString();
      await db
        .updateTable('login_throttles')
        .set({ failures: 0, locks: row.locks + 1, locked_until: lockedUntil, updated_at: nowIso })
        .where('key', '=', key)
        .execute();
      deps.log.warn({ throttle: key.split(':')[0], lockedUntil }, 'sign-in locked after repeated failures');
      locked.push(key);
    }
  }
  return locked;
}

/**
 * Counts a failed sign-in, second-factor or re-authentication attempt against `keys` and records it — with a
 * `user.locked` event when the account's key reached its threshold — on the account's chain, or the
 * installation's when the address has no account.
 */
export function recordAuditedFailure(
  deps: AuthDeps,
  accountId: string | null,
  caller: AccountCaller,
  action: string,
  keys: readonly string[],
): Promise<void> {
  return auditAccount(deps, accountId, caller, async (db, record) => {
    const locked = await recordFailure(deps, db, keys);
    const target = accountId === null ? undefined : { type: 'user', id: accountId };
    await record({ action, target, outcome: 'failure' });
    if (accountId !== null && locked.some((key) => key.startsWith('email:'))) {
      await record({ action: 'user.locked', target });
    }
  });
}

/** Forgets the failures and locks of a key (a successful sign-in, or an admin unlocking an account). */
export async function clearFailures(db: Kysely<Database>, key: string): Promise<void> {
  await db.deleteFrom('login_throttles').where('key', '=', key).execute();
}
