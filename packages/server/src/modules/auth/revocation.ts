import type { FastifyBaseLogger } from 'fastify';
import type { Redis } from 'ioredis';
import type { Kysely } from 'kysely';
import type { Clock } from '../../core/clock.ts';
import type { Database } from '../../db/schema.ts';
import { CLOCK_SKEW_SECONDS } from './tokens.ts';

const CHANNEL = 'plinth:sessions:revoked';

/**
 * The sessions whose access tokens must be refused before they expire. Checking a token against this set costs
 * a map lookup, not a database read. An entry is kept only as long as an access token of that session can still
 * be valid (the access-token lifetime plus the clock skew allowance after revocation), so the set stays small.
 *
 * Replicas learn of each other's revocations through Redis pub/sub when Redis is configured; at start-up each
 * replica loads the recent revocations from the database, so a restart forgets nothing.
 */
export interface RevokedSessions {
  has(sessionId: string): boolean;
  /** Marks sessions revoked here and, through Redis, on every other replica. */
  add(sessionIds: readonly string[]): Promise<void>;
  close(): Promise<void>;
}

export async function createRevokedSessions(options: {
  db: Kysely<Database>;
  clock: Clock;
  accessTokenTtlSeconds: number;
  redis: Redis | undefined;
  log: FastifyBaseLogger;
}): Promise<RevokedSessions> {
  const { clock, redis, log } = options;
  // An access token issued just before its session was revoked is accepted until its `exp` plus the clock skew
  // allowance, so the entry must outlive the revocation by that much, not by the lifetime alone.
  const ttlMs = (options.accessTokenTtlSeconds + CLOCK_SKEW_SECONDS) * 1000;
  // Session id → when its last access token expires (ms since the epoch); past that the entry is useless.
  const entries = new Map<string, number>();
  const remember = (sessionId: string) => entries.set(sessionId, clock.now().getTime() + ttlMs);

  // Subscribe before loading from the database, so that a revocation made in between is not missed.
  const onRevoked = (sessionIds: string[]) => {
    for (const id of sessionIds) remember(id);
  };
  const subscriber = redis ? await subscribeToRevocations(redis, log, onRevoked) : undefined;

  const since = new Date(clock.now().getTime() - ttlMs).toISOString();
  try {
    const recent = await options.db
      .selectFrom('sessions')
      .select('id')
      .where('revoked_at', '>=', since)
      .execute();
    for (const row of recent) remember(row.id);
  } catch (err) {
    // A database without the identity schema yet (AUTO_MIGRATE off, `plinth migrate` not run) has no sessions to
    // remember; the replica reports itself not ready until the migrations are applied. Any other failure stops
    // the start: a replica that forgot recent revocations would accept revoked tokens.
    if (!isMissingTable(err)) throw err;
    log.warn({ err }, 'no sessions table yet: nothing revoked to remember');
  }

  const prune = setInterval(() => {
    const now = clock.now().getTime();
    for (const [id, until] of entries) if (until <= now) entries.delete(id);
  }, 60_000);
  prune.unref();

  return {
    has: (sessionId) => entries.has(sessionId),
    async add(sessionIds) {
      for (const id of sessionIds) remember(id);
      if (redis && sessionIds.length > 0) {
        // Other replicas also re-check the database on refresh, so a lost message only delays, for at most one
        // access-token lifetime, what the database already enforces.
        await redis
          .publish(CHANNEL, sessionIds.join(','))
          .catch((err: unknown) => log.warn({ err }, 'cannot broadcast session revocation'));
      }
    },
    async close() {
      clearInterval(prune);
      if (subscriber) await subscriber.quit().catch(() => subscriber.disconnect());
    },
  };
}

/**
 * A connection of its own (a subscribed Redis connection can do nothing else) that hands every broadcast
 * revocation to `onRevoked`.
 *
 * The shared client stops queueing commands once its first connection attempt is over (see core/redis.ts), and
 * `duplicate()` copies that setting: a SUBSCRIBE sent while the new connection is still being made would fail,
 * and the replica would never hear of another's revocations. So this connection keeps its offline queue, and it
 * subscribes again each time it (re)connects — ioredis re-subscribes only to channels it had joined, which is
 * none if Redis was down at start-up. Waits for the first attempt, bounded by the client's retry settings.
 */
/** PostgreSQL's undefined_table (42P01) or SQLite's "no such table". */
function isMissingTable(error: unknown): boolean {
  const { code, message } = error as { code?: unknown; message?: unknown };
  return code === '42P01' || (typeof message === 'string' && message.includes('no such table'));
}

async function subscribeToRevocations(
  redis: Redis,
  log: FastifyBaseLogger,
  onRevoked: (sessionIds: string[]) => void,
): Promise<Redis> {
  const subscriber = redis.duplicate({ enableOfflineQueue: true });
  let lastError = '';
  subscriber.on('error', (err: Error) => {
    if (err.message !== lastError) log.warn({ err }, 'redis connection for session revocations failed');
    lastError = err.message;
  });
  subscriber.on('message', (_channel: string, message: string) =>
    onRevoked(message.split(',').filter(Boolean)),
  );
  const subscribe = () =>
    subscriber.subscribe(CHANNEL).then(
      () => {
        lastError = '';
      },
      (err: unknown) => log.warn({ err }, 'cannot subscribe to session revocations'),
    );
  subscriber.on('ready', () => void subscribe());
  await subscribe();
  return subscriber;
}
