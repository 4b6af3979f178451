import { OrgUsage } from '@plinth/shared';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { jsonResponse, problemResponses } from '../../core/responses.ts';
import { accessOf, OrgParams } from '../rbac/index.ts';
import type { RateLimitDeps } from './deps.ts';
import { orgUsage } from './usage.service.ts';

/** `GET /api/v1/orgs/{orgId}/usage`: the organization's rate limits and current consumption. */
export const usageRoutes: FastifyPluginAsyncZod<{ deps: RateLimitDeps }> = async (app, { deps }) => {
  app.get(
    '/orgs/:orgId/usage',
    {
      config: { permission: 'usage:read' },
      schema: {
        tags: ['Rate limits'],
        summary: 'Rate-limit usage',
        description:
          "The organization's plan, and for its own bucket, each active API key's and the caller's: the limit, what the current window has used, and when it resets.",
        operationId: 'getOrgUsage',
        params: OrgParams,
        response: {
          200: jsonResponse(OrgUsage, 'Current consumption per bucket.'),
          ...problemResponses(400, 401, 403, 404, 429),
        },
      },
    },
    async (request) => orgUsage(deps, accessOf(request)),
  );
};
