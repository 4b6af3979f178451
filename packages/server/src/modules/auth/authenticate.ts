import { authErrors, coreErrors } from '@plinth/shared';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../../core/errors.ts';
import type { AuthDeps } from './deps.ts';

/** Who is making a request, once authenticated. */
export interface Principal {
  type: 'user';
  userId: string;
  /** The session the access token belongs to (its `sid` claim). */
  sessionId: string;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by `app.authenticate`; undefined on public routes. */
    principal: Principal | undefined;
  }
  interface FastifyInstance {
    /**
     * For routes that need a signed-in caller: 401 problem+json otherwise. Register it as the route's `onRequest`
     * hook, so that authentication is decided before the body is parsed and validated (an anonymous caller learns
     * nothing about a route's schema, and pays for no parsing).
     */
    authenticate: (request: FastifyRequest, reply: FastifyReply) => Promise<void>;
  }
}

const unauthenticated = (detail: string) =>
  new AppError(coreErrors.UNAUTHENTICATED, { detail, headers: { 'www-authenticate': 'Bearer' } });

// Every 401 must say how to authenticate (RFC 9110 §11.6.1); a token that was sent but refused is
// `invalid_token` (RFC 6750 §3.1).
const invalidToken = { 'www-authenticate': 'Bearer error="invalid_token"' };

/**
 * Verifies `Authorization: Bearer <access token>`: signature, algorithm, type, issuer, audience and expiry (see
 * tokens.ts), then that its session has not been revoked — a lookup in the in-memory revocation set, not a
 * database read. Authenticated responses are marked `Cache-Control: no-store`.
 */
export function authenticator(deps: Pick<AuthDeps, 'tokens' | 'revoked' | 'clock'>) {
  return async function authenticate(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    reply.header('cache-control', 'no-store');
    const header = request.headers.authorization;
    if (!header) throw unauthenticated('Send an access token as `Authorization: Bearer <token>`.');
    const [scheme, token, ...rest] = header.split(' ');
    if (scheme?.toLowerCase() !== 'bearer' || !token || rest.length > 0) {
      throw unauthenticated('The Authorization header must be `Bearer <token>`.');
    }
    const claims = await deps.tokens.verifyAccessToken(token, deps.clock.now()).catch((error: unknown) => {
      throw new AppError(authErrors.INVALID_TOKEN, { headers: invalidToken, cause: error });
    });
    if (deps.revoked.has(claims.sessionId))
      throw new AppError(authErrors.SESSION_REVOKED, { headers: invalidToken });
    request.principal = { type: 'user', userId: claims.userId, sessionId: claims.sessionId };
  };
}

/** The principal of an authenticated route (set by `app.authenticate`, its onRequest hook). */
export function principalOf(request: FastifyRequest): Principal {
  if (!request.principal) throw unauthenticated('Authentication is required.');
  return request.principal;
}
