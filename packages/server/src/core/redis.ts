import type { FastifyBaseLogger } from 'fastify';
import { Redis } from 'ioredis';

/** How long a Redis command may wait for a connection or an answer before failing, in ms. */
const REDIS_COMMAND_TIMEOUT_MS = 1000;

/**
 * The shared Redis client for the scale-out mode. It reconnects by itself with capped backoff; while it is
 * disconnected, commands fail fast instead of queueing, so callers can fall back and readiness can say so.
 */
export function openRedis(url: string, log: FastifyBaseLogger): Redis {
  const redis = new Redis(url, {
    lazyConnect: false,
    enableOfflineQueue: false,
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
  return redis;
}
