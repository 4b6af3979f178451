import { apiKeyErrors } from '@plinth/shared';
import type { FastifyBaseLogger } from 'fastify';
import { LRUCache } from 'lru-cache';
import type { Broadcast } from '../../core/broadcast.ts';
import type { Clock } from '../../core/clock.ts';
import { deriveKey, safeEqual } from '../../core/crypto.ts';
import { AppError } from '../../core/errors.ts';
import { allowedFrom, type IpRange, parseRange } from '../../core/ip-ranges.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import type { ApiKeyPrincipal } from '../auth/index.ts';
import { hashSecret, parseKey } from './key-format.ts';

/** What a replica remembers of a key between requests: enough to verify it without the database. */
interface CachedKey {
  orgId: string;
  secretHash: string;
  previousSecretHash: string | null;
  /** ms since the epoch; the previous secret works until then. */
  previousSecretExpiresAt: number | null;
  expiresAt: number | null;
  revoked: boolean;
  scopes: ReadonlySet<string>;
  allowedRanges: IpRange[] | null;
}

const UNKNOWN = 'unknown' as const;
const CHANNEL = 'plinth:apikeys:changed';
/** The most keys a replica keeps in memory. */
const CACHE_MAX_ENTRIES = 50_000;
/** How often counted uses are written to the database, in ms. */
const USAGE_FLUSH_INTERVAL_MS = 5_000;

