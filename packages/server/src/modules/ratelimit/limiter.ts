import type { FastifyBaseLogger } from 'fastify';
import type { Redis } from 'ioredis';
import {
  type RateLimiterAbstract,
  RateLimiterMemory,
  RateLimiterRedis,
  RateLimiterRes,
} from 'rate-limiter-flexible';
import type { LimitSpec } from './limits.ts';

/** The buckets a request can be counted in; a refusal names the one that refused (`bucket` in the problem). */
export type BucketName = 'anonymous' | 'auth' | 'authAccounts' | 'user' | 'expensive' | 'apikey' | 'org';

/** One bucket a request is counted in: which limit, and whose share of it (an IP, a user, a key, an org). */
export interface BucketCheck {
  readonly bucket: BucketName;
  readonly key: string;
  readonly spec: LimitSpec;
}

/** Where a bucket stands after a request: what the `RateLimit-*` headers and the usage endpoint report. */
export interface BucketState {
  readonly bucket: BucketName;
  /** Requests the window allows. */
  readonly limit: number;
  /** Requests left in the current window (the burst allowance not included). */
  readonly remaining: number;
  /** Milliseconds until the current window ends and the count starts again. */
  readonly resetMs: number;
  readonly windowSeconds: number;
}

export type Decision =
  | { readonly allowed: true; readonly states: BucketState[] }
  | {
      readonly allowed: false;
      readonly states: BucketState[];
      /** The first bucket (in the order checked) that refused. */
      readonly refusedBy: BucketName;
      /** Milliseconds until a retry can succeed. */
      readonly retryAfterMs: number;
    };

export interface RateLimiter {
  /**
   * Counts one request in every bucket: allowed only if every bucket allows it. When one refuses, the request
   * is handed back to the buckets that had counted it, so a caller refused by their own limit does not eat into
   * what their organization shares with others.
   */
  consume(checks: readonly BucketCheck[]): Promise<Decision>;
  /** Where a bucket stands, without counting anything. */
  peek(check: BucketCheck): Promise<BucketState>;
  /**
   * Counts `member` (e.g. a hashed email address) in `check`'s bucket once per window: the bucket counts
   * distinct members rather than requests.
   */
  consumeDistinct(check: BucketCheck, member: string): Promise<void>;
}

/** The limiters of one limit: the window, and the burst allowance drawn on once the window is spent. */
interface Limiters {
  readonly main: RateLimiterAbstract;
  readonly burst: RateLimiterAbstract | undefined;
}

/** What a counted request took, so it can be handed back when another bucket refuses. */
type Charge = { limiter: RateLimiterAbstract; key: string } | undefined;

/**
 * Rate limits on rate-limiter-flexible: in memory in embedded mode; on Redis when there is one, so that every
 * replica shares one budget per key. Each Redis limiter has an in-memory twin as its "insurance": while Redis is
 * unreachable, each replica enforces the same limits by itself (no 500s, no unlimited traffic), and it goes back
 * to Redis as soon as the connection is ready again.
 *
 * The algorithm is rate-limiter-flexible's: a fixed window per key that opens at the key's first request
 * (so windows of different clients do not all end at once), counted atomically in Redis by a Lua script.
 *
 * @param keyPrefix namespaces the keys in Redis (one installation's replicas share it).
 */
