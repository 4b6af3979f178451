import type { BucketUsage, OrgUsage } from '@plinth/shared';
import type { OrgAccess } from '../rbac/index.ts';
import type { RateLimitDeps } from './deps.ts';
import type { BucketCheck } from './limiter.ts';
import { planLimit } from './limits.ts';

/** How many API keys the usage report lists: the most recently created active ones. */
const MAX_KEYS = 100;

/**
 * Where an organization stands in its current windows: its own bucket (every member and key together), each
 * active API key's, and the caller's personal one. Reading it counts nothing.
 */
export async function orgUsage(deps: RateLimitDeps, access: OrgAccess): Promise<OrgUsage> {
  const { table, limiter, lookups } = deps;
  const plan = (await lookups.planOf(access.orgId)) ?? 'default';
  const keys = await deps.database.withTenant(access.orgId, (db) =>
    db
      .selectFrom('api_keys')
      .select(['id', 'name'])
      .where('revoked_at', 'is', null)
      .orderBy('created_at', 'desc')
      .orderBy('id', 'desc')
      .limit(MAX_KEYS)
      .execute(),
  );
  const now = deps.clock.now().getTime();
  const usage = async (check: BucketCheck, subject: BucketUsage['subject']): Promise<BucketUsage> => {
    const state = await limiter.peek(check);
    const { burst } = check.spec;
    return {
      bucket: check.bucket,
      subject,
      limit: state.limit,
      used: state.limit - state.remaining,
      remaining: state.remaining,
      windowSeconds: state.windowSeconds,
      resetsAt: new Date(now + state.resetMs).toISOString(),
      ...(burst ? { burst: { limit: burst.points, windowSeconds: burst.durationSeconds } } : {}),
    };
  };
  const { principal } = access;
  return {
    plan,
    buckets: await Promise.all([
      usage(
        { bucket: 'org', key: access.orgId, spec: planLimit(table.org, plan) },
        { type: 'org', id: access.orgId },
      ),
      ...keys.map((key) =>
        usage(
          { bucket: 'apikey', key: key.id, spec: planLimit(table.apikey, plan) },
          { type: 'apikey', id: key.id, name: key.name },
        ),
      ),
      ...(principal.type === 'user'
        ? [
            usage(
              { bucket: 'user', key: principal.userId, spec: table.user },
              { type: 'user', id: principal.userId },
            ),
          ]
        : []),
    ]),
  };
}
