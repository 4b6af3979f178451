import { createHash } from 'node:crypto';
import { rateLimitErrors } from '@plinth/shared';
import type {
  FastifyInstance,
  FastifyReply,
  FastifyRequest,
  onRequestHookHandler,
  onResponseHookHandler,
  preHandlerHookHandler,
  RouteOptions,
} from 'fastify';
import fp from 'fastify-plugin';
import { LRUCache } from 'lru-cache';
import { AppError } from '../../core/errors.ts';
import { clientKey } from '../../core/ip-ranges.ts';
import { problemResponse } from '../../core/responses.ts';
import { type RouteClass, routeClassOf } from '../../core/route-class.ts';
import type { RateLimitDeps } from './deps.ts';
import type { BucketCheck, BucketName, BucketState } from './limiter.ts';
import { planLimit } from './limits.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * On a sign-in route: the body field that names the account (`email`). Failed attempts from one IP count
     * the distinct accounts they aim at, which credential stuffing — many accounts, one source — runs out of.
     */
    rateLimitAccountField?: string;
  }
  interface FastifyRequest {
    /** How the rate limiter counted this request; undefined for exempt routes or with limits off. */
    rateLimit: RequestRateLimit | undefined;
  }
}

interface RequestRateLimit {
  /** Counted in the per-IP anonymous bucket already (it carried no credential). */
  anonymous: boolean;
  /** Counted in the caller's buckets (it got past authentication and authorization). */
  callerCounted?: boolean;
  states: BucketState[];
  refusedBy?: BucketName;
}

/** Failed sign-ins that count toward the distinct-accounts-per-IP limit: wrong credentials, a locked account. */
const FAILED_SIGN_IN = new Set([401, 423]);
/** Answers of the authentication and authorization hooks: a bad credential, a missing permission, no such org. */
const REFUSED_ACCESS = new Set([401, 403, 404]);
/** The most addresses a replica remembers as having spent their budget on refused credentials. */
const MAX_REFUSED_ADDRESSES = 50_000;

/** The 429: which bucket refused, and when to retry (`Retry-After`, whole seconds, at least 1). */
function tooManyRequests(bucket: BucketName, retryAfterMs: number, what: string): AppError {
  const seconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
  return new AppError(rateLimitErrors.RATE_LIMITED, {
    detail: `${what.replace('$bucket', bucket)}; retry in ${seconds} s.`,
    headers: { 'retry-after': String(seconds) },
    extensions: { bucket },
  });
}

function hasCredential(request: FastifyRequest): boolean {
  return request.headers.authorization !== undefined || request.headers['x-api-key'] !== undefined;
}

function classOf(request: FastifyRequest): RouteClass {
  return request.routeOptions.config?.routeClass ?? 'standard';
}

/**
 * The `RateLimit-*` headers (draft-ietf-httpapi-ratelimit-headers): `Limit`, `Remaining` and `Reset` of the
 * bucket closest to exhaustion, and `Policy` listing every bucket the request was counted in.
 */
function setHeaders(reply: FastifyReply, states: readonly BucketState[]): void {
  let tightest: BucketState | undefined;
  for (const state of states) {
    if (!tightest || state.remaining / state.limit < tightest.remaining / tightest.limit) tightest = state;
  }
  if (!tightest) return;
  reply.header('ratelimit-limit', String(tightest.limit));
  reply.header('ratelimit-remaining', String(tightest.remaining));
  reply.header('ratelimit-reset', String(Math.ceil(tightest.resetMs / 1000)));
  reply.header(
    'ratelimit-policy',
    states.map((s) => `${s.limit};w=${s.windowSeconds};name="${s.bucket}"`).join(', '),
  );
}

/** Every limited route can answer 429, so its OpenAPI operation says so. */
function documentRefusal(route: RouteOptions): void {
  const response = route.schema?.response as Record<string, unknown> | undefined;
  if (!route.schema || !response || response[429] !== undefined) return;
  route.schema = {
    ...route.schema,
    response: {
      ...response,
      429: problemResponse(
        'A rate limit is spent: retry after `Retry-After` seconds; `bucket` names the limit.',
      ),
    },
  };
}

