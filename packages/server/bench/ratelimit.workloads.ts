import { organization } from './orgs.workloads.ts';
import type { ServerName, Workload } from './workload.ts';

/**
 * The limiter's cost per request: the same authenticated list (an access token: the per-person and
 * per-organization buckets are counted) on three servers that differ only in rate limiting — off, on with the
 * in-memory store, on with Redis. The limits are too high to refuse anything, so each request pays for the
 * whole decision and its headers.
 */
const limitedList = (name: string, server: ServerName): Workload => ({
  name,
  server,
  async prepare(target) {
    const { orgId, accessToken } = await organization(target);
    return { path: `/api/v1/orgs/${orgId}/members`, headers: { authorization: `Bearer ${accessToken}` } };
  },
});

export const LIMITS_OFF = 'plinth: member list, rate limiting off';
export const LIMITS_MEMORY = 'plinth: member list, rate limiting on (memory)';
export const LIMITS_REDIS = 'plinth: member list, rate limiting on (Redis)';

/**
 * The limiter costs a few per cent of this request, about as much as two runs of the same server differ by; so
 * the three servers take turns, three rounds of each, and the comparison is between their medians.
 */
export const RATE_LIMIT_ROUNDS = 3;

/** The name of one round's row: `<workload> #<round>`. */
export const roundName = (name: string, round: number) => `${name} #${round}`;

export const rateLimitWorkloads: Workload[] = Array.from({ length: RATE_LIMIT_ROUNDS }, (_, i) => [
  limitedList(roundName(LIMITS_OFF, i + 1), 'limits-off'),
  limitedList(roundName(LIMITS_MEMORY, i + 1), 'limits-memory'),
  limitedList(roundName(LIMITS_REDIS, i + 1), 'limits-redis'),
]).flat();
