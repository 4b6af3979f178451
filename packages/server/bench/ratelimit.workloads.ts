import { organization } from './orgs.workloads.ts';
import { ROUNDS, roundName, type ServerName, type Workload } from './workload.ts';

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
 * the three servers take turns, `ROUNDS` rounds of each, and the comparison is round by round.
 */
export const rateLimitWorkloads: Workload[] = Array.from({ length: ROUNDS }, (_, i) => [
  limitedList(roundName(LIMITS_OFF, i + 1), 'limits-off'),
  limitedList(roundName(LIMITS_MEMORY, i + 1), 'limits-memory'),
  limitedList(roundName(LIMITS_REDIS, i + 1), 'limits-redis'),
]).flat();
