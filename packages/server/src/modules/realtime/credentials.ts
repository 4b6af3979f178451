import { API_KEY_PREFIX, authErrors, coreErrors, realtimeErrors } from '@plinth/shared';
import type { FastifyRequest, onRequestHookHandler } from 'fastify';
import { decodeJwt } from 'jose';
import type { Kysely } from 'kysely';
import type { Clock } from '../../core/clock.ts';
import { AppError } from '../../core/errors.ts';
import type { Database } from '../../db/schema.ts';
import type { Authenticate, Principal, RevokedSessions } from '../auth/index.ts';
import { redeemTicket } from './ticket.service.ts';

/** Who holds a realtime connection, and until when. */
export interface RealtimeCredential {
  principal: Principal;
  /** When the connection must close because its access token expires (ms since the epoch); null for an API key. */
  expiresAt: number | null;
  /** The key and the address it came from, for an API key: it is verified again whenever the key changes. */
  apiKey?: { key: string; ip: string };
}

const credentials = new WeakMap<FastifyRequest, RealtimeCredential>();

/** The credential the realtime authentication hook accepted for this request. */
export function credentialOf(request: FastifyRequest): RealtimeCredential {
  const credential = credentials.get(request);
  if (!credential) throw new Error(`${request.routeOptions.url} is not behind the realtime authentication`);
  return credential;
}

/** When an access token (already verified by the authenticator) expires, in ms since the epoch. */
export function accessTokenExpiry(request: FastifyRequest): number {
  const token = request.headers.authorization?.split(' ')[1] ?? '';
  const { exp } = decodeJwt(token);
  if (typeof exp !== 'number') throw new Error('a verified access token without exp');
  return exp * 1000;
}

/** The API key of a request the authenticator accepted as an API key, from whichever header carried it. */
function apiKeyOf(request: FastifyRequest): string {
  const header = request.headers['x-api-key'];
  if (typeof header === 'string') return header;
  const bearer = request.headers.authorization?.split(' ')[1] ?? '';
  if (!bearer.startsWith(API_KEY_PREFIX)) throw new Error('an API key principal without a key');
  return bearer;
}

/**
 * The origins whose pages may open realtime connections: `CORS_ORIGINS` and the installation's own
 * (`PUBLIC_URL`). A browser always sends `Origin` with a WebSocket handshake, and unlike other requests the
 * handshake is not held to CORS, so without this check any page a user visits could connect in their name
 * (cross-site WebSocket hijacking) — were the credential ambient, like a cookie. Plinth's credentials never are
 * (a header, or a ticket the page itself must fetch), so this is depth, not the only defence. Clients that are
 * not browsers send no `Origin` and are not concerned.
 */
export function allowedOrigins(corsOrigins: readonly string[], publicUrl: string): ReadonlySet<string> {
  return new Set([...corsOrigins, new URL(publicUrl).origin]);
}

/**
 * The `onRequest` hook of the realtime routes, run before a WebSocket upgrade (so a refusal is an ordinary
 * HTTP problem answer, 401/403, and no socket is ever opened for it):
 * 1. an `Origin` not allowed → 403 `REALTIME_ORIGIN_NOT_ALLOWED`;
 * 2. `?ticket=` → spent (once, across replicas); unknown, used or expired → 401 `INVALID_REALTIME_TICKET`; its
 *    session revoked meanwhile → 401 `SESSION_REVOKED`; with an `Authorization` header as well → 400;
 * 3. otherwise the platform's authenticator: an access token or an API key in `Authorization` (or `X-API-Key`).
 */
export function realtimeAuthentication(deps: {
  authenticate: Authenticate;
  db: Kysely<Database>;
  clock: Clock;
  revoked: Pick<RevokedSessions, 'has'>;
  origins: ReadonlySet<string>;
}): onRequestHookHandler {
  return async (request, reply) => {
    const origin = request.headers.origin;
    if (origin !== undefined && !deps.origins.has(origin)) {
      throw new AppError(realtimeErrors.REALTIME_ORIGIN_NOT_ALLOWED);
    }
    const ticket = (request.query as Record<string, unknown> | undefined)?.ticket;
    if (ticket !== undefined) {
      reply.header('cache-control', 'no-store');
      if (typeof ticket !== 'string') {
        throw new AppError(coreErrors.BAD_REQUEST, { detail: 'Send one ticket.' });
      }
      if (request.headers.authorization !== undefined || request.headers['x-api-key'] !== undefined) {
        throw new AppError(realtimeErrors.REALTIME_AMBIGUOUS_CREDENTIAL);
      }
      const redeemed = await redeemTicket(deps, ticket);
      if (!redeemed) throw new AppError(realtimeErrors.INVALID_REALTIME_TICKET);
      if (deps.revoked.has(redeemed.principal.sessionId)) throw new AppError(authErrors.SESSION_REVOKED);
      if (redeemed.credentialExpiresAt <= deps.clock.now().getTime()) {
        throw new AppError(realtimeErrors.INVALID_REALTIME_TICKET);
      }
      request.principal = redeemed.principal;
      credentials.set(request, { principal: redeemed.principal, expiresAt: redeemed.credentialExpiresAt });
      return;
    }
    await deps.authenticate(request, reply);
    const principal = request.principal;
    if (!principal) throw new Error('the authenticator let a request through without a principal');
    credentials.set(
      request,
      principal.type === 'user'
        ? { principal, expiresAt: accessTokenExpiry(request) }
        : { principal, expiresAt: null, apiKey: { key: apiKeyOf(request), ip: request.ip } },
    );
  };
}
