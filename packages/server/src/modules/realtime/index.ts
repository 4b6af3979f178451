import websocket from '@fastify/websocket';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { purgeAfter, type RetentionPolicy } from '../../core/retention.ts';
import type { RealtimeDeps } from './deps.ts';
import type { RealtimePublisher } from './hub.ts';
import { realtimePermissions } from './permissions.ts';
import { realtimeRoutes } from './realtime.routes.ts';
import { createSessionManager } from './sessions.ts';

export { orgChannel, parseChannel, userChannel } from './channels.ts';
export { allowedOrigins } from './credentials.ts';
export type { RealtimeDeps } from './deps.ts';
export {
  createRealtimeHub,
  MAX_EVENT_BYTES,
  type PublishedEvent,
  type RealtimeHub,
  type RealtimePublisher,
} from './hub.ts';
export { REALTIME_READ } from './permissions.ts';

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Live events to connected clients, on every replica: `app.realtime.publish('org:<orgId>', { type, data })`
     * or `('user:<userId>', …)`. Best effort (see hub.ts); publish after the change has committed.
     */
    realtime: RealtimePublisher;
  }
}

/** The OpenAPI tags of this module's routes. */
export const realtimeTags = [
  {
    name: 'Realtime',
    description:
      'Live events over a WebSocket (`GET /api/v1/realtime`, see the API guide for the protocol) or server-sent events, and the tickets browsers connect with.',
  },
];

/** Unused tickets: they expire after 30 s; kept a day, which is long enough to see them when debugging. */
const ticketRetention: RetentionPolicy = {
  name: 'realtime_tickets',
  description: 'realtime tickets that expired without being used (a used one is deleted when it is used)',
  days: 1,
  apply: purgeAfter({ table: 'realtime_tickets', after: ['expires_at'] }),
};

/** The hard limit of one WebSocket frame: a message between the configured limit and this is refused politely. */
const HARD_FRAME_LIMIT_BYTES = 64 * 1024;

async function realtime(app: FastifyInstance, { deps }: { deps: RealtimeDeps }): Promise<void> {
  deps.registry.addPermissions(realtimePermissions);
  app.retention.add(ticketRetention);
  app.decorate('realtime', { publish: (channel, event) => deps.hub.publish(channel, event) });
  const sessions = createSessionManager({
    config: deps.config,
    clock: deps.clock,
    log: deps.log,
    hub: deps.hub,
    access: deps.access,
    revoked: deps.revoked,
    apiKeys: deps.apiKeys,
    ...(deps.metrics ? { registry: deps.metrics } : {}),
  });
  // Before the WebSocket plugin's own pre-close hook, so clients get 1001 and a reason rather than a bare close.
  app.addHook('preClose', async () => sessions.close());
  await app.register(websocket, {
    options: {
      maxPayload: Math.max(HARD_FRAME_LIMIT_BYTES, deps.config.maxMessageBytes * 2),
      // Compression costs memory per connection and opens the door to decompression bombs; events are small.
      perMessageDeflate: false,
    },
  });
  await app.register(realtimeRoutes, { deps, sessions, prefix: '/api/v1' });
}

/**
 * Realtime: the WebSocket (`/api/v1/realtime`), its SSE fallback (`/api/v1/realtime/sse`), tickets for browsers,
 * and `app.realtime.publish`, which reaches the clients on every replica.
 */
export const realtimeModule = fp(realtime, {
  name: 'plinth-realtime',
  dependencies: ['plinth-auth', 'plinth-rbac'],
});