async function rateLimit(app: FastifyInstance, { deps }: { deps: RateLimitDeps }): Promise<void> {
  const { table, limiter, lookups } = deps;
  app.decorateRequest('rateLimit', undefined);

  /** Counts the request in `checks`; sets the headers; throws the 429 when a bucket refuses. */
  const enforce = async (request: FastifyRequest, reply: FastifyReply, checks: BucketCheck[]) => {
    const decision = await limiter.consume(checks);
    const counted = request.rateLimit ?? { anonymous: false, states: [] };
    counted.states.push(...decision.states);
    request.rateLimit = counted;
    setHeaders(reply, counted.states);
    if (decision.allowed) return;
    counted.refusedBy = decision.refusedBy;
    throw tooManyRequests(decision.refusedBy, decision.retryAfterMs, 'The $bucket rate limit is spent');
  };

  const ipCheck = (request: FastifyRequest, bucket: 'anonymous' | 'auth' | 'authAccounts'): BucketCheck => ({
    bucket,
    key: clientKey(request.ip),
    spec: table[bucket],
  });
  const expensiveCheck = (key: string): BucketCheck => ({ bucket: 'expensive', key, spec: table.expensive });

  // A request whose credential (or whose access to the organization) is refused never reaches the caller's
  // buckets; it is counted against its address instead, after the answer. Once an address has spent its
  // anonymous budget that way, this replica refuses its requests with a credential up front until the window
  // ends — a guessed API key or a scan of organization ids gets 429, not an unlimited stream of 401s and 404s.
  const refusedAddresses = new LRUCache<string, true>({ max: MAX_REFUSED_ADDRESSES, ttl: 60_000 });
  const countRefusedAccess = async (request: FastifyRequest) => {
    const check = ipCheck(request, 'anonymous');
    const decision = await limiter.consume([check]);
    if (!decision.allowed) refusedAddresses.set(check.key, true, { ttl: decision.retryAfterMs });
  };

  // Before authentication: what can be decided from the address alone. A request without a credential is
  // anonymous and counted per IP now, before any other work is done for it; `auth` routes are counted per IP
  // whoever calls them.
  const beforeAuthentication: onRequestHookHandler = async (request, reply) => {
    const routeClass = classOf(request);
    if (routeClass === 'exempt') return;
    const anonymous = !hasCredential(request);
    request.rateLimit = { anonymous, states: [] };
    if (!anonymous) {
      const key = clientKey(request.ip);
      if (refusedAddresses.has(key)) {
        request.rateLimit.refusedBy = 'anonymous';
        throw tooManyRequests(
          'anonymous',
          refusedAddresses.getRemainingTTL(key),
          'Too many requests from this address were refused',
        );
      }
    }
    const checks: BucketCheck[] = [];
    if (anonymous) checks.push(ipCheck(request, 'anonymous'));
    if (routeClass === 'auth') checks.push(ipCheck(request, 'auth'));
    if (anonymous && routeClass === 'expensive') checks.push(expensiveCheck(`ip:${clientKey(request.ip)}`));
    if (checks.length > 0) await enforce(request, reply, checks);
  };

  // After authentication (the routes' own onRequest hooks), before the body is read: the caller's buckets.
  const afterAuthentication = async (request: FastifyRequest, reply: FastifyReply) => {
    const counted = request.rateLimit;
    if (!counted || counted.anonymous) return;
    counted.callerCounted = true;
    const routeClass = classOf(request);
    const principal = request.principal;
    const checks: BucketCheck[] = [];
    if (!principal) {
      // It sent a credential to a route that reads none (sign-in, the docs): anonymous after all.
      checks.push(ipCheck(request, 'anonymous'));
      if (routeClass === 'expensive') checks.push(expensiveCheck(`ip:${clientKey(request.ip)}`));
    } else if (principal.type === 'user') {
      if (!(await lookups.isOperator(principal.userId))) {
        checks.push({ bucket: 'user', key: principal.userId, spec: table.user });
      }
      const orgId = request.orgAccess?.orgId;
      const plan = orgId === undefined ? undefined : await lookups.planOf(orgId);
      if (orgId !== undefined && plan !== undefined) {
        checks.push({ bucket: 'org', key: orgId, spec: planLimit(table.org, plan) });
      }
      if (routeClass === 'expensive') checks.push(expensiveCheck(`user:${principal.userId}`));
    } else {
      const plan = (await lookups.planOf(principal.orgId)) ?? 'default';
      checks.push(
        { bucket: 'apikey', key: principal.keyId, spec: planLimit(table.apikey, plan) },
        { bucket: 'org', key: principal.orgId, spec: planLimit(table.org, plan) },
      );
      if (routeClass === 'expensive') checks.push(expensiveCheck(`apikey:${principal.keyId}`));
    }
    if (checks.length > 0) await enforce(request, reply, checks);
  };

  app.addHook('onRoute', (route: RouteOptions) => {
    route.config = { ...route.config, routeClass: routeClassOf(route) };
    if (route.config.routeClass !== 'exempt') documentRefusal(route);
    const field = route.config.rateLimitAccountField;
    if (field !== undefined) addAccountSpreadLimit(route, field);
  });
  app.addHook('onRequest', beforeAuthentication);
  app.addHook('preParsing', async (request, reply, payload) => {
    await afterAuthentication(request, reply);
    return payload;
  });
  app.addHook('onResponse', async (request, reply) => {
    const counted = request.rateLimit;
    if (!counted) return;
    if (!counted.anonymous && !counted.callerCounted && REFUSED_ACCESS.has(reply.statusCode)) {
      await countRefusedAccess(request);
    }
    const limited = reply.statusCode === 429 && counted.refusedBy !== undefined;
    deps.decisions.inc({
      route_class: classOf(request),
      outcome: limited ? 'limited' : 'allowed',
      bucket: limited ? (counted.refusedBy ?? '') : '',
    });
  });

  /**
   * Credential stuffing tries many accounts from one address: once `authAccounts.points` different accounts
   * have failed to sign in from an IP within the window, further attempts from it are refused before the
   * password is checked. Only failures count, so an office behind one address signing in each morning does not.
   */
  function addAccountSpreadLimit(route: RouteOptions, field: string): void {
    const accountOf = (request: FastifyRequest) => {
      const value = (request.body as Record<string, unknown> | null | undefined)?.[field];
      // Hashed: the limiter's store (Redis) never holds an address.
      return typeof value === 'string'
        ? createHash('sha256').update(value.normalize('NFKC').trim().toLowerCase()).digest('base64url')
        : undefined;
    };
    const refuseSpentAddress: preHandlerHookHandler = async (request, reply) => {
      const state = await limiter.peek(ipCheck(request, 'authAccounts'));
      if (state.remaining > 0) return;
      const counted = request.rateLimit ?? { anonymous: true, states: [] };
      counted.states.push(state);
      counted.refusedBy = 'authAccounts';
      request.rateLimit = counted;
      setHeaders(reply, counted.states);
      throw tooManyRequests(
        'authAccounts',
        state.resetMs,
        'Too many accounts failed to sign in from this address',
      );
    };
    const countFailure: onResponseHookHandler = async (request, reply) => {
      const account = accountOf(request);
      if (account === undefined || !FAILED_SIGN_IN.has(reply.statusCode)) return;
      await limiter.consumeDistinct(ipCheck(request, 'authAccounts'), account);
    };
    route.preHandler = [...[route.preHandler ?? []].flat(), refuseSpentAddress];
    route.onResponse = [...[route.onResponse ?? []].flat(), countFailure];
  }
}

/**
 * Rate limiting of every request (see docs/architecture.md, "Rate limits"): per IP before authentication, per
 * person, key and organization after it, with the `RateLimit-*` headers on every limited response and a 429
 * problem naming the refusing `bucket`. Register it before any route it should see.
 */
export const rateLimitPlugin = fp(rateLimit, { name: 'plinth-ratelimit', dependencies: ['plinth-errors'] });
