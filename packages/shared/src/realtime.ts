import { z } from 'zod';
import { defineErrors } from './errors.ts';

/**
 * The realtime protocol (`GET /api/v1/realtime` WebSocket, `GET /api/v1/realtime/sse`) and its tickets
 * (`POST /api/v1/realtime/ticket`), shared by the server, the SDK and the console. Message shapes, error codes
 * and close codes are the public contract (docs/api.md, "Realtime").
 */

/** Errors of the realtime module's HTTP answers (before a WebSocket upgrade, and on the SSE and ticket routes). */
export const realtimeErrors = defineErrors({
  /** A `ticket` that does not exist, was used already, or has expired. */
  INVALID_REALTIME_TICKET: { status: 401, title: 'The realtime ticket is not valid.' },
  /** A browser page from an origin that is not in CORS_ORIGINS (nor the installation's own). */
  REALTIME_ORIGIN_NOT_ALLOWED: { status: 403, title: 'This origin may not open realtime connections.' },
  /** A channel name that is neither `org:<id>` nor `user:<id>`. */
  INVALID_REALTIME_CHANNEL: { status: 400, title: 'The realtime channel name is not valid.' },
  /** The caller may not see this channel (another organization's, another user's, or no such organization). */
  REALTIME_CHANNEL_FORBIDDEN: { status: 403, title: 'You may not subscribe to this channel.' },
  /** More connections than the per-user (or per-replica) limit. */
  REALTIME_TOO_MANY_CONNECTIONS: { status: 429, title: 'Too many realtime connections.' },
  /** An SSE request naming more channels than a connection may hold. */
  REALTIME_TOO_MANY_SUBSCRIPTIONS: { status: 400, title: 'Too many channels for one connection.' },
  /** A ticket or header names both, or a ticket comes with an `Authorization` header. */
  REALTIME_AMBIGUOUS_CREDENTIAL: { status: 400, title: 'Send one credential: a ticket or a header.' },
});

/**
 * Close codes of a realtime WebSocket besides the standard ones (1001 the server is shutting down, 1009 a
 * message over the hard frame limit, 1011 an internal error, 1013 the replica is full). Each comes with its
 * `reason` string, which the SSE stream sends in its final `close` message too.
 */
export const REALTIME_CLOSE = {
  /** The access token the connection was opened with has expired: get a fresh one (or a new ticket), reconnect. */
  CREDENTIAL_EXPIRED: { code: 4001, reason: 'credential_expired' },
  /** Its session was revoked (sign-out, password change), or its API key revoked, rotated away or expired. */
  CREDENTIAL_REVOKED: { code: 4002, reason: 'credential_revoked' },
  /** The client did not read its messages fast enough (its send buffer passed the limit). */
  SLOW_CONSUMER: { code: 4009, reason: 'slow_consumer' },
  /** The caller already holds as many connections as the limit allows. */
  TOO_MANY_CONNECTIONS: { code: 4029, reason: 'too_many_connections' },
  /** The replica holds as many connections as it accepts: try again (another replica may take it). */
  SERVER_FULL: { code: 1013, reason: 'server_full' },
  /** The client did not answer the server's ping within one ping interval (the peer or the network is gone). */
  PING_TIMEOUT: { code: 4008, reason: 'ping_timeout' },
  /** The server is shutting down: reconnect (another replica takes the connection). */
  GOING_AWAY: { code: 1001, reason: 'server_shutting_down' },
} as const;

