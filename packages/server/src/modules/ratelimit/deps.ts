import type { Counter } from 'prom-client';
import type { Clock } from '../../core/clock.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import type { RateLimiter } from './limiter.ts';
import type { RateLimitTable } from './limits.ts';
import type { CallerLookups } from './lookups.ts';

/** What the rate-limit module needs, built once in the composition root. */
export interface RateLimitDeps {
  table: RateLimitTable;
  limiter: RateLimiter;
  lookups: CallerLookups;
  database: DatabaseHandle;
  clock: Clock;
  /** `rate_limit_decisions_total`: requests allowed and refused, by route class and refusing bucket. */
  decisions: Counter<'route_class' | 'outcome' | 'bucket'>;
}
