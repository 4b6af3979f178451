import { z } from 'zod';
import { defineErrors } from './errors.ts';

/**
 * Request and response schemas of webhooks (`/api/v1/orgs/{orgId}/webhooks`) and the domain event catalogue
 * (`/api/v1/event-types`). Deliveries follow the Standard Webhooks specification: see docs/api.md.
 */

/** Every signing secret starts with this (Standard Webhooks); the rest is base64 of 32 random bytes. */
export const WEBHOOK_SECRET_PREFIX = 'whsec_';
/** Subscribes an endpoint to every event type, including ones added later. */
export const ALL_EVENT_TYPES = '*';
/** The event a `POST …/webhooks/{id}/ping` sends; it is never fanned out to other endpoints. */
export const PING_EVENT_TYPE = 'webhook.ping';
/** How many endpoints one organization may register. */
export const MAX_WEBHOOKS_PER_ORG = 50;
/** The longest accepted endpoint URL, in characters. */
export const MAX_WEBHOOK_URL_LENGTH = 2048;

/** A domain event type: `resource.verb`, lower case (`member.added`, `apikey.revoked`). */
export const EventTypeName = z
  .string()
  .max(80)
  .regex(/^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$/, { error: 'An event type looks like `resource.verb`.' });

const EventSubscription = z
  .union([z.literal(ALL_EVENT_TYPES), EventTypeName])
  .meta({ description: 'An event type from `GET /api/v1/event-types`, or `*` for every type.' });

const WebhookUrl = z.string().min(1).max(MAX_WEBHOOK_URL_LENGTH).meta({
  description:
    'Where deliveries are POSTed: https (http only outside production), resolving to public addresses only.',
  example: 'https://hooks.example.com/plinth',
});

const Description = z.string().trim().max(500);

export const WebhookEndpoint = z
  .object({
    id: z.uuid(),
    url: z.string(),
    description: z.string(),
    events: z.array(z.string()),
    active: z.boolean(),
    disabledReason: z.enum(['manual', 'gone', 'failing']).nullable().meta({
      description:
        'Why an inactive endpoint is inactive: turned off by a member, answered 410 Gone, or failed for too long.',
    }),
    disabledAt: z.string().nullable(),
    previousSecretExpiresAt: z.string().nullable().meta({
      description: 'Until when the secret replaced by the last rotation still signs deliveries too.',
    }),
    createdBy: z.uuid().nullable(),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .meta({ id: 'WebhookEndpoint' });
export type WebhookEndpoint = z.infer<typeof WebhookEndpoint>;

/** An endpoint as created or re-keyed: the only response that ever contains its signing secret. */
export const WebhookEndpointWithSecret = WebhookEndpoint.extend({
  secret: z
    .string()
    .meta({ description: 'The signing secret (`whsec_…`). Shown only now: store it safely.' }),
}).meta({ id: 'WebhookEndpointWithSecret' });
export type WebhookEndpointWithSecret = z.infer<typeof WebhookEndpointWithSecret>;

export const CreateWebhookBody = z.strictObject({
  url: WebhookUrl,
  events: z.array(EventSubscription).min(1).max(100),
  description: Description.optional(),
  active: z.boolean().optional().meta({ description: 'Deliver to it (default true).' }),
});

export const UpdateWebhookBody = z.strictObject({
  url: WebhookUrl.optional(),
  events: z.array(EventSubscription).min(1).max(100).optional(),
  description: Description.optional(),
  active: z.boolean().optional().meta({ description: 'Turning an endpoint on again clears why it was off.' }),
});

export const RotateWebhookSecretBody = z
  .strictObject({
    gracePeriodSeconds: z
      .number()
      .int()
      .min(0)
      .max(7 * 86_400)
      .optional()
      .meta({
        description:
          'How long the old secret keeps signing deliveries alongside the new one; the installation default when omitted.',
      }),
  })
  .default({});

const DeliveryStatus = z.enum(['pending', 'succeeded', 'failed']);

export const WebhookDelivery = z
  .object({
    id: z.uuid(),
    webhookId: z.uuid(),
    messageId: z.string().meta({ description: 'The `webhook-id` header: the same for every attempt.' }),
    eventType: z.string(),
    eventId: z.uuid().nullable().meta({ description: 'The domain event delivered; null for a ping.' }),
    status: DeliveryStatus,
    attempt: z.number().int().meta({ description: 'Attempts made so far.' }),
    nextAttemptAt: z.string().nullable(),
    statusCode: z.number().int().nullable().meta({ description: "The last attempt's HTTP status." }),
    latencyMs: z.number().int().nullable().meta({ description: "The last attempt's duration." }),
    responseBody: z
      .string()
      .nullable()
      .meta({ description: "The start of the last attempt's response body (at most 2048 characters)." }),
    error: z.string().nullable().meta({ description: 'Why the last attempt failed, if it did.' }),
    redeliveryOf: z.uuid().nullable(),
    createdAt: z.string(),
    finishedAt: z.string().nullable(),
  })
  .meta({ id: 'WebhookDelivery' });
export type WebhookDelivery = z.infer<typeof WebhookDelivery>;

export const WebhookDeliveryAttempt = z
  .object({
    attempt: z.number().int(),
    attemptedAt: z.string(),
    statusCode: z.number().int().nullable(),
    latencyMs: z.number().int(),
    responseBody: z.string().nullable(),
    error: z.string().nullable(),
  })
  .meta({ id: 'WebhookDeliveryAttempt' });
export type WebhookDeliveryAttempt = z.infer<typeof WebhookDeliveryAttempt>;

export const WebhookDeliveryDetail = WebhookDelivery.extend({
  payload: z.string().meta({ description: 'The exact body that is signed and sent.' }),
  attempts: z.array(WebhookDeliveryAttempt),
}).meta({ id: 'WebhookDeliveryDetail' });
export type WebhookDeliveryDetail = z.infer<typeof WebhookDeliveryDetail>;

export const EventType = z.object({ type: z.string(), description: z.string() }).meta({ id: 'EventType' });
export type EventType = z.infer<typeof EventType>;

/** The body of every delivery (Standard Webhooks payload structure, plus the event's id and organization). */
export const WebhookPayload = z
  .object({
    id: z.string(),
    type: z.string(),
    timestamp: z.string(),
    orgId: z.uuid(),
    data: z.record(z.string(), z.unknown()),
  })
  .meta({ id: 'WebhookPayload' });
export type WebhookPayload = z.infer<typeof WebhookPayload>;

export const webhookErrors = defineErrors({
  WEBHOOK_NOT_FOUND: { status: 404, title: 'No such webhook endpoint.' },
  WEBHOOK_DELIVERY_NOT_FOUND: { status: 404, title: 'No such webhook delivery.' },
  WEBHOOK_URL_NOT_ALLOWED: {
    status: 400,
    title: 'The webhook URL is not allowed: it must be https and reach a public address.',
  },
  UNKNOWN_EVENT_TYPE: { status: 400, title: 'No such event type.' },
  WEBHOOK_INACTIVE: { status: 409, title: 'The webhook endpoint is inactive; turn it on first.' },
  WEBHOOK_LIMIT_REACHED: {
    status: 409,
    title: `An organization may register at most ${MAX_WEBHOOKS_PER_ORG} webhook endpoints.`,
  },
});
