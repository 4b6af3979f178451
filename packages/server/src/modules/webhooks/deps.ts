import type { FastifyBaseLogger } from 'fastify';
import type { WebhooksConfig } from '../../config.ts';
import type { Clock } from '../../core/clock.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import type { DomainEvents } from '../events/index.ts';
import type { JobQueue } from '../jobs/index.ts';
import type { Mailer } from '../mail/index.ts';
import type { AccessRegistry } from '../rbac/index.ts';
import type { WebhookSender } from './sender.ts';
import type { AddressPolicy } from './ssrf.ts';

/** What the webhooks module needs, built once in the composition root. */
export interface WebhookDeps {
  database: DatabaseHandle;
  clock: Clock;
  log: FastifyBaseLogger;
  registry: AccessRegistry;
  jobs: JobQueue;
  /** The outbox whose events are fanned out to endpoints (this module is one of its relay targets). */
  events: DomainEvents;
  /** Mails the organization's admins when an endpoint is turned off automatically. */
  mailer: Mailer;
  config: WebhooksConfig;
  /** The installation's key; signing secrets are encrypted at rest with a key derived from it. */
  encryptionKey: Buffer;
  /** `WEBHOOK_ALLOWED_HOSTS`, parsed. */
  policy: AddressPolicy;
  /** The HTTP client of deliveries. */
  sender: WebhookSender;
}
