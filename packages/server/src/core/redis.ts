import type { FastifyBaseLogger } from 'fastify';
import { Redis } from 'ioredis';

/** How long a Redis command may wait for a connection or an answer before failing, in ms. */
const REDIS_COMMAND_TIMEOUT_MS = 1000;

/**
 * The shared Redis client for the scale-out mode. It reconnects by itself with capped backoff; while it is
 * disconnected, commands fail fast instead of queueing, so callers can fall back and readiness can say so.
 * Only the very first connection attempt is waited for: commands sent while it is being made (the first
 * readiness probe, the first requests after start-up) wait for it, for at most `REDIS_COMMAND_TIMEOUT_MS`,
 * instead of failing because the replica happened to be a few milliseconds old.
 */
export function openRedis(url: string, log: FastifyBaseLogger): Redis {
  const redis = new Redis(url, {
    lazyConnect: false,
    enableOfflineQueue: true,
    maxRetriesPerRequest: 1,
    connectTimeout: REDIS_COMMAND_TIMEOUT_MS,
    commandTimeout: REDIS_COMMAND_TIMEOUT_MS,
    retryStrategy: (attempt) => Math.min(attempt * 200, 5000),
  });
  let lastError = '';
  redis.on('error', (err: Error) => {
    // ioredis emits an error per failed reconnect attempt; log each distinct failure once.
    if (err.message !== lastError) log.warn({ err }, 'redis connection failed');
    lastError = err.message;
  });
  redis.on('ready', () => {
    lastError = '';
  });
  // Once the first connection attempt has succeeded or failed, commands no longer wait for a connection.
  // ioredis reads this option on every command, so from then on a lost connection fails commands at once.
  const stopQueueing = () => {
    redis.options.enableOfflineQueue = false;
  };
  redis.once('ready', stopQueueing);
  redis.once('error', stopQueueing);
  return redis;
}
