/**
 * Route classes: how strictly a route is treated by the rate limits and the request limits. A route names its
 * class in its options (`config: { routeClass: 'auth' }`); a route that names none is `standard`, except the
 * operational endpoints (health, metrics), which are `exempt`.
 *
 * - `standard`: everything an application does all day (reads and writes of its data).
 * - `auth`: sign-in, sign-up, second factor, password change and reset, email verification, invitation
 *   acceptance — the endpoints that take a password, a code or a one-time token, which guess-and-check attacks
 *   aim at; limited per IP much more strictly, signed in or not, and given a small body limit.
 * - `expensive`: work that costs far more than a request (exports, reports), limited more strictly still.
 * - `exempt`: health probes and metrics scrapes, which load balancers and Prometheus send on a fixed schedule.
 */
export const ROUTE_CLASSES = ['standard', 'auth', 'expensive', 'exempt'] as const;
export type RouteClass = (typeof ROUTE_CLASSES)[number];

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The route's class for rate limits and request limits; `standard` when omitted. */
    routeClass?: RouteClass;
  }
}

const EXEMPT_PATHS = /^\/(health(\/|$)|metrics$)/;

/** The class of a route, from its options and, for the operational endpoints, its path. */
export function routeClassOf(route: { url: string; config?: { routeClass?: RouteClass } }): RouteClass {
  return route.config?.routeClass ?? (EXEMPT_PATHS.test(route.url) ? 'exempt' : 'standard');
}
