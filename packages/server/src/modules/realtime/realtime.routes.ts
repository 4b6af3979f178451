import type { ServerResponse } from 'node:http';
import {
  coreErrors,
  REALTIME_CLOSE,
  RealtimeQuery,
  RealtimeSseQuery,
  RealtimeTicket,
  realtimeErrors,
} from '@plinth/shared';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { RawData, WebSocket } from 'ws';
import { z } from 'zod';
import { AppError } from '../../core/errors.ts';
import { jsonResponse, problemResponses } from '../../core/responses.ts';
import { userOf } from '../auth/index.ts';
import { mayFollow, parseChannel } from './channels.ts';
import { accessTokenExpiry, credentialOf, realtimeAuthentication } from './credentials.ts';
import type { RealtimeDeps } from './deps.ts';
import type { RealtimeSessionManager, RealtimeTransport } from './sessions.ts';
import { issueTicket } from './ticket.service.ts';

/** How long a closed WebSocket may take to finish its closing handshake before its socket is destroyed, in ms. */
const CLOSE_GRACE_MS = 5000;
/** How long an SSE client waits before reconnecting after the stream ends (its `retry:` field), in ms. */
const SSE_RETRY_MS = 5000;

/**
 * The realtime routes: the ticket for browsers, the WebSocket, and the server-sent events fallback. The two
 * streaming routes authenticate in `onRequest` (credentials.ts), so a refusal is a problem+json answer before any
 * socket is upgraded or stream started.
 */
