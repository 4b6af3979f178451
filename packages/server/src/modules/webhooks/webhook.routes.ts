import {
  CreateWebhookBody,
  Page,
  RotateWebhookSecretBody,
  UpdateWebhookBody,
  WebhookDelivery,
  WebhookDeliveryDetail,
  WebhookEndpoint,
  WebhookEndpointWithSecret,
} from '@plinth/shared';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { idParam } from '../../core/ids.ts';
import { listQuerySchema } from '../../core/pagination.ts';
import { jsonResponse, problemResponses } from '../../core/responses.ts';
import { auditContextOf } from '../audit/record.ts';
import { accessOf, OrgParams } from '../rbac/index.ts';
import type { WebhookDeps } from './deps.ts';
import * as webhooks from './webhook.service.ts';

const WebhookParams = OrgParams.extend({ webhookId: idParam('Not a webhook id.') });
const DeliveryParams = WebhookParams.extend({ deliveryId: idParam('Not a delivery id.') });
const route = { tags: ['Webhooks'] };
const permission = { permission: 'webhooks:manage' };

/** An organization's webhook endpoints and their delivery logs: `/api/v1/orgs/{orgId}/webhooks`. */
export const webhookRoutes: FastifyPluginAsyncZod<{ deps: WebhookDeps }> = async (app, { deps }) => {
  app.post(
    '/orgs/:orgId/webhooks',
    {
      config: permission,
      schema: {
        ...route,
        summary: 'Register a webhook endpoint',
        description:
          'The URL must be https (http outside production) and reach a public address. The response holds the signing secret: the only time it is shown.',
        operationId: 'createWebhook',
        params: OrgParams,
        body: CreateWebhookBody,
        response: {
          201: jsonResponse(WebhookEndpointWithSecret, 'The new endpoint, with its signing secret.'),
          ...problemResponses(400, 401, 403, 404, 409),
        },
      },
    },
    async (request, reply) =>
      reply
        .status(201)
        .send(await webhooks.createWebhook(deps, accessOf(request), request.body, auditContextOf(request))),
  );

  app.get(
    '/orgs/:orgId/webhooks',
    {
      config: permission,
      schema: {
        ...route,
        summary: 'List webhook endpoints',
        operationId: 'listWebhooks',
        params: OrgParams,
        querystring: listQuerySchema(webhooks.webhooksList),
        response: {
          200: jsonResponse(Page(WebhookEndpoint), 'One page of endpoints, never their secrets.'),
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request) => webhooks.listWebhooks(deps, accessOf(request), request.query),
  );

  app.get(
    '/orgs/:orgId/webhooks/:webhookId',
    {
      config: permission,
      schema: {
        ...route,
        summary: 'Get a webhook endpoint',
        operationId: 'getWebhook',
        params: WebhookParams,
        response: {
          200: jsonResponse(WebhookEndpoint, 'The endpoint, without its secret.'),
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request) => webhooks.getWebhook(deps, accessOf(request), request.params.webhookId),
  );

  app.patch(
    '/orgs/:orgId/webhooks/:webhookId',
    {
      config: permission,
      schema: {
        ...route,
        summary: 'Change a webhook endpoint',
        description:
          'A new URL is checked like a new endpoint. `active: true` turns an endpoint that was turned off on again.',
        operationId: 'updateWebhook',
        params: WebhookParams,
        body: UpdateWebhookBody,
        response: {
          200: jsonResponse(WebhookEndpoint, 'The endpoint as changed.'),
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request) =>
      webhooks.updateWebhook(
        deps,
        accessOf(request),
        request.params.webhookId,
        request.body,
        auditContextOf(request),
      ),
  );

  app.delete(
    '/orgs/:orgId/webhooks/:webhookId',
    {
      config: permission,
      schema: {
        ...route,
        summary: 'Delete a webhook endpoint',
        description: 'With its delivery log; attempts still pending are not made.',
        operationId: 'deleteWebhook',
        params: WebhookParams,
        response: {
          204: z.undefined().meta({ description: 'Done.' }),
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request, reply) => {
      await webhooks.deleteWebhook(
        deps,
        accessOf(request),
        request.params.webhookId,
        auditContextOf(request),
      );
      return reply.status(204).send(undefined);
    },
  );

  app.post(
    '/orgs/:orgId/webhooks/:webhookId/rotate-secret',
    {
      config: permission,
      schema: {
        ...route,
        summary: "Rotate a webhook endpoint's signing secret",
        description:
          'Issues a new secret. During the grace period (24 hours unless configured or given) deliveries carry two signatures, by the new and the old secret.',
        operationId: 'rotateWebhookSecret',
        params: WebhookParams,
        body: RotateWebhookSecretBody,
        response: {
          200: jsonResponse(WebhookEndpointWithSecret, 'The endpoint, with its new secret.'),
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request) =>
      webhooks.rotateWebhookSecret(
        deps,
        accessOf(request),
        request.params.webhookId,
        request.body.gracePeriodSeconds,
        auditContextOf(request),
      ),
  );

  app.post(
    '/orgs/:orgId/webhooks/:webhookId/ping',
    {
      config: permission,
      schema: {
        ...route,
        summary: 'Send a test event',
        description: 'Queues a `webhook.ping` delivery to the endpoint; follow it in the delivery log.',
        operationId: 'pingWebhook',
        params: WebhookParams,
        response: {
          202: jsonResponse(WebhookDelivery, 'The queued delivery.'),
          ...problemResponses(400, 401, 403, 404, 409),
        },
      },
    },
    async (request, reply) =>
      reply
        .status(202)
        .send(
          await webhooks.pingWebhook(
            deps,
            accessOf(request),
            request.params.webhookId,
            auditContextOf(request),
          ),
        ),
  );

  app.get(
    '/orgs/:orgId/webhooks/:webhookId/deliveries',
    {
      config: permission,
      schema: {
        ...route,
        summary: "List a webhook endpoint's deliveries",
        description: 'Newest first by default, each with the outcome of its last attempt.',
        operationId: 'listWebhookDeliveries',
        params: WebhookParams,
        querystring: listQuerySchema(webhooks.deliveriesList),
        response: {
          200: jsonResponse(Page(WebhookDelivery), 'One page of deliveries.'),
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request) =>
      webhooks.listDeliveries(deps, accessOf(request), request.params.webhookId, request.query),
  );

  app.get(
    '/orgs/:orgId/webhooks/:webhookId/deliveries/:deliveryId',
    {
      config: permission,
      schema: {
        ...route,
        summary: 'Get a delivery with every attempt',
        operationId: 'getWebhookDelivery',
        params: DeliveryParams,
        response: {
          200: jsonResponse(WebhookDeliveryDetail, 'The delivery, its body and its attempts.'),
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request) =>
      webhooks.getDelivery(deps, accessOf(request), request.params.webhookId, request.params.deliveryId),
  );

  app.post(
    '/orgs/:orgId/webhooks/:webhookId/deliveries/:deliveryId/redeliver',
    {
      config: permission,
      schema: {
        ...route,
        summary: 'Redeliver a message',
        description:
          'Sends the delivery’s message again as a new delivery: the same `webhook-id` and body, a fresh timestamp and signature, the full retry schedule.',
        operationId: 'redeliverWebhook',
        params: DeliveryParams,
        response: {
          202: jsonResponse(WebhookDelivery, 'The new, queued delivery.'),
          ...problemResponses(400, 401, 403, 404, 409),
        },
      },
    },
    async (request, reply) =>
      reply
        .status(202)
        .send(
          await webhooks.redeliver(
            deps,
            accessOf(request),
            request.params.webhookId,
            request.params.deliveryId,
            auditContextOf(request),
          ),
        ),
  );
};
