import { performance } from 'node:perf_hooks';
import {
  REALTIME_CLOSE,
  RealtimeClientMessage,
  type RealtimeMessageError,
  type RealtimeServerMessage,
} from '@plinth/shared';
import type { FastifyBaseLogger } from 'fastify';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { RealtimeConfig } from '../../config.ts';
import type { Clock } from '../../core/clock.ts';
import { newId } from '../../core/ids.ts';
import type { ApiKeyStore } from '../apikeys/index.ts';
import type { RevokedSessions } from '../auth/index.ts';
import type { AccessResolver } from '../rbac/index.ts';
import { mayFollow, parseChannel } from './channels.ts';
import type { RealtimeCredential } from './credentials.ts';
import type { RealtimeHub, RealtimeSubscriber } from './hub.ts';

/**
 * Realtime sessions: one per open WebSocket or SSE stream, whatever carries it. A session holds the credential it
 * was opened with, its subscriptions, and enforces the limits; the manager keeps every session of the replica,
 * counts them per caller, and watches the credentials:
 * - every second, a session whose access token has expired is closed (4001), and one whose session is in the
 *   revocation set (4002) — the clock is the application's, so tests move it;
 * - at once, when a session is revoked anywhere (the revocation broadcast), or an API key is rotated or revoked
 *   (the key store's broadcast: the key is verified again);
 * - every 30 s, and at once for an organization whose roles or existence change, every subscription is
 *   authorized again (and API keys verified again), so a member removed or demoted stops receiving the
 *   organization's events.
 */

/** How a session talks to its client: a WebSocket, or an SSE response. */
export interface RealtimeTransport {
  readonly kind: 'websocket' | 'sse';
  /** Sends one message: its `type` (the SSE event name) and its JSON text. */
  send(type: RealtimeServerMessage['type'], text: string): void;
  /** Bytes queued for the client and not yet handed to the network. */
  buffered(): number;
  /** Ends the connection, telling the client why (a close frame; SSE's final `close` message). */
  close(code: number, reason: string): void;
  /** Keeps the connection alive; a WebSocket whose previous ping went unanswered is cut instead. */
  ping(): void;
}

export interface RealtimeSession {
  readonly id: string;
  readonly credential: RealtimeCredential;
  /** One message from the client (WebSocket): parsed, checked against the limits, answered. */
  receive(data: Buffer, isBinary: boolean): void;
  /** Follows a channel if the caller may; the error code otherwise. Sends nothing (SSE subscribes up front). */
  subscribe(channel: string): Promise<RealtimeMessageError | undefined>;
  /** Sends the first message, which names the caller, the credential's expiry and the limits. */
  welcome(): void;
  /** The client answered a ping. */
  pong(): void;
  /** The connection is gone (closed by the client or the network): forget the session. */
  ended(): void;
  /** Ends the session and its connection with a close code. */
  close(close: { code: number; reason: string }): void;
}

export interface RealtimeSessionManager {
  /** Whether a new connection of this caller fits the limits: the close to refuse it with otherwise. */
  admit(credential: RealtimeCredential): { code: number; reason: string } | undefined;
  /** A session for an admitted connection. */
  open(credential: RealtimeCredential, transport: RealtimeTransport): RealtimeSession;
  /** Open sessions on this replica. */
  count(): number;
  /** Closes every session (1001, the server is going away) and stops watching. */
  close(): void;
}

export interface SessionManagerDeps {
  config: RealtimeConfig;
  clock: Clock;
  log: FastifyBaseLogger;
  hub: RealtimeHub;
  access: Pick<AccessResolver, 'resolve' | 'onOrgChanged'>;
  revoked: Pick<RevokedSessions, 'has' | 'onRevoked'>;
  apiKeys: Pick<ApiKeyStore, 'verify' | 'onKeyChanged'>;
  /** Where the realtime metrics are registered (the app's registry). */
  registry?: Registry;
}

