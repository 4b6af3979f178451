import { privacyErrors } from '@plinth/shared';
import type { Transaction } from 'kysely';
import { z } from 'zod';
import { deriveKey, hmacSha256Hex } from '../../core/crypto.ts';
import { AppError } from '../../core/errors.ts';
import type { Database } from '../../db/schema.ts';
import { fieldChanges, PLATFORM_CHAIN, recordAuditEvent, systemAuditContext } from '../audit/record.ts';
import {
  type AccountCaller,
  auditAccount,
  getUser,
  reauthenticate,
  revokeUserSessions,
} from '../auth/index.ts';
import { mailTemplates, sendInBackground } from '../mail/index.ts';
import type { PrivacyDeps } from './deps.ts';

/**
 * Account erasure (GDPR art. 17): asked for by the person (password, and a code with two-factor on) or an
 * operator; due after `ERASURE_GRACE_DAYS`, during which signing in cancels it; then every module's eraser runs,
 * in one transaction, and the account is gone. The audit log keeps its events, pseudonymised, and still verifies.
 */

/** The job that erases an account once its grace period is over. */
export const ERASE_JOB = 'privacy.erase';
const EraseJobPayload = z.strictObject({ userId: z.uuid(), scheduledFor: z.iso.datetime() });

/** Registers the job that erases accounts. */
export function defineEraseJob(deps: PrivacyDeps): void {
  deps.jobs.define(ERASE_JOB, {
    payload: EraseJobPayload,
    handler: (payload) => eraseWhenDue(deps, payload),
  });
}

/** Everything that stands in the way of erasing the user, from every module's `blockers`. */
async function blockersOf(deps: PrivacyDeps, db: Transaction<Database>, userId: string): Promise<string[]> {
  const reasons: string[] = [];
  for (const source of deps.personalData.list()) {
    if (source.blockers) reasons.push(...(await source.blockers(db, userId)));
  }
  return reasons;
}

function blocked(reasons: string[]): AppError {
  return new AppError(privacyErrors.ERASURE_BLOCKED, { detail: `The account is ${reasons.join('; ')}.` });
}

/** The person's own request: re-authenticated, then scheduled. */
export async function requestErasure(
  deps: PrivacyDeps,
  caller: AccountCaller,
  input: { password: string; code?: string | undefined },
): Promise<{ scheduledFor: string }> {
  await reauthenticate(deps.auth, caller, input);
  const userId = caller.actor.id;
  return scheduleErasure(deps, userId, caller, { chain: userId, action: 'user.erasure_requested' });
}

/** An operator's request for someone else's account: scheduled the same way, recorded on the installation's chain. */
export async function scheduleErasureByOperator(
  deps: PrivacyDeps,
  operator: AccountCaller,
  userId: string,
): Promise<{ scheduledFor: string }> {
  await getUser(deps.auth, userId);
  return scheduleErasure(deps, userId, operator, { chain: null, action: 'admin.user_erasure_scheduled' });
}

/**
 * Checks the blockers, sets the due time, ends every session (signing in again is how the owner cancels), and
 * queues the job for the due time — in one transaction with its audit event, on the account's chain for the
 * person's own request and on the installation's for an operator's.
 */
async function scheduleErasure(
  deps: PrivacyDeps,
  userId: string,
  caller: AccountCaller,
  audit: { chain: string | null; action: string },
): Promise<{ scheduledFor: string }> {
  const reasons = await deps.database.acrossTenants((db) => blockersOf(deps, db, userId));
  if (reasons.length > 0) throw blocked(reasons);
  const now = deps.clock.now();
  const scheduledFor = new Date(now.getTime() + deps.erasureGraceDays * 86_400_000).toISOString();
  await auditAccount(deps, audit.chain, caller, async (db, record) => {
    await db
      .updateTable('users')
      .set({ erasure_scheduled_for: scheduledFor })
      .where('id', '=', userId)
      .execute();
    await revokeUserSessions(deps.auth, db, userId, 'erasure_requested');
    await deps.jobs.enqueue(
      ERASE_JOB,
      { userId, scheduledFor },
      { db, runAt: new Date(scheduledFor), idempotencyKey: `${ERASE_JOB}:${userId}:${scheduledFor}` },
    );
    await record({
      action: audit.action,
      target: { type: 'user', id: userId },
      changes: fieldChanges(null, { scheduledFor }),
    });
  });
  const user = await getUser(deps.auth, userId);
  const message = mailTemplates.erasureScheduled({
    name: user.name,
    at: new Date(scheduledFor),
    signInUrl: `${deps.publicUrl}/sign-in`,
  });
  sendInBackground(deps.mailer, { to: user.email, ...message }, deps.log);
  return { scheduledFor };
}

/** The pseudonym that replaces a user's id in the audit log: stable per user, and not reversible without the key. */
function pseudonymOf(deps: PrivacyDeps, userId: string): string {
  return `erased-${hmacSha256Hex(deriveKey(deps.encryptionKey, 'plinth erasure pseudonyms'), userId).slice(0, 32)}`;
}

/**
 * The job: erases the account if this request is still the pending one (signing in cleared it; a later request
 * set another time) and its time has come. Every eraser runs in one transaction across tenants, dependents
 * first, then `user.erased` is recorded on the installation's chain. A blocker that appeared during the grace
 * period (the person became an organization's only owner) calls the erasure off, recorded and mailed.
 */
async function eraseWhenDue(
  deps: PrivacyDeps,
  payload: { userId: string; scheduledFor: string },
): Promise<void> {
  const notice = await deps.database.acrossTenants(async (db) => {
    const user = await db
      .selectFrom('users')
      .select(['id', 'email', 'name', 'erasure_scheduled_for'])
      .where('id', '=', payload.userId)
      .executeTakeFirst();
    if (!user?.erasure_scheduled_for) return null;
    if (new Date(user.erasure_scheduled_for).getTime() !== new Date(payload.scheduledFor).getTime())
      return null;
    const now = deps.clock.now();
    if (new Date(user.erasure_scheduled_for) > now) return null;
    const system = systemAuditContext(PLATFORM_CHAIN, 'privacy', deps.clock);
    const reasons = await blockersOf(deps, db, user.id);
    if (reasons.length > 0) {
      await db.updateTable('users').set({ erasure_scheduled_for: null }).where('id', '=', user.id).execute();
      await recordAuditEvent(db, system, {
        action: 'user.erasure_blocked',
        target: { type: 'user', id: user.id },
        outcome: 'failure',
      });
      return { user, reasons };
    }
    const sessions = await db
      .selectFrom('sessions')
      .select('ip')
      .distinct()
      .where('user_id', '=', user.id)
      .execute();
    const subject = {
      userId: user.id,
      email: user.email,
      name: user.name,
      ips: sessions.map((s) => s.ip).filter((ip): ip is string => ip !== null),
      pseudonym: pseudonymOf(deps, user.id),
      at: now.toISOString(),
    };
    for (const source of [...deps.personalData.list()].reverse()) {
      if (source.erase) await source.erase(db, subject);
    }
    await recordAuditEvent(db, system, { action: 'user.erased', target: { type: 'user', id: user.id } });
    return null;
  });
  if (notice) {
    const message = mailTemplates.erasureBlocked({ name: notice.user.name, reasons: notice.reasons });
    sendInBackground(deps.mailer, { to: notice.user.email, ...message }, deps.log);
  }
}
