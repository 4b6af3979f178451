import type { FastifyBaseLogger } from 'fastify';
import type { Kysely } from 'kysely';
import type { Broadcast } from '../../core/broadcast.ts';
import type { Clock } from '../../core/clock.ts';
import type { Database } from '../../db/schema.ts';
import { CLOCK_SKEW_SECONDS } from './tokens.ts';

const CHANNEL = 'plinth:sessions:revoked';

/**
 * The sessions whose access tokens must be refused before they expire. Checking a token against this set costs
 * a map lookup, not a database read. An entry is kept only as long as an access token of that session can still
 * be valid (the access-token lifetime plus the clock skew allowance after revocation), so the set stays small.
 *
 * Replicas learn of each other's revocations through the broadcast (Redis pub/sub); at start-up each
 * replica loads the recent revocations from the database, so a restart forgets nothing.
 */
export interface RevokedSessions {
  has(sessionId: string): boolean;
  /** Marks sessions revoked here and, through the broadcast, on every other replica. */
  add(sessionIds: readonly string[]): Promise<void>;
  /**
   * Calls `listener` with the ids of sessions revoked on this replica or any other, as they arrive (realtime
   * connections close at once rather than at their next check).
   */
  onRevoked(listener: (sessionIds: readonly string[]) => void): void;
  close(): void;
}

export async function createRevokedSessions(options: {
  db: Kysely<Database>;
  clock: Clock;
  accessTokenTtlSeconds: number;
  broadcast: Broadcast;
  log: FastifyBaseLogger;
}): Promise<RevokedSessions> {
  const { clock, broadcast, log } = options;
  // An access token issued just before its session was revoked is accepted until its `exp` plus the clock skew
  // allowance, so the entry must outlive the revocation by that much, not by the lifetime alone.
  const ttlMs = (options.accessTokenTtlSeconds + CLOCK_SKEW_SECONDS) * 1000;
  // Session id → when its last access token expires (ms since the epoch); past that the entry is useless.
  const entries = new Map<string, number>();
  const remember = (sessionId: string) => entries.set(sessionId, clock.now().getTime() + ttlMs);
  const listeners: ((sessionIds: readonly string[]) => void)[] = [];

  // Subscribe before loading from the database, so that a revocation made in between is not missed.
  await broadcast.subscribe(CHANNEL, (message) => {
    const ids = message.split(',').filter(Boolean);
    for (const id of ids) remember(id);
    for (const listener of listeners) listener(ids);
  });

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
      // Other replicas also re-check the database on refresh, so a lost message only delays, for at most one
      // access-token lifetime, what the database already enforces.
      if (sessionIds.length > 0) await broadcast.publish(CHANNEL, sessionIds.join(','));
    },
    onRevoked(listener) {
      listeners.push(listener);
    },
    close() {
      clearInterval(prune);
    },
  };
}

/** PostgreSQL's undefined_table (42P01) or SQLite's "no such table". */
function isMissingTable(error: unknown): boolean {
  const { code, message } = error as { code?: unknown; message?: unknown };
  return code === '42P01' || (typeof message === 'string' && message.includes('no such table'));
}
