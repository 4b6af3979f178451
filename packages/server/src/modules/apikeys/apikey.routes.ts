import { ApiKey, ApiKeyWithSecret, CreateApiKeyBody, Page, RotateApiKeyBody } from '@plinth/shared';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { idParam } from '../../core/ids.ts';
import { listQuerySchema } from '../../core/pagination.ts';
import { jsonResponse, problemResponses } from '../../core/responses.ts';
import { auditContextOf } from '../audit/record.ts';
import { accessOf, OrgParams } from '../rbac/index.ts';
import * as apiKeys from './apikey.service.ts';

const KeyParams = OrgParams.extend({ keyId: idParam('Not an API key id.') });
const keysRoute = { tags: ['API keys'] };

/** An organization's API keys: `/api/v1/orgs/{orgId}/apikeys`. */
export const apiKeyRoutes: FastifyPluginAsyncZod<{ deps: apiKeys.ApiKeyDeps }> = async (app, { deps }) => {
  app.post(
    '/orgs/:orgId/apikeys',
    {
      config: { permission: 'apikeys:create' },
      schema: {
        ...keysRoute,
        summary: 'Create an API key',
        description:
          'Scopes must be permissions the caller holds. The response holds the full key: the only time it is shown.',
        operationId: 'createApiKey',
        params: OrgParams,
        body: CreateApiKeyBody,
        response: {
          201: jsonResponse(ApiKeyWithSecret, 'The new key, with its secret.'),
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request, reply) =>
      reply
        .status(201)
        .send(await apiKeys.createApiKey(deps, accessOf(request), request.body, auditContextOf(request))),
  );

  app.get(
    '/orgs/:orgId/apikeys',
    {
      config: { permission: 'apikeys:read' },
      schema: {
        ...keysRoute,
        summary: 'List API keys',
        description: 'Every key, revoked and expired ones included; never their secrets.',
        operationId: 'listApiKeys',
        params: OrgParams,
        querystring: listQuerySchema(apiKeys.apiKeysList),
        response: {
          200: jsonResponse(Page(ApiKey), 'One page of keys.'),
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request) => apiKeys.listApiKeys(deps, accessOf(request), request.query),
  );

  app.get(
    '/orgs/:orgId/apikeys/:keyId',
    {
      config: { permission: 'apikeys:read' },
      schema: {
        ...keysRoute,
        summary: 'Get an API key',
        operationId: 'getApiKey',
        params: KeyParams,
        response: {
          200: jsonResponse(ApiKey, 'The key, without its secret.'),
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request) => apiKeys.getApiKey(deps, accessOf(request), request.params.keyId),
  );

  app.post(
    '/orgs/:orgId/apikeys/:keyId/rotate',
    {
      config: { permission: 'apikeys:rotate' },
      schema: {
        ...keysRoute,
        summary: 'Rotate an API key',
        description:
          'Issues a new secret; the old one keeps working for the grace period (24 hours unless configured or given), then stops.',
        operationId: 'rotateApiKey',
        params: KeyParams,
        body: RotateApiKeyBody,
        response: {
          200: jsonResponse(ApiKeyWithSecret, 'The key, with its new secret.'),
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request) =>
      apiKeys.rotateApiKey(
        deps,
        accessOf(request),
        request.params.keyId,
        request.body.gracePeriodSeconds,
        auditContextOf(request),
      ),
  );

  app.delete(
    '/orgs/:orgId/apikeys/:keyId',
    {
      config: { permission: 'apikeys:revoke' },
      schema: {
        ...keysRoute,
        summary: 'Revoke an API key',
        description: 'The key stops working at once, on every replica.',
        operationId: 'revokeApiKey',
        params: KeyParams,
        response: {
          204: z.undefined().meta({ description: 'Done.' }),
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request, reply) => {
      await apiKeys.revokeApiKey(deps, accessOf(request), request.params.keyId, auditContextOf(request));
      return reply.status(204).send(undefined);
    },
  );
};