/** How often credentials are checked for expiry and revocation, in ms (against the application clock). */
const CHECK_INTERVAL_MS = 1000;
/** How often every subscription is authorized again and API keys verified again, in ms. */
export const RECHECK_INTERVAL_MS = 30_000;
/** Messages a client may send in a burst, and per second sustained; more are refused with `RATE_LIMITED`. */
const MESSAGE_BURST = 20;
const MESSAGES_PER_SECOND = 10;

const principalKey = (credential: RealtimeCredential) =>
  credential.principal.type === 'user'
    ? `user:${credential.principal.userId}`
    : `apikey:${credential.principal.keyId}`;

const ERROR_TEXT: Record<RealtimeMessageError, string> = {
  INVALID_MESSAGE: 'Send a JSON object: {"type":"subscribe"|"unsubscribe","channel":"…"} or {"type":"ping"}.',
  MESSAGE_TOO_LARGE: 'The message is over the size limit.',
  INVALID_CHANNEL: 'A channel is org:<orgId> or user:<userId>.',
  CHANNEL_FORBIDDEN: 'You may not subscribe to this channel.',
  TOO_MANY_SUBSCRIPTIONS: 'This connection follows as many channels as it may.',
  RATE_LIMITED: 'Too many messages; this one was ignored.',
  SUBSCRIPTION_REVOKED: 'You may no longer follow this channel; the subscription has ended.',
  UNAVAILABLE: 'The permission could not be checked just now; try again.',
};

