import { randomUUID } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { Redis } from 'ioredis';

/**
 * Messages to every replica of the installation, for caches that must forget something at once everywhere
 * (revoked sessions, changed permissions, revoked API keys). Through Redis pub/sub when Redis is configured;
 * otherwise the process is the whole installation and a message reaches only its own handlers.
 *
 * Delivery is best effort: a replica that misses a message (Redis down) must still converge, which is why every
 * cache that relies on this also expires its entries. A message is handed to this replica's handlers as soon
 * as it is published, so the replica that made a change never serves the stale value itself; the copy that comes
 * back from Redis is recognised by its origin and not handled twice.
 */
export interface Broadcast {
  publish(channel: string, message: string): Promise<void>;
  /** Calls `handler` with every message on `channel`, from this replica or any other. Resolves once subscribed. */
  subscribe(channel: string, handler: (message: string) => void): Promise<void>;
  close(): Promise<void>;
}

const SEPARATOR = '|';

export function createBroadcast(redis: Redis | undefined, log: FastifyBaseLogger): Broadcast {
  const origin = randomUUID();
  const handlers = new Map<string, ((message: string) => void)[]>();
  const deliver = (channel: string, message: string) => {
    for (const handler of handlers.get(channel) ?? []) handler(message);
  };
  const subscriber = redis ? openSubscriber(redis, log, handlers, origin, deliver) : undefined;

  return {
    async publish(channel, message) {
      deliver(channel, message);
      if (!redis) return;
      await redis
        .publish(channel, `${origin}${SEPARATOR}${message}`)
        .catch((err: unknown) => log.warn({ err, channel }, 'cannot broadcast to other replicas'));
    },
    async subscribe(channel, handler) {
      const known = handlers.get(channel);
      if (known) known.push(handler);
      else handlers.set(channel, [handler]);
      if (subscriber && !known) await subscriber.join(channel);
    },
    async close() {
      if (subscriber) await subscriber.connection.quit().catch(() => subscriber.connection.disconnect());
    },
  };
}

/**
 * A connection of its own (a subscribed Redis connection can do nothing else) that hands every message from
 * another replica to the handlers.
 *
 * The shared client stops queueing commands once its first connection attempt is over (see redis.ts), and
 * `duplicate()` copies that setting: a SUBSCRIBE sent while the new connection is still being made would fail,
 * and the replica would never hear from the others. So this connection keeps its offline queue, and it
 * subscribes again to every channel each time it (re)connects — ioredis re-subscribes only to channels it had
 * joined, which is none if Redis was down at start-up. `join` waits for the first attempt, bounded by the
 * client's retry settings.
 */
function openSubscriber(
  redis: Redis,
  log: FastifyBaseLogger,
  handlers: ReadonlyMap<string, unknown>,
  origin: string,
  deliver: (channel: string, message: string) => void,
): { connection: Redis; join(channel: string): Promise<void> } {
  const connection = redis.duplicate({ enableOfflineQueue: true });
  let lastError = '';
  connection.on('error', (err: Error) => {
    if (err.message !== lastError) log.warn({ err }, 'redis connection for broadcasts failed');
    lastError = err.message;
  });
  connection.on('message', (channel: string, raw: string) => {
    const at = raw.indexOf(SEPARATOR);
    if (at < 0 || raw.slice(0, at) === origin) return;
    deliver(channel, raw.slice(at + 1));
  });
  const join = (...channels: string[]) =>
    connection.subscribe(...channels).then(
      () => {
        lastError = '';
      },
      (err: unknown) => log.warn({ err, channels }, 'cannot subscribe to broadcasts'),
    );
  connection.on('ready', () => {
    if (handlers.size > 0) void join(...handlers.keys());
  });
  return { connection, join: (channel) => join(channel) };
}