export interface ApiKeyStore {
  /** Verifies a presented key from `ip`: the principal it authenticates, or a 401/403 AppError. */
  verify(key: string, ip: string): Promise<ApiKeyPrincipal>;
  /** The keyed hash under which a secret is stored. */
  hash(secret: string): string;
  /** Forgets a key on every replica (after a rotation or revocation): the next use reads the database. */
  keyChanged(keyId: string): Promise<void>;
  /** Forgets every key of an organization on this replica (it was deleted). */
  forgetOrg(orgId: string): void;
  /**
   * Calls `listener` with the id of every key rotated or revoked, on this replica or any other (realtime
   * connections opened with it check it again at once).
   */
  onKeyChanged(listener: (keyId: string) => void): void;
  /** Writes the uses counted since the last flush. */
  flushUsage(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Verifies API keys from an in-memory cache (a key is read from the database once per `cacheTtlSeconds` per
 * replica, and forgotten everywhere at once when it is rotated or revoked), and counts their uses in memory,
 * writing `last_used_at` and `usage_count` in one batch every few seconds rather than once per request.
 */
export async function createApiKeyStore(options: {
  database: DatabaseHandle;
  encryptionKey: Buffer;
  clock: Clock;
  log: FastifyBaseLogger;
  broadcast: Broadcast;
  cacheTtlSeconds: number;
}): Promise<ApiKeyStore> {
  const { database, clock, log, broadcast } = options;
  const hashKey = deriveKey(options.encryptionKey, 'plinth api-key hashing');
  const hash = (secret: string) => hashSecret(hashKey, secret);
  const cache =
    options.cacheTtlSeconds > 0
      ? new LRUCache<string, CachedKey | typeof UNKNOWN>({
          max: CACHE_MAX_ENTRIES,
          ttl: options.cacheTtlSeconds * 1000,
        })
      : undefined;
  // Counts invalidations, so that a load that read a key before its revocation committed, and finishes after the
  // revocation's message, does not put the old record back into the cache.
  let invalidations = 0;
  const listeners: ((keyId: string) => void)[] = [];
  await broadcast.subscribe(CHANNEL, (keyId) => {
    invalidations++;
    cache?.delete(keyId);
    for (const listener of listeners) listener(keyId);
  });

  // Key id → uses since the last flush and the time of the latest (ms since the epoch).
  let usage = new Map<string, { count: number; lastUsedAt: number }>();

  const load = async (keyId: string): Promise<CachedKey | typeof UNKNOWN> => {
    // Across organizations, because the key is what tells which organization the request acts in.
    const row = await database.acrossTenants((db) =>
      db.selectFrom('api_keys').selectAll().where('id', '=', keyId).executeTakeFirst(),
    );
    if (!row) return UNKNOWN;
    const ranges =
      row.allowed_ips === null ? null : (JSON.parse(row.allowed_ips) as string[]).map(parseRange);
    return {
      orgId: row.org_id,
      secretHash: row.secret_hash,
      previousSecretHash: row.previous_secret_hash,
      previousSecretExpiresAt: row.previous_secret_expires_at
        ? Date.parse(row.previous_secret_expires_at)
        : null,
      expiresAt: row.expires_at ? Date.parse(row.expires_at) : null,
      revoked: row.revoked_at !== null,
      scopes: new Set(JSON.parse(row.scopes) as string[]),
      allowedRanges: ranges === null ? null : ranges.filter((r) => r !== undefined),
    };
  };

  const flushUsage = async () => {
    if (usage.size === 0) return;
    const batch = usage;
    usage = new Map();
    try {
      // Across organizations: one batch holds the uses of every organization's keys.
      await database.acrossTenants(async (db) => {
        for (const [keyId, { count, lastUsedAt: at }] of batch) {
          const lastUsedAt = new Date(at).toISOString();
          await db
            .updateTable('api_keys')
            .set((eb) => ({
              usage_count: eb('usage_count', '+', count),
              last_used_at: eb
                .case()
                .when('last_used_at', 'is', null)
                .then(lastUsedAt)
                .when('last_used_at', '<', lastUsedAt)
                .then(lastUsedAt)
                .else(eb.ref('last_used_at'))
                .end(),
            }))
            .where('id', '=', keyId)
            .execute();
        }
      });
    } catch (err) {
      log.warn({ err, keys: batch.size }, 'cannot record API key usage; it will be retried');
      for (const [keyId, entry] of batch) {
        const later = usage.get(keyId);
        usage.set(keyId, {
          count: entry.count + (later?.count ?? 0),
          lastUsedAt: Math.max(later?.lastUsedAt ?? 0, entry.lastUsedAt),
        });
      }
    }
  };
  const timer = setInterval(() => void flushUsage(), USAGE_FLUSH_INTERVAL_MS);
  timer.unref();

  const invalid = (detail: string) =>
    new AppError(apiKeyErrors.INVALID_API_KEY, {
      detail,
      headers: { 'www-authenticate': 'Bearer error="invalid_token"' },
    });

  return {
    hash,
    async verify(key, ip) {
      const parsed = parseKey(key);
      if (!parsed) throw invalid('This is not a Plinth API key.');
      let record = cache?.get(parsed.id);
      if (record === undefined) {
        const seen = invalidations;
        record = await load(parsed.id);
        if (seen === invalidations) cache?.set(parsed.id, record);
      }
      const now = clock.now().getTime();
      const presented = hash(parsed.secret);
      // Both comparisons always run, so the answer takes as long whichever secret (if any) matched.
      const current = record !== UNKNOWN && safeEqual(presented, record.secretHash);
      const previous =
        record !== UNKNOWN &&
        record.previousSecretHash !== null &&
        safeEqual(presented, record.previousSecretHash) &&
        (record.previousSecretExpiresAt ?? 0) > now;
      if (record === UNKNOWN || !(current || previous)) throw invalid('The API key is not valid.');
      if (record.revoked) throw invalid('The API key has been revoked.');
      if (record.expiresAt !== null && record.expiresAt <= now) throw invalid('The API key has expired.');
      if (!allowedFrom(record.allowedRanges, ip)) throw new AppError(apiKeyErrors.API_KEY_IP_NOT_ALLOWED);

      const counted = usage.get(parsed.id);
      if (counted) {
        counted.count++;
        counted.lastUsedAt = now;
      } else {
        usage.set(parsed.id, { count: 1, lastUsedAt: now });
      }
      return { type: 'apikey', keyId: parsed.id, orgId: record.orgId, scopes: record.scopes };
    },
    keyChanged: (keyId) => broadcast.publish(CHANNEL, keyId),
    onKeyChanged(listener) {
      listeners.push(listener);
    },
    forgetOrg(orgId) {
      invalidations++;
      if (!cache) return;
      for (const [keyId, record] of cache.entries()) {
        if (record !== UNKNOWN && record.orgId === orgId) cache.delete(keyId);
      }
    },
    flushUsage,
    async close() {
      clearInterval(timer);
      await flushUsage();
    },
  };
}