export function createSessionManager(deps: SessionManagerDeps): RealtimeSessionManager {
  const { config, clock, log, hub } = deps;
  const sessions = new Set<Session>();
  const perCaller = new Map<string, number>();
  const metrics = realtimeMetrics(deps.registry);

  interface Session extends RealtimeSession, RealtimeSubscriber {
    readonly transport: RealtimeTransport;
    readonly subscriptions: Set<string>;
    /** Authorizes every subscription again, ending those no longer permitted. */
    recheck(): Promise<void>;
    /** Verifies the session's API key again, closing the session if it no longer works. */
    reverify(): Promise<void>;
    /** Pings the client; false when a WebSocket has not answered the previous ping (it is gone). */
    keepAlive(): boolean;
  }

  const openSession = (credential: RealtimeCredential, transport: RealtimeTransport): Session => {
    const id = newId();
    const subscriptions = new Set<string>();
    const pending = new Map<string, Promise<RealtimeMessageError | undefined>>();
    let closed = false;
    let alive = true;
    let tokens = MESSAGE_BURST;
    let refilledAt = performance.now();

    const send = (message: RealtimeServerMessage) => {
      if (!closed) transport.send(message.type, JSON.stringify(message));
    };
    const error = (code: RealtimeMessageError, channel?: string) =>
      send({ type: 'error', code, message: ERROR_TEXT[code], ...(channel === undefined ? {} : { channel }) });

    const forget = () => {
      closed = true;
      for (const channel of subscriptions) hub.unfollow(channel, session);
      subscriptions.clear();
      sessions.delete(session);
      const key = principalKey(credential);
      const left = (perCaller.get(key) ?? 1) - 1;
      if (left > 0) perCaller.set(key, left);
      else perCaller.delete(key);
      metrics.connections.dec({ transport: transport.kind });
    };

    const allowMessage = () => {
      const now = performance.now();
      tokens = Math.min(MESSAGE_BURST, tokens + ((now - refilledAt) / 1000) * MESSAGES_PER_SECOND);
      refilledAt = now;
      if (tokens < 1) return false;
      tokens -= 1;
      return true;
    };

    const unsubscribe = (channel: string) => {
      if (subscriptions.delete(channel)) hub.unfollow(channel, session);
    };

    const subscribe = async (channel: string): Promise<RealtimeMessageError | undefined> => {
      const parsed = parseChannel(channel);
      if (!parsed) return 'INVALID_CHANNEL';
      if (subscriptions.has(channel)) return undefined;
      const inFlight = pending.get(channel);
      if (inFlight) return inFlight;
      if (subscriptions.size + pending.size >= config.maxSubscriptions) return 'TOO_MANY_SUBSCRIPTIONS';
      const decision = mayFollow(parsed, credential.principal, deps.access).then(
        (permitted): RealtimeMessageError | undefined => {
          if (!permitted) return 'CHANNEL_FORBIDDEN';
          if (!closed) {
            subscriptions.add(channel);
            hub.follow(channel, session);
          }
          return undefined;
        },
        (err: unknown): RealtimeMessageError => {
          log.warn({ err, connectionId: id }, 'cannot check a realtime subscription');
          return 'UNAVAILABLE';
        },
      );
      pending.set(channel, decision);
      try {
        return await decision;
      } finally {
        pending.delete(channel);
      }
    };

    const handle = async (text: string) => {
      let parsedJson: unknown;
      try {
        parsedJson = JSON.parse(text);
      } catch {
        error('INVALID_MESSAGE');
        return;
      }
      const message = RealtimeClientMessage.safeParse(parsedJson);
      if (!message.success) {
        error('INVALID_MESSAGE');
        return;
      }
      const m = message.data;
      if (m.type === 'ping') {
        send(m.id === undefined ? { type: 'pong' } : { type: 'pong', id: m.id });
      } else if (m.type === 'unsubscribe') {
        unsubscribe(m.channel);
        send({ type: 'unsubscribed', channel: m.channel });
      } else {
        const refused = await subscribe(m.channel);
        if (refused) error(refused, m.channel);
        else send({ type: 'subscribed', channel: m.channel });
      }
    };

    const session: Session = {
      id,
      credential,
      transport,
      subscriptions,
      receive(data, isBinary) {
        if (closed) return;
        if (!allowMessage()) {
          error('RATE_LIMITED');
          return;
        }
        if (data.length > config.maxMessageBytes) {
          error('MESSAGE_TOO_LARGE');
          return;
        }
        if (isBinary) {
          error('INVALID_MESSAGE');
          return;
        }
        handle(data.toString('utf8')).catch((err: unknown) => {
          log.error({ err, connectionId: id }, 'realtime message handling failed');
        });
      },
      subscribe,
      welcome() {
        const { principal } = credential;
        send({
          type: 'welcome',
          connectionId: id,
          principal:
            principal.type === 'user'
              ? { type: 'user', userId: principal.userId }
              : { type: 'apikey', keyId: principal.keyId, orgId: principal.orgId },
          expiresAt: credential.expiresAt === null ? null : new Date(credential.expiresAt).toISOString(),
          limits: { maxSubscriptions: config.maxSubscriptions, maxMessageBytes: config.maxMessageBytes },
        });
      },
      deliver(frame) {
        if (closed) return;
        if (transport.buffered() > config.maxBufferedBytes) {
          session.close(REALTIME_CLOSE.SLOW_CONSUMER);
          return;
        }
        transport.send('event', frame);
        metrics.delivered.inc({ transport: transport.kind });
      },
      pong() {
        alive = true;
      },
      ended() {
        if (!closed) forget();
      },
      close(close) {
        if (closed) return;
        forget();
        metrics.closed.inc({ reason: close.reason });
        transport.close(close.code, close.reason);
      },
      async recheck() {
        for (const channel of [...subscriptions]) {
          const parsed = parseChannel(channel);
          let permitted: boolean;
          try {
            permitted = parsed !== undefined && (await mayFollow(parsed, credential.principal, deps.access));
          } catch (err) {
            // A subscription already granted stays while the database does not answer; the next pass decides.
            log.warn({ err, connectionId: id }, 'cannot re-check a realtime subscription');
            continue;
          }
          if (!permitted && subscriptions.has(channel)) {
            unsubscribe(channel);
            error('SUBSCRIPTION_REVOKED', channel);
          }
        }
      },
      async reverify() {
        const apiKey = credential.apiKey;
        if (!apiKey || closed) return;
        try {
          await deps.apiKeys.verify(apiKey.key, apiKey.ip);
        } catch {
          session.close(REALTIME_CLOSE.CREDENTIAL_REVOKED);
        }
      },
      keepAlive() {
        // A WebSocket that did not answer the previous ping is gone (a dead peer, a cut network).
        if (transport.kind === 'websocket' && !alive) return false;
        alive = false;
        transport.ping();
        return true;
      },
    };
    return session;
  };

  const expiredOrRevoked = (session: Session, now: number) => {
    const { principal, expiresAt } = session.credential;
    if (principal.type === 'user' && deps.revoked.has(principal.sessionId)) {
      return REALTIME_CLOSE.CREDENTIAL_REVOKED;
    }
    if (expiresAt !== null && expiresAt <= now) return REALTIME_CLOSE.CREDENTIAL_EXPIRED;
    return undefined;
  };

  const check = setInterval(() => {
    const now = clock.now().getTime();
    for (const session of sessions) {
      const close = expiredOrRevoked(session, now);
      if (close) session.close(close);
    }
  }, CHECK_INTERVAL_MS);
  check.unref();

  const pinger = setInterval(() => {
    for (const session of sessions) {
      if (!session.keepAlive()) session.close(REALTIME_CLOSE.PING_TIMEOUT);
      else if (session.transport.buffered() > config.maxBufferedBytes)
        session.close(REALTIME_CLOSE.SLOW_CONSUMER);
    }
  }, config.pingIntervalMs);
  pinger.unref();

  const recheckAll = () => {
    for (const session of sessions) {
      void session.reverify().then(() => session.recheck());
    }
  };
  const rechecker = setInterval(recheckAll, RECHECK_INTERVAL_MS);
  rechecker.unref();

  deps.revoked.onRevoked((sessionIds) => {
    const ids = new Set(sessionIds);
    for (const session of sessions) {
      const { principal } = session.credential;
      if (principal.type === 'user' && ids.has(principal.sessionId)) {
        session.close(REALTIME_CLOSE.CREDENTIAL_REVOKED);
      }
    }
  });
  deps.apiKeys.onKeyChanged((keyId) => {
    for (const session of sessions) {
      const { principal } = session.credential;
      if (principal.type === 'apikey' && principal.keyId === keyId) void session.reverify();
    }
  });
  deps.access.onOrgChanged((orgId) => {
    const channel = `org:${orgId}`;
    for (const session of sessions) {
      const { principal } = session.credential;
      if (principal.type === 'apikey' && principal.orgId === orgId) void session.reverify();
      if (session.subscriptions.has(channel)) void session.recheck();
    }
  });

  return {
    admit(credential) {
      if (sessions.size >= config.maxConnections) return REALTIME_CLOSE.SERVER_FULL;
      if ((perCaller.get(principalKey(credential)) ?? 0) >= config.maxConnectionsPerUser) {
        return REALTIME_CLOSE.TOO_MANY_CONNECTIONS;
      }
      return undefined;
    },
    open(credential, transport) {
      const session = openSession(credential, transport);
      sessions.add(session);
      const key = principalKey(credential);
      perCaller.set(key, (perCaller.get(key) ?? 0) + 1);
      metrics.connections.inc({ transport: transport.kind });
      // A credential that is already past its time (a token expiring during the handshake) is closed at once.
      const close = expiredOrRevoked(session, clock.now().getTime());
      if (close) session.close(close);
      return session;
    },
    count: () => sessions.size,
    close() {
      clearInterval(check);
      clearInterval(pinger);
      clearInterval(rechecker);
      for (const session of [...sessions]) session.close(REALTIME_CLOSE.GOING_AWAY);
    },
  };
}

/** The realtime metrics, on the app's registry (a registry of their own when none is given, as in unit use). */
function realtimeMetrics(registry: Registry | undefined) {
  const registers = registry ? [registry] : [];
  return {
    connections: new Gauge({
      name: 'realtime_connections',
      help: 'Open realtime connections on this replica, by transport (websocket, sse).',
      labelNames: ['transport'],
      registers,
    }),
    delivered: new Counter({
      name: 'realtime_events_delivered_total',
      help: 'Realtime events handed to connections, by transport.',
      labelNames: ['transport'],
      registers,
    }),
    closed: new Counter({
      name: 'realtime_connections_closed_total',
      help: 'Realtime connections the server closed, by reason (credential_expired, slow_consumer, …).',
      labelNames: ['reason'],
      registers,
    }),
  };
}
