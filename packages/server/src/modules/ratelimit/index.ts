import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { RateLimitDeps } from './deps.ts';
import { rateLimitPermissions } from './permissions.ts';
import { usageRoutes } from './usage.routes.ts';

export type { RateLimitDeps } from './deps.ts';
export { rateLimitPlugin } from './enforce.ts';
export { createRateLimiter, type RateLimiter } from './limiter.ts';
export { DEFAULT_RATE_LIMITS, loadRateLimits, type RateLimitTable } from './limits.ts';
export { createCallerLookups } from './lookups.ts';

/** The OpenAPI tags of this module's routes. */
export const rateLimitTags = [
  { name: 'Rate limits', description: "Where an organization stands against its plan's rate limits." },
];

async function usage(app: FastifyInstance, { deps }: { deps: RateLimitDeps }): Promise<void> {
  app.accessRegistry.addPermissions(rateLimitPermissions);
  await app.register(usageRoutes, { deps, prefix: '/api/v1' });
}

/** The usage endpoint and its permission; the enforcement itself is `rateLimitPlugin`, registered before every route. */
export const rateLimitUsageModule = fp(usage, {
  name: 'plinth-ratelimit-usage',
  dependencies: ['plinth-rbac'],
});
