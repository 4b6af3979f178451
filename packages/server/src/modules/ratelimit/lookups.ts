import { LRUCache } from 'lru-cache';
import type { DatabaseHandle } from '../../db/database.ts';

/**
 * What the limiter needs to know about a caller beyond its credential — the plan of an organization, whether a
 * person is an installation operator — cached per replica so that a request costs no database read for it.
 * Entries live `ttlSeconds` at most (`ACCESS_CACHE_TTL_SECONDS`); a plan change reaches every replica at once
 * through the organization-changed broadcast (`forgetOrg`).
 */
export interface CallerLookups {
  /** The organization's plan; undefined when it does not exist (any more). */
  planOf(orgId: string): Promise<string | undefined>;
  /** Whether the person is a superadmin (exempt from the per-person limit). */
  isOperator(userId: string): Promise<boolean>;
  forgetOrg(orgId: string): void;
}

const CACHE_MAX_ENTRIES = 50_000;
const MISSING = '';

export function createCallerLookups(database: DatabaseHandle, ttlSeconds: number): CallerLookups {
  const cache = <V extends {}>() =>
    ttlSeconds > 0 ? new LRUCache<string, V>({ max: CACHE_MAX_ENTRIES, ttl: ttlSeconds * 1000 }) : undefined;
  const plans = cache<string>();
  const operators = cache<boolean>();
  // Counts invalidations, so that a read that began before a plan change and ends after its invalidation does
  // not put the old plan back into the cache.
  let invalidations = 0;

  return {
    async planOf(orgId) {
      const cached = plans?.get(orgId);
      if (cached !== undefined) return cached === MISSING ? undefined : cached;
      const seen = invalidations;
      const row = await database.db
        .selectFrom('organizations')
        .select('plan')
        .where('id', '=', orgId)
        .executeTakeFirst();
      if (seen === invalidations) plans?.set(orgId, row?.plan ?? MISSING);
      return row?.plan;
    },
    async isOperator(userId) {
      const cached = operators?.get(userId);
      if (cached !== undefined) return cached;
      const row = await database.db
        .selectFrom('users')
        .select('platform_role')
        .where('id', '=', userId)
        .executeTakeFirst();
      const operator = row?.platform_role === 'superadmin';
      operators?.set(userId, operator);
      return operator;
    },
    forgetOrg(orgId) {
      invalidations++;
      plans?.delete(orgId);
    },
  };
}