export function createRateLimiter(
  redis: Redis | undefined,
  keyPrefix: string,
  log: FastifyBaseLogger,
): RateLimiter {
  const limiters = new Map<string, RateLimiterAbstract>();

  /** The limiter of `points` per `duration` seconds named `name`: made once, then reused. */
  const limiter = (name: string, points: number, duration: number): RateLimiterAbstract => {
    // The limit is part of the key: a key moved to another tier (a plan change) starts a fresh window.
    const prefix = `${keyPrefix}:${name}:${points}:${duration}`;
    const known = limiters.get(prefix);
    if (known) return known;
    const memory = new RateLimiterMemory({ keyPrefix: prefix, points, duration });
    const made = redis
      ? new RateLimiterRedis({
          storeClient: redis,
          keyPrefix: prefix,
          points,
          duration,
          rejectIfRedisNotReady: true,
          insuranceLimiter: memory,
          // Once a key is over its limit, this replica refuses it from memory until the window ends, so a
          // client that keeps hammering costs no Redis round trip per refused request. Over, not at: the last
          // allowed request may still be handed back (another bucket refused it), and must not block the key.
          inMemoryBlockOnConsumed: points + 1,
        })
      : memory;
    limiters.set(prefix, made);
    return made;
  };

  const limitersOf = ({ bucket, spec }: BucketCheck): Limiters => ({
    main: limiter(bucket, spec.points, spec.durationSeconds),
    burst: spec.burst ? limiter(`${bucket}:burst`, spec.burst.points, spec.burst.durationSeconds) : undefined,
  });

  const stateOf = (check: BucketCheck, res: RateLimiterRes | null): BucketState => ({
    bucket: check.bucket,
    limit: check.spec.points,
    remaining: res ? Math.max(0, Math.min(check.spec.points, res.remainingPoints)) : check.spec.points,
    resetMs: res ? Math.max(0, res.msBeforeNext) : check.spec.durationSeconds * 1000,
    windowSeconds: check.spec.durationSeconds,
  });

  /** Counts the request in one bucket: its window, else its burst allowance. */
  const consumeOne = async (
    check: BucketCheck,
  ): Promise<{ state: BucketState; charge: Charge; retryAfterMs?: number }> => {
    const { main, burst } = limitersOf(check);
    try {
      const res = await main.consume(check.key);
      return { state: stateOf(check, res), charge: { limiter: main, key: check.key } };
    } catch (refusal) {
      if (!(refusal instanceof RateLimiterRes)) return unexpected(check, refusal);
      if (!burst)
        return { state: stateOf(check, refusal), charge: undefined, retryAfterMs: refusal.msBeforeNext };
      try {
        await burst.consume(check.key);
        return { state: stateOf(check, refusal), charge: { limiter: burst, key: check.key } };
      } catch (burstRefusal) {
        if (!(burstRefusal instanceof RateLimiterRes)) return unexpected(check, burstRefusal);
        return {
          state: stateOf(check, refusal),
          charge: undefined,
          // Whichever allowance comes back first lets the next request through.
          retryAfterMs: Math.min(refusal.msBeforeNext, burstRefusal.msBeforeNext),
        };
      }
    }
  };

  /**
   * Both the store and its in-memory insurance failed, which rate-limiter-flexible does not do for a reachable
   * or an unreachable Redis alike; should it happen, the request is let through and the failure logged rather
   * than turned into a 500.
   */
  const unexpected = (check: BucketCheck, error: unknown) => {
    log.error({ err: error, bucket: check.bucket }, 'rate limiter failed; request let through');
    return { state: stateOf(check, null), charge: undefined };
  };

  return {
    async consume(checks) {
      const results = await Promise.all(checks.map(consumeOne));
      const states = results.map((r) => r.state);
      const refusedAt = results.findIndex((r) => r.retryAfterMs !== undefined);
      if (refusedAt < 0) return { allowed: true, states };
      await Promise.all(results.map((r) => r.charge?.limiter.reward(r.charge.key).catch(() => undefined)));
      const retryAfterMs = Math.max(...results.map((r) => r.retryAfterMs ?? 0));
      return { allowed: false, states, refusedBy: checks[refusedAt]?.bucket ?? 'anonymous', retryAfterMs };
    },
    async peek(check) {
      const res = await limitersOf(check)
        .main.get(check.key)
        .catch(() => null);
      return stateOf(check, res);
    },
    async consumeDistinct(check, member) {
      const seen = limiter(`${check.bucket}:seen`, 1, check.spec.durationSeconds);
      const first = await seen.consume(`${check.key}|${member}`).then(
        (res) => res.isFirstInDuration,
        () => false,
      );
      if (first)
        await limitersOf(check)
          .main.consume(check.key)
          .catch(() => undefined);
    },
  };
}
