import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { purgeAfter, type RetentionPolicy } from '../../core/retention.ts';
import { defineDeliveryJobs, webhookRelayTarget } from './delivery.service.ts';
import type { WebhookDeps } from './deps.ts';
import { webhookPermissions } from './permissions.ts';
import { webhookPersonalData } from './personal-data.ts';
import { webhookRoutes } from './webhook.routes.ts';

export {
  DELIVER_JOB,
  MAX_DELIVERY_ATTEMPTS,
  NOTIFY_DISABLED_JOB,
  nextAttemptDelaySeconds,
  RETRY_SCHEDULE_SECONDS,
} from './delivery.service.ts';
export type { WebhookDeps } from './deps.ts';
export { type AttemptOutcome, createWebhookSender, type WebhookSender } from './sender.ts';
export { newWebhookSecret, signedHeaders, signMessage } from './signing.ts';
export {
  type AddressPolicy,
  AddressRefusedError,
  addressPolicy,
  addressRefusal,
  checkWebhookUrl,
} from './ssrf.ts';

/** The org-owned tables of this module (declared with `registerTenantTable` when it registers). */
export const WEBHOOK_TENANT_TABLES = [
  'webhook_endpoints',
  'webhook_deliveries',
  'webhook_delivery_attempts',
] as const;

/** The OpenAPI tags of this module's routes. */
export const webhookTags = [
  {
    name: 'Webhooks',
    description:
      'Signed HTTP callbacks (Standard Webhooks) of an organization’s domain events, with a delivery log.',
  },
];

/** Deliveries (and, by cascade, their attempts) are kept this long after they were created. */
export const webhookDeliveryRetention: RetentionPolicy = {
  name: 'webhook_deliveries',
  description: 'webhook deliveries and their attempts (the delivery log)',
  days: 30,
  apply: purgeAfter({ table: 'webhook_deliveries', after: ['created_at'] }),
};

async function webhooksPlugin(app: FastifyInstance, { deps }: { deps: WebhookDeps }): Promise<void> {
  for (const table of WEBHOOK_TENANT_TABLES) deps.database.registerTenantTable(table);
  deps.registry.addPermissions(webhookPermissions);
  app.retention.add(webhookDeliveryRetention);
  app.personalData.add(webhookPersonalData);
  defineDeliveryJobs(deps);
  deps.events.addRelayTarget(webhookRelayTarget(deps));
  app.addHook('onClose', async () => deps.sender.close());
  await app.register(webhookRoutes, { deps, prefix: '/api/v1' });
}

/**
 * Webhooks: endpoint management and the delivery log (`/api/v1/orgs/{orgId}/webhooks`), the relay target that
 * turns domain events into deliveries, and the delivery jobs (signing, SSRF-checked HTTP, retries, auto-disable).
 */
export const webhooksModule = fp(webhooksPlugin, { name: 'plinth-webhooks', dependencies: ['plinth-rbac'] });
