import { z } from 'zod';
import { purgeAfter, type RetentionPolicy } from '../../core/retention.ts';
import type { PrivacyDeps } from './deps.ts';

/** The job that applies every retention policy, and its daily schedule (UTC). */
export const RETENTION_JOB = 'privacy.retention';
const RETENTION_SCHEDULE = '30 3 * * *';

/** The privacy module's own policies: export archives go at their expiry, the export records later. */
export const exportRetention: RetentionPolicy[] = [
  {
    name: 'data_export_archives',
    description: 'data export archives once their link expired (the export shows `expired`)',
    days: 0,
    async apply(database, cutoff) {
      const result = await database.acrossTenants((db) =>
        db
          .updateTable('data_exports')
          .set({ state: 'expired', archive: null })
          .where('state', '=', 'ready')
          .where('expires_at', '<', cutoff)
          .executeTakeFirst(),
      );
      return Number(result.numUpdatedRows);
    },
  },
  {
    name: 'data_exports',
    description: 'the records of finished data exports (downloaded, expired or failed)',
    days: 90,
    apply: purgeAfter({ table: 'data_exports', after: ['downloaded_at', 'expires_at', 'completed_at'] }),
  },
];

/**
 * Applies every declared policy (with `RETENTION_DAYS` overrides), each in its own batches, and logs what each
 * removed. Returns the counts by policy. A policy that fails is logged and the others still run; the job then
 * fails, so it is retried.
 */
export async function applyRetention(deps: PrivacyDeps): Promise<Record<string, number>> {
  const now = deps.clock.now().getTime();
  const removed: Record<string, number> = {};
  let failed = false;
  for (const policy of deps.retention.list()) {
    const days = deps.retentionDays[policy.name] ?? policy.days;
    const cutoff = new Date(now - days * 86_400_000).toISOString();
    try {
      removed[policy.name] = await policy.apply(deps.database, cutoff);
    } catch (err) {
      failed = true;
      deps.log.error({ err, policy: policy.name }, 'retention policy failed');
    }
  }
  deps.log.info({ removed }, 'retention policies applied');
  if (failed) throw new Error('a retention policy failed; see the log');
  return removed;
}

/**
 * Declares the retention job and its daily schedule, after checking that every `RETENTION_DAYS` override names a
 * declared policy — a typo must stop the start, not silently keep data for ever. Call once every module has
 * declared its policies (the privacy module registers last).
 */
export function defineRetentionJob(deps: PrivacyDeps): void {
  const known = new Set(deps.retention.list().map((p) => p.name));
  const unknown = Object.keys(deps.retentionDays).filter((name) => !known.has(name));
  if (unknown.length > 0) {
    throw new Error(
      `RETENTION_DAYS names no such policy: ${unknown.join(', ')} (policies: ${[...known].join(', ')})`,
    );
  }
  deps.jobs.define(RETENTION_JOB, {
    payload: z.strictObject({}),
    handler: async () => void (await applyRetention(deps)),
  });
  deps.jobs.schedule(RETENTION_JOB, RETENTION_SCHEDULE, { name: RETENTION_JOB, payload: {} });
}
