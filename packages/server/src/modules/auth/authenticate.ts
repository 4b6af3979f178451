import { API_KEY_PREFIX, apiKeyErrors, authErrors, coreErrors } from '@plinth/shared';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../../core/errors.ts';
import type { AuthDeps } from './deps.ts';

/** A signed-in person, authenticated by an access token. */
export interface UserPrincipal {
  type: 'user';
  userId: string;
  /** The session the access token belongs to (its `sid` claim). */
  sessionId: string;
}

/** A program, authenticated by an API key: it acts in the key's organization with exactly the key's scopes. */
export interface ApiKeyPrincipal {
  type: 'apikey';
  keyId: string;
  orgId: string;
  scopes: ReadonlySet<string>;
}

/** Who is making a request, once authenticated. */
export type Principal = UserPrincipal | ApiKeyPrincipal;

/**
 * Checks an API key (format, secret, expiry, revocation, IP allowlist) and returns who it is; throws a 401/403
 * AppError otherwise. Provided by the API-keys module; identity only knows the shape.
 */
export type ApiKeyVerifier = (key: string, ip: string) => Promise<ApiKeyPrincipal>;

/** An `onRequest` hook that authenticates the caller or refuses the request. */
export type Authenticate = (request: FastifyRequest, reply: FastifyReply) => Promise<void>;

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the authentication hooks; undefined on public routes. */
    principal: Principal | undefined;
  }
  interface FastifyInstance {
    /**
     * For routes that need a signed-in person: 401 problem+json otherwise, 403 for an API key. Register it as the
     * route's `onRequest` hook, so that authentication is decided before the body is parsed and validated (an
     * anonymous caller learns nothing about a route's schema, and pays for no parsing). Organization routes do
     * not use it: they declare a permission instead (see the rbac module), which accepts API keys too.
     */
    authenticate: Authenticate;
  }
}

const unauthenticated = (detail: string) =>
  new AppError(coreErrors.UNAUTHENTICATED, { detail, headers: { 'www-authenticate': 'Bearer' } });

// Every 401 must say how to authenticate (RFC 9110 §11.6.1); a token that was sent but refused is
// `invalid_token` (RFC 6750 §3.1).
const invalidToken = { 'www-authenticate': 'Bearer error="invalid_token"' };

/** The credential a request carries: an access token or an API key, from whichever header it came in. */
type Credential = { kind: 'token'; token: string } | { kind: 'apikey'; key: string };

function credentialOf(request: FastifyRequest): Credential {
  const header = request.headers.authorization;
  const apiKeyHeader = request.headers['x-api-key'];
  if (apiKeyHeader !== undefined) {
    if (header !== undefined || typeof apiKeyHeader !== 'string') {
      throw new AppError(coreErrors.BAD_REQUEST, { detail: 'Send exactly one credential.' });
    }
    return { kind: 'apikey', key: apiKeyHeader };
  }
  if (!header) throw unauthenticated('Send an access token or API key as `Authorization: Bearer <token>`.');
  const [scheme, token, ...rest] = header.split(' ');
  if (scheme?.toLowerCase() !== 'bearer' || !token || rest.length > 0) {
    throw unauthenticated('The Authorization header must be `Bearer <token>`.');
  }
  return token.startsWith(API_KEY_PREFIX) ? { kind: 'apikey', key: token } : { kind: 'token', token };
}

/**
 * The two authentication hooks: `user` accepts only access tokens (account and session endpoints), `any` also
 * accepts API keys (organization endpoints). An access token is verified for signature, algorithm, type,
 * issuer, audience and expiry (see tokens.ts), then its session is checked against the in-memory revocation
 * set — no database read. Authenticated responses are marked `Cache-Control: no-store`.
 */
export function createAuthenticators(
  deps: Pick<AuthDeps, 'tokens' | 'revoked' | 'clock'>,
  verifyApiKey: ApiKeyVerifier | undefined,
): { user: Authenticate; any: Authenticate } {
  const authenticate =
    (allowApiKeys: boolean): Authenticate =>
    async (request, reply) => {
      reply.header('cache-control', 'no-store');
      const credential = credentialOf(request);
      if (credential.kind === 'apikey') {
        if (!allowApiKeys || !verifyApiKey) throw new AppError(apiKeyErrors.API_KEY_NOT_ALLOWED);
        request.principal = await verifyApiKey(credential.key, request.ip);
        return;
      }
      const claims = await deps.tokens
        .verifyAccessToken(credential.token, deps.clock.now())
        .catch((error: unknown) => {
          throw new AppError(authErrors.INVALID_TOKEN, { headers: invalidToken, cause: error });
        });
      if (deps.revoked.has(claims.sessionId))
        throw new AppError(authErrors.SESSION_REVOKED, { headers: invalidToken });
      request.principal = { type: 'user', userId: claims.userId, sessionId: claims.sessionId };
    };
  return { user: authenticate(false), any: authenticate(true) };
}

/**
 * Refuses, before anything else happens, a request that carries an API key in its URL: URLs end up in access
 * logs, proxies and browser history, so such a key must be considered leaked (and is not used).
 */
export async function refuseApiKeyInUrl(request: FastifyRequest): Promise<void> {
  const query = request.url.indexOf('?');
  if (query >= 0 && containsApiKey(request.url.slice(query + 1)))
    throw new AppError(apiKeyErrors.API_KEY_IN_URL);
}

/** How many layers of percent-encoding are peeled off a query string looking for a key. */
const MAX_DECODINGS = 3;

/** Whether a raw query string holds something shaped like a key, however it is percent-encoded. */
function containsApiKey(queryString: string): boolean {
  let text = queryString;
  for (let i = 0; i <= MAX_DECODINGS; i++) {
    if (text.toLowerCase().includes(API_KEY_PREFIX)) return true;
    let decoded: string;
    try {
      decoded = decodeURIComponent(text.replaceAll('+', ' '));
    } catch {
      // Malformed escapes: decode what can be decoded, so `%zz&k=%70lk_…` does not hide the key.
      decoded = text.replace(/%[0-9a-f]{2}/gi, (encoded) =>
        String.fromCharCode(Number.parseInt(encoded.slice(1), 16)),
      );
    }
    if (decoded === text) return false;
    text = decoded;
  }
  return false;
}

/** The principal of an authenticated route (set by its authentication hook). */
export function principalOf(request: FastifyRequest): Principal {
  if (!request.principal) throw unauthenticated('Authentication is required.');
  return request.principal;
}

/** The signed-in person of a route that `app.authenticate` guards. */
export function userOf(request: FastifyRequest): UserPrincipal {
  const principal = principalOf(request);
  if (principal.type !== 'user') throw new AppError(apiKeyErrors.API_KEY_NOT_ALLOWED);
  return principal;
}