export const realtimeRoutes: FastifyPluginAsyncZod<{
  deps: RealtimeDeps;
  sessions: RealtimeSessionManager;
}> = async (app, { deps, sessions }) => {
  const authenticateRealtime = realtimeAuthentication({
    authenticate: deps.authenticate,
    db: deps.database.db,
    clock: deps.clock,
    revoked: deps.revoked,
    origins: deps.origins,
  });

  app.post(
    '/realtime/ticket',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['Realtime'],
        security: [{ bearerAuth: [] }],
        summary: 'Get a realtime ticket',
        description:
          'A single-use credential for `GET /realtime?ticket=` or `GET /realtime/sse?ticket=`, for browsers, which cannot send an `Authorization` header with a WebSocket handshake or an EventSource. It works once, for `REALTIME_TICKET_TTL_SECONDS` (30 s by default) and never past the access token it was obtained with; the connection it opens closes when that access token expires. Access tokens only (an API key sends its header).',
        operationId: 'createRealtimeTicket',
        response: { 201: jsonResponse(RealtimeTicket, 'The ticket.'), ...problemResponses(401, 403) },
      },
    },
    async (request, reply) => {
      const ticket = await issueTicket(
        { db: deps.database.db, clock: deps.clock, ttlSeconds: deps.config.ticketTtlSeconds },
        userOf(request),
        new Date(accessTokenExpiry(request)),
      );
      return reply.status(201).send(ticket);
    },
  );

  app.get(
    '/realtime',
    {
      websocket: true,
      onRequest: authenticateRealtime,
      schema: { querystring: RealtimeQuery },
    },
    (socket: WebSocket, request) => {
      const credential = credentialOf(request);
      const refused = sessions.admit(credential);
      if (refused) {
        socket.close(refused.code, refused.reason);
        return;
      }
      const session = sessions.open(credential, webSocketTransport(socket));
      socket.on('message', (data, isBinary) => session.receive(asBuffer(data), isBinary));
      socket.on('pong', () => session.pong());
      socket.on('close', () => session.ended());
      session.welcome();
    },
  );

  app.get(
    '/realtime/sse',
    {
      onRequest: authenticateRealtime,
      schema: {
        tags: ['Realtime'],
        security: [{ bearerAuth: [] }, { apiKey: [] }, {}],
        summary: 'Follow channels as server-sent events',
        description:
          'The fallback for clients that cannot open a WebSocket: a `text/event-stream` of the same messages (`welcome`, `subscribed`, `event`, `error`, `close`), each as an SSE event of that name whose `data` is the JSON message. The channels are fixed for the stream: name each with `channel=` (`?channel=org:<id>&channel=user:<id>`); every one must be permitted, or nothing is streamed (403). Authenticate with `Authorization` or a `ticket`.',
        operationId: 'streamRealtimeEvents',
        querystring: RealtimeSseQuery,
        response: {
          200: {
            description: 'The event stream; it ends with a `close` event when the credential expires.',
            content: { 'text/event-stream': { schema: z.string() } },
          },
          ...problemResponses(400, 401, 403, 429, 503),
        },
      },
    },
    async (request, reply) => {
      const credential = credentialOf(request);
      const channels = [...new Set(request.query.channel)];
      if (channels.length > deps.config.maxSubscriptions) {
        throw new AppError(realtimeErrors.REALTIME_TOO_MANY_SUBSCRIPTIONS, {
          detail: `Follow at most ${deps.config.maxSubscriptions} channels on one connection.`,
        });
      }
      for (const channel of channels) {
        const parsed = parseChannel(channel);
        if (!parsed) throw new AppError(realtimeErrors.INVALID_REALTIME_CHANNEL, { detail: channel });
        if (!(await mayFollow(parsed, credential.principal, deps.access))) {
          throw new AppError(realtimeErrors.REALTIME_CHANNEL_FORBIDDEN, { detail: channel });
        }
      }
      const refused = sessions.admit(credential);
      if (refused === REALTIME_CLOSE.SERVER_FULL) throw new AppError(coreErrors.SERVICE_UNAVAILABLE);
      if (refused) throw new AppError(realtimeErrors.REALTIME_TOO_MANY_CONNECTIONS);

      reply.hijack();
      const raw = reply.raw;
      const headers = Object.fromEntries(
        Object.entries(reply.getHeaders()).filter(
          (entry): entry is [string, string | number | string[]] => entry[1] !== undefined,
        ),
      );
      raw.writeHead(200, {
        ...headers,
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        connection: 'keep-alive',
        // Proxies that buffer responses (nginx) must pass each event on at once.
        'x-accel-buffering': 'no',
      });
      raw.write(`retry: ${SSE_RETRY_MS}\n\n`);
      const session = sessions.open(credential, sseTransport(raw));
      raw.on('close', () => session.ended());
      session.welcome();
      for (const channel of channels) {
        const error = await session.subscribe(channel);
        const message = error
          ? { type: 'error' as const, code: error, message: 'Not subscribed.', channel }
          : { type: 'subscribed' as const, channel };
        if (!raw.writableEnded) raw.write(sseEvent(message.type, JSON.stringify(message)));
      }
    },
  );
};

function asBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  return Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
}

function webSocketTransport(socket: WebSocket): RealtimeTransport {
  return {
    kind: 'websocket',
    send: (_type, text) => socket.send(text),
    buffered: () => socket.bufferedAmount,
    close(code, reason) {
      socket.close(code, reason);
      // A client that does not read (a slow consumer) never completes the closing handshake.
      setTimeout(() => socket.terminate(), CLOSE_GRACE_MS).unref();
    },
    ping: () => socket.ping(),
  };
}

/** One SSE event: its name and its data, a single line of JSON (JSON text never holds a raw newline). */
function sseEvent(type: string, text: string): string {
  return `event: ${type}\ndata: ${text}\n\n`;
}

function sseTransport(raw: ServerResponse): RealtimeTransport {
  return {
    kind: 'sse',
    send(type, text) {
      if (!raw.writableEnded) raw.write(sseEvent(type, text));
    },
    buffered: () => raw.writableLength,
    close(code, reason) {
      if (raw.writableEnded) return;
      raw.end(sseEvent('close', JSON.stringify({ type: 'close', code, reason })));
      // A client that does not read keeps the response from finishing; its socket goes after a grace period.
      setTimeout(() => raw.destroy(), CLOSE_GRACE_MS).unref();
    },
    ping() {
      if (!raw.writableEnded) raw.write(': ping\n\n');
    },
  };
}