/** The error codes of `{ type: 'error' }` messages on an open connection. */
export const REALTIME_MESSAGE_ERRORS = [
  /** Not JSON, not an object, an unknown `type`, or fields of the wrong shape. */
  'INVALID_MESSAGE',
  /** Over `REALTIME_MAX_MESSAGE_BYTES`. */
  'MESSAGE_TOO_LARGE',
  /** Not `org:<id>` or `user:<id>`. */
  'INVALID_CHANNEL',
  /** Not permitted (or no such organization: the two are not told apart). */
  'CHANNEL_FORBIDDEN',
  /** The connection already holds `REALTIME_MAX_SUBSCRIPTIONS` channels. */
  'TOO_MANY_SUBSCRIPTIONS',
  /** More messages than the per-connection rate allows; this one was ignored. */
  'RATE_LIMITED',
  /** A permission re-check found the channel no longer permitted; the subscription has ended. */
  'SUBSCRIPTION_REVOKED',
  /** The permission could not be checked just now (the database did not answer): try again. */
  'UNAVAILABLE',
] as const;
export type RealtimeMessageError = (typeof REALTIME_MESSAGE_ERRORS)[number];

/** A channel name: an organization's events or a user's own notifications. */
export const RealtimeChannel = z.string().max(64).meta({
  description: '`org:<orgId>` or `user:<userId>`.',
  example: 'org:01890a5d-ac96-774b-bcce-b302099a8057',
});

/** What a client sends. */
export const RealtimeClientMessage = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('subscribe'), channel: RealtimeChannel }),
  z.strictObject({ type: z.literal('unsubscribe'), channel: RealtimeChannel }),
  /** An application-level ping (browsers cannot send WebSocket ping frames): answered with `pong`. */
  z.strictObject({ type: z.literal('ping'), id: z.string().max(64).optional() }),
]);
export type RealtimeClientMessage = z.infer<typeof RealtimeClientMessage>;

/** An event as delivered on a channel. */
export const RealtimeEvent = z
  .object({
    id: z.string().meta({ description: 'Unique per event: clients drop duplicates by it.' }),
    type: z
      .string()
      .meta({ description: 'What happened, `resource.verb`.', example: 'notification.created' }),
    occurredAt: z.string(),
    data: z.unknown(),
  })
  .meta({ id: 'RealtimeEvent' });
export type RealtimeEvent = z.infer<typeof RealtimeEvent>;

/** What the server sends (on the WebSocket as text frames; on SSE as the `data` of an event of the same name). */
export type RealtimeServerMessage =
  | {
      type: 'welcome';
      connectionId: string;
      principal: { type: 'user'; userId: string } | { type: 'apikey'; keyId: string; orgId: string };
      /** When the credential expires and the connection is closed (4001); null for an API key. */
      expiresAt: string | null;
      limits: { maxSubscriptions: number; maxMessageBytes: number };
    }
  | { type: 'subscribed'; channel: string }
  | { type: 'unsubscribed'; channel: string }
  | { type: 'event'; channel: string; event: RealtimeEvent }
  | { type: 'pong'; id?: string }
  | { type: 'error'; code: RealtimeMessageError; message: string; channel?: string }
  | { type: 'close'; code: number; reason: string };

/** `POST /api/v1/realtime/ticket`: a single-use credential for `?ticket=`, for browsers. */
export const RealtimeTicket = z
  .object({
    ticket: z.string().meta({ description: 'Pass as `?ticket=` within `expiresAt`; works once.' }),
    expiresAt: z.string(),
  })
  .meta({ id: 'RealtimeTicket' });
export type RealtimeTicket = z.infer<typeof RealtimeTicket>;

/** Every realtime ticket starts with this. */
export const REALTIME_TICKET_PREFIX = 'rtk_';

/** The query of the WebSocket route. */
export const RealtimeQuery = z.object({
  ticket: z.string().max(128).optional().meta({ description: 'A ticket from `POST /realtime/ticket`.' }),
});

/** The query of the SSE route: the channels (one or more `channel=`), and optionally a ticket. */
export const RealtimeSseQuery = RealtimeQuery.extend({
  channel: z
    .union([RealtimeChannel, z.array(RealtimeChannel).max(1000)])
    .transform((v) => (Array.isArray(v) ? v : [v]))
    .meta({ description: 'A channel to follow; repeat for several (`?channel=a&channel=b`).' }),
});
