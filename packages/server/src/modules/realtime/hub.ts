import type { RealtimeEvent } from '@plinth/shared';
import type { FastifyBaseLogger } from 'fastify';
import type { Broadcast } from '../../core/broadcast.ts';
import type { Clock } from '../../core/clock.ts';
import { newId } from '../../core/ids.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import { readInstallationId } from '../../db/installation.ts';
import { parseChannel } from './channels.ts';

/** What a module publishes: `type` says what happened; `id` and `occurredAt` are filled in when absent. */
export interface PublishedEvent {
  /** `resource.verb`, e.g. `member.added`, `notification.created`. */
  type: string;
  /** The event's details: plain JSON that every permitted subscriber of the channel may see. */
  data?: unknown;
  /** A stable id (a domain event's own), so that clients can drop a duplicate; a new UUIDv7 when absent. */
  id?: string;
  /** ISO-8601; now when absent. */
  occurredAt?: string;
}

/** `app.realtime`: how any module sends an event to the clients following a channel, on every replica. */
export interface RealtimePublisher {
  /**
   * Sends `event` to every connection following `channel` (`org:<orgId>` or `user:<userId>`), on this replica
   * at once and on the others through Redis. Best effort, like every pub/sub: a client that is not connected
   * (or a replica that is cut off from Redis) misses it, so state that must not be missed lives in the database
   * (notifications do) and clients re-read it when they reconnect. Throws for a malformed channel or type, or an
   * event over 64 KiB serialised — programming errors, not conditions to handle.
   */
  publish(channel: string, event: PublishedEvent): Promise<void>;
}

/** A connection, as the hub sees it: something that takes ready-made text frames. */
export interface RealtimeSubscriber {
  deliver(frame: string): void;
}

export interface RealtimeHub extends RealtimePublisher {
  /** Starts handing `subscriber` the events of `channel` published anywhere in the installation. */
  follow(channel: string, subscriber: RealtimeSubscriber): void;
  unfollow(channel: string, subscriber: RealtimeSubscriber): void;
  /** How many channels this replica has followers for. */
  channelCount(): number;
}

/** The largest event, serialised, in bytes: a realtime message is a nudge with a summary, not a payload. */
export const MAX_EVENT_BYTES = 64 * 1024;
const EVENT_TYPE = /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$/;

/**
 * The fan-out. Every replica publishes to, and listens on, one broadcast channel of the installation
 * (`plinth:<installationId>:realtime`), and hands each message to its own followers of the realtime channel it
 * names; there is no per-channel Redis subscription to create and drop as clients come and go, and a replica
 * with no follower of a channel drops its messages with one map lookup. The broadcast (core/broadcast.ts) hands
 * a message to this replica's handler synchronously, and the copy from Redis is not handled twice.
 *
 * A broadcast message is `<channel>\n<frame>`, the frame being the exact text sent to clients, so a replica
 * serialises nothing per message and nothing per follower.
 */
export async function createRealtimeHub(deps: {
  broadcast: Broadcast;
  database: DatabaseHandle;
  clock: Clock;
  log: FastifyBaseLogger;
}): Promise<RealtimeHub> {
  // Under the installation's id, so that two installations sharing a Redis never see each other's events.
  const installationId = await readInstallationId(deps.database);
  const broadcastChannel = installationId ? `plinth:${installationId}:realtime` : 'plinth:realtime';
  const followers = new Map<string, Set<RealtimeSubscriber>>();

  await deps.broadcast.subscribe(broadcastChannel, (message) => {
    const at = message.indexOf('\n');
    if (at < 0) return;
    const local = followers.get(message.slice(0, at));
    if (!local) return;
    const frame = message.slice(at + 1);
    for (const subscriber of local) {
      try {
        subscriber.deliver(frame);
      } catch (err) {
        // One broken connection must not keep the event from the others.
        deps.log.warn({ err }, 'cannot deliver a realtime event');
      }
    }
  });

  return {
    async publish(channel, event) {
      if (!parseChannel(channel)) throw new Error(`"${channel}" is not a realtime channel`);
      if (!EVENT_TYPE.test(event.type)) throw new Error(`"${event.type}" is not a resource.verb event type`);
      const delivered: RealtimeEvent = {
        id: event.id ?? newId(),
        type: event.type,
        occurredAt: event.occurredAt ?? deps.clock.now().toISOString(),
        data: event.data ?? null,
      };
      const frame = JSON.stringify({ type: 'event', channel, event: delivered });
      if (Buffer.byteLength(frame) > MAX_EVENT_BYTES) {
        throw new Error(`realtime event ${event.type} is over ${MAX_EVENT_BYTES} bytes`);
      }
      await deps.broadcast.publish(broadcastChannel, `${channel}\n${frame}`);
    },
    follow(channel, subscriber) {
      const set = followers.get(channel);
      if (set) set.add(subscriber);
      else followers.set(channel, new Set([subscriber]));
    },
    unfollow(channel, subscriber) {
      const set = followers.get(channel);
      if (!set) return;
      set.delete(subscriber);
      if (set.size === 0) followers.delete(channel);
    },
    channelCount: () => followers.size,
  };
}
