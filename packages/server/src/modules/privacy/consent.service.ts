import {
  type ConsentRecord,
  type ConsentState,
  type MyConsents,
  privacyErrors,
  type RecordConsentBody,
} from '@plinth/shared';
import type { Kysely } from 'kysely';
import { AppError } from '../../core/errors.ts';
import { newId } from '../../core/ids.ts';
import type { Database } from '../../db/schema.ts';
import { fieldChanges } from '../audit/record.ts';
import { type AccountCaller, auditAccount } from '../auth/index.ts';
import * as repo from './consent.repo.ts';
import type { PrivacyDeps } from './deps.ts';

/** The longest User-Agent kept as evidence, in characters (as for sessions). */
const USER_AGENT_MAX_LENGTH = 512;

/** A stored record as the API shows it. */
export function toConsentRecord(row: repo.ConsentRow): ConsentRecord {
  return {
    id: row.id,
    purpose: row.purpose,
    granted: row.granted === 1,
    policyVersion: row.policy_version,
    recordedAt: row.recorded_at,
    ip: row.ip,
    userAgent: row.user_agent,
    requestId: row.request_id,
  };
}

/**
 * Records a grant or a withdrawal for a declared purpose (UNKNOWN_CONSENT_PURPOSE otherwise). Every call appends
 * a record, even when it repeats the current state with the same policy version: each one is the evidence of a
 * renewed consent, with its own time and request, which is what a controller must be able to show (GDPR
 * art. 7(1)). Collapsing repeats would lose exactly that.
 */
export async function recordConsent(
  deps: PrivacyDeps,
  caller: AccountCaller,
  input: RecordConsentBody,
): Promise<ConsentRecord> {
  if (!deps.purposes.has(input.purpose)) {
    throw new AppError(privacyErrors.UNKNOWN_CONSENT_PURPOSE, {
      detail: `"${input.purpose}" is not a declared consent purpose; GET /api/v1/consent-purposes lists them.`,
    });
  }
  const userId = caller.actor.id;
  const { client } = caller;
  const row = await auditAccount(deps, userId, caller, async (db, record) => {
    const inserted = await repo.insertConsentRecord(db, {
      id: newId(),
      user_id: userId,
      purpose: input.purpose,
      granted: input.granted ? 1 : 0,
      policy_version: input.policyVersion,
      recorded_at: deps.clock.now().toISOString(),
      ip: client?.ip ?? null,
      user_agent: client?.userAgent?.slice(0, USER_AGENT_MAX_LENGTH) ?? null,
      request_id: client?.requestId ?? null,
    });
    await record({
      action: input.granted ? 'consent.granted' : 'consent.withdrawn',
      target: { type: 'consent', id: input.purpose },
      changes: fieldChanges(null, { policyVersion: input.policyVersion }),
    });
    return inserted;
  });
  return toConsentRecord(row);
}

/**
 * The current state of every declared purpose and one page of the whole history. Read from the primary, not a
 * replica: someone who has just withdrawn consent must see the withdrawal on the next read.
 */
export async function myConsents(
  deps: PrivacyDeps,
  userId: string,
  query: { limit: number; cursor?: string | undefined; sort: string },
): Promise<MyConsents> {
  const db = deps.database.db;
  const latest = new Map((await repo.latestConsentPerPurpose(db, userId)).map((row) => [row.purpose, row]));
  const current = deps.purposes.list().map(({ name, description }): ConsentState => {
    const row = latest.get(name);
    if (!row) {
      return {
        purpose: name,
        description,
        status: 'never_asked',
        granted: false,
        policyVersion: null,
        at: null,
      };
    }
    return {
      purpose: name,
      description,
      status: row.granted === 1 ? 'granted' : 'withdrawn',
      granted: row.granted === 1,
      policyVersion: row.policy_version,
      at: row.recorded_at,
    };
  });
  const page = await repo.consentHistoryPage(db, userId, query);
  return { current, history: { data: page.data.map(toConsentRecord), nextCursor: page.nextCursor } };
}

/**
 * Every consent record of a user, oldest first, as the API shows them: the consent part of a data export
 * (GDPR art. 15 and 20). Erasure needs no counterpart: the records are deleted with the account (the foreign key
 * cascades).
 */
export async function consentsForExport(db: Kysely<Database>, userId: string): Promise<ConsentRecord[]> {
  return (await repo.allConsentRecords(db, userId)).map(toConsentRecord);
}
