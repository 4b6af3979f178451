import {
  ALL_EVENT_TYPES,
  MAX_WEBHOOKS_PER_ORG,
  PING_EVENT_TYPE,
  type WebhookDelivery,
  type WebhookDeliveryDetail,
  type WebhookEndpoint,
  webhookErrors,
} from '@plinth/shared';
import type { Transaction } from 'kysely';
import { z } from 'zod';
import { AppError } from '../../core/errors.ts';
import { newId } from '../../core/ids.ts';
import { type ListSpec, type NoFilters, paginate } from '../../core/pagination.ts';
import type { Database } from '../../db/schema.ts';
import { type AuditContext, fieldChanges, recordAuditEvent } from '../audit/record.ts';
import type { OrgAccess } from '../rbac/index.ts';
import { createDelivery, pingPayload, sealSecret } from './delivery.service.ts';
import type { WebhookDeps } from './deps.ts';
import { newWebhookSecret } from './signing.ts';
import { AddressRefusedError, checkWebhookUrl } from './ssrf.ts';
import * as repo from './webhook.repo.ts';

/**
 * Managing an organization's webhook endpoints: create (the secret is returned once), list, get, change,
 * delete, re-key with an overlap, ping, and the delivery log with manual redelivery. Every change writes its
 * audit event (`webhook.*`) in the same transaction; the signing secret is never in an event or a log line.
 */

function toEndpoint(row: repo.EndpointRow, now: Date): WebhookEndpoint {
  const previousLive =
    row.previous_secret !== null &&
    row.previous_secret_expires_at !== null &&
    row.previous_secret_expires_at > now.toISOString();
  return {
    id: row.id,
    url: row.url,
    description: row.description,
    events: JSON.parse(row.events) as string[],
    active: row.active === 1,
    disabledReason: row.disabled_reason,
    disabledAt: row.disabled_at,
    previousSecretExpiresAt: previousLive ? row.previous_secret_expires_at : null,
    createdBy: row.created_by,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

function toDelivery(row: repo.DeliveryRow): WebhookDelivery {
  return {
    id: row.id,
    webhookId: row.endpoint_id,
    messageId: row.message_id,
    eventType: row.event_type,
    eventId: row.event_id,
    status: row.status,
    attempt: row.attempts,
    nextAttemptAt: row.status === 'pending' ? row.next_attempt_at : null,
    statusCode: row.last_status_code,
    latencyMs: row.last_latency_ms,
    responseBody: row.last_response_body,
    error: row.last_error,
    redeliveryOf: row.redelivery_of,
    createdAt: row.created_at,
    finishedAt: row.finished_at,
  };
}

export const webhooksList: ListSpec<'createdAt' | 'url', NoFilters> = {
  sort: { createdAt: 'created_at', url: 'url' },
  defaultSort: '-createdAt',
};

const DeliveryStatusFilter = z.enum(['pending', 'succeeded', 'failed']);

export const deliveriesList: ListSpec<
  'createdAt',
  { status: typeof DeliveryStatusFilter; eventType: z.ZodString }
> = {
  sort: { createdAt: 'created_at' },
  defaultSort: '-createdAt',
  filters: { status: DeliveryStatusFilter, eventType: z.string().max(80) },
  filterColumns: { status: 'status', eventType: 'event_type' },
};

async function findEndpoint(db: Transaction<Database>, id: string): Promise<repo.EndpointRow> {
  const row = await repo.findEndpoint(db, id);
  if (!row) throw new AppError(webhookErrors.WEBHOOK_NOT_FOUND);
  return row;
}

/** Subscriptions as stored: deduplicated, sorted, every one a catalogued type or `*`. */
function checkEvents(deps: WebhookDeps, events: readonly string[]): string[] {
  const unique = [...new Set(events)].sort();
  const unknown = unique.filter((type) => type !== ALL_EVENT_TYPES && !deps.events.catalogue.has(type));
  if (unknown.length > 0) {
    throw new AppError(webhookErrors.UNKNOWN_EVENT_TYPE, {
      detail: `Unknown event types: ${unknown.join(', ')}. GET /api/v1/event-types lists them.`,
      errors: unknown.map((type) => ({
        path: `body.events.${events.indexOf(type)}`,
        message: 'No such event type.',
      })),
    });
  }
  return unique;
}

async function checkUrl(deps: WebhookDeps, url: string): Promise<string> {
  try {
    return await checkWebhookUrl(url, { policy: deps.policy, requireHttps: deps.config.requireHttps });
  } catch (error) {
    if (error instanceof AddressRefusedError) {
      throw new AppError(webhookErrors.WEBHOOK_URL_NOT_ALLOWED, {
        detail: error.message,
        errors: [{ path: 'body.url', message: error.message }],
      });
    }
    throw error;
  }
}

export async function listWebhooks(
  deps: WebhookDeps,
  access: OrgAccess,
  query: { limit: number; cursor?: string | undefined; sort: string },
): Promise<{ data: WebhookEndpoint[]; nextCursor: string | null }> {
  const page = await deps.database.withTenant(access.orgId, (db) =>
    paginate(db.selectFrom('webhook_endpoints').selectAll(), query, webhooksList),
  );
  const now = deps.clock.now();
  return { data: page.data.map((row) => toEndpoint(row, now)), nextCursor: page.nextCursor };
}

export async function getWebhook(deps: WebhookDeps, access: OrgAccess, id: string): Promise<WebhookEndpoint> {
  const row = await deps.database.withTenant(access.orgId, (db) => findEndpoint(db, id));
  return toEndpoint(row, deps.clock.now());
}

/**
 * Registers an endpoint. The URL must pass the SSRF check (ssrf.ts) and every subscription must be a catalogued
 * event type or `*`. Returns it with its signing secret, which is never shown again; the `webhook.created` event
 * records the settings, never the secret.
 */
export async function createWebhook(
  deps: WebhookDeps,
  access: OrgAccess,
  input: { url: string; events: string[]; description?: string | undefined; active?: boolean | undefined },
  audit: AuditContext,
): Promise<WebhookEndpoint & { secret: string }> {
  const events = checkEvents(deps, input.events);
  const url = await checkUrl(deps, input.url);
  const now = deps.clock.now();
  const id = newId();
  const secret = newWebhookSecret();
  const active = input.active ?? true;
  const row: repo.EndpointRow = {
    id,
    org_id: access.orgId,
    url,
    description: input.description ?? '',
    events: JSON.stringify(events),
    active: active ? 1 : 0,
    disabled_reason: active ? null : 'manual',
    disabled_at: active ? null : now.toISOString(),
    secret: sealSecret(deps, id, secret),
    previous_secret: null,
    previous_secret_expires_at: null,
    failing_since: null,
    created_by: access.principal.type === 'user' ? access.principal.userId : null,
    created_at: now.toISOString(),
    updated_at: now.toISOString(),
  };
  await deps.database.withTenant(access.orgId, async (db) => {
    if ((await repo.countEndpoints(db)) >= MAX_WEBHOOKS_PER_ORG) {
      throw new AppError(webhookErrors.WEBHOOK_LIMIT_REACHED);
    }
    await repo.insertEndpoint(db, row);
    await recordAuditEvent(db, audit, {
      action: 'webhook.created',
      target: { type: 'webhook', id },
      changes: fieldChanges(null, { url, events, description: row.description, active }),
    });
  });
  return { ...toEndpoint(row, now), secret };
}

/**
 * Changes an endpoint's URL (checked again), subscriptions, description or state. Turning it off records
 * `manual` as the reason; turning it on clears the reason and the failure streak. `webhook.updated` holds the
 * field-level diff.
 */
export async function updateWebhook(
  deps: WebhookDeps,
  access: OrgAccess,
  id: string,
  input: {
    url?: string | undefined;
    events?: string[] | undefined;
    description?: string | undefined;
    active?: boolean | undefined;
  },
  audit: AuditContext,
): Promise<WebhookEndpoint> {
  const events = input.events === undefined ? undefined : checkEvents(deps, input.events);
  const url = input.url === undefined ? undefined : await checkUrl(deps, input.url);
  const now = deps.clock.now();
  const at = now.toISOString();
  const row = await deps.database.withTenant(access.orgId, async (db) => {
    const current = await findEndpoint(db, id);
    const wasActive = current.active === 1;
    const changes = {
      ...(url === undefined ? {} : { url }),
      ...(events === undefined ? {} : { events: JSON.stringify(events) }),
      ...(input.description === undefined ? {} : { description: input.description }),
      ...(input.active === undefined || input.active === wasActive
        ? {}
        : input.active
          ? { active: 1, disabled_reason: null, disabled_at: null, failing_since: null }
          : { active: 0, disabled_reason: 'manual' as const, disabled_at: at }),
      updated_at: at,
    };
    const updated: repo.EndpointRow = { ...current, ...changes };
    const diff = fieldChanges(
      {
        url: current.url,
        events: JSON.parse(current.events),
        description: current.description,
        active: wasActive,
      },
      {
        url: updated.url,
        events: JSON.parse(updated.events),
        description: updated.description,
        active: updated.active === 1,
      },
    );
    if (Object.keys(diff).length === 0) return current;
    await repo.updateEndpoint(db, id, changes);
    if (wasActive && updated.active === 0) await repo.dropPending(db, id, at);
    await recordAuditEvent(db, audit, {
      action: 'webhook.updated',
      target: { type: 'webhook', id },
      changes: diff,
    });
    return updated;
  });
  return toEndpoint(row, now);
}

/** Deletes an endpoint with its delivery log; pending attempts find nothing and stop. */
export async function deleteWebhook(
  deps: WebhookDeps,
  access: OrgAccess,
  id: string,
  audit: AuditContext,
): Promise<void> {
  await deps.database.withTenant(access.orgId, async (db) => {
    const current = await findEndpoint(db, id);
    await repo.deleteEndpoint(db, id);
    await recordAuditEvent(db, audit, {
      action: 'webhook.deleted',
      target: { type: 'webhook', id },
      changes: fieldChanges({ url: current.url, events: JSON.parse(current.events) }, null),
    });
  });
}

/**
 * Gives an endpoint a new signing secret. For `gracePeriodSeconds` (the installation default when omitted) the
 * old one keeps signing too, so deliveries carry both signatures while the receiver is updated; a secret
 * replaced by an earlier rotation stops at once. Returns the endpoint with its new secret, shown only now.
 */
export async function rotateWebhookSecret(
  deps: WebhookDeps,
  access: OrgAccess,
  id: string,
  gracePeriodSeconds: number | undefined,
  audit: AuditContext,
): Promise<WebhookEndpoint & { secret: string }> {
  const now = deps.clock.now();
  const grace = gracePeriodSeconds ?? deps.config.rotationGraceSeconds;
  const secret = newWebhookSecret();
  const row = await deps.database.withTenant(access.orgId, async (db) => {
    const current = await findEndpoint(db, id);
    const changes = {
      secret: sealSecret(deps, id, secret),
      previous_secret: grace > 0 ? current.secret : null,
      previous_secret_expires_at: grace > 0 ? new Date(now.getTime() + grace * 1000).toISOString() : null,
      updated_at: now.toISOString(),
    };
    await repo.updateEndpoint(db, id, changes);
    await recordAuditEvent(db, audit, {
      action: 'webhook.secret_rotated',
      target: { type: 'webhook', id },
      changes: fieldChanges(
        { secret: current.secret, previousSecretExpiresAt: current.previous_secret_expires_at },
        { secret: changes.secret, previousSecretExpiresAt: changes.previous_secret_expires_at },
      ),
    });
    return { ...current, ...changes };
  });
  return { ...toEndpoint(row, now), secret };
}

/** Sends a `webhook.ping` to an active endpoint (a delivery like any other, with retries); returns it pending. */
export async function pingWebhook(
  deps: WebhookDeps,
  access: OrgAccess,
  id: string,
  audit: AuditContext,
): Promise<WebhookDelivery> {
  const row = await deps.database.withTenant(access.orgId, async (db) => {
    const endpoint = await findEndpoint(db, id);
    if (endpoint.active !== 1) throw new AppError(webhookErrors.WEBHOOK_INACTIVE);
    const messageId = newId();
    const delivery = await createDelivery(deps, db, {
      orgId: access.orgId,
      endpointId: id,
      messageId,
      eventType: PING_EVENT_TYPE,
      eventId: null,
      payload: pingPayload(access.orgId, id, messageId, deps.clock.now().toISOString()),
    });
    await recordAuditEvent(db, audit, {
      action: 'webhook.ping_sent',
      target: { type: 'webhook', id },
      changes: fieldChanges(null, { deliveryId: delivery.id }),
    });
    return delivery;
  });
  return toDelivery(row);
}

export async function listDeliveries(
  deps: WebhookDeps,
  access: OrgAccess,
  id: string,
  query: {
    limit: number;
    cursor?: string | undefined;
    sort: string;
    status?: 'pending' | 'succeeded' | 'failed' | undefined;
    eventType?: string | undefined;
  },
): Promise<{ data: WebhookDelivery[]; nextCursor: string | null }> {
  const page = await deps.database.withTenant(access.orgId, async (db) => {
    await findEndpoint(db, id);
    return paginate(
      db.selectFrom('webhook_deliveries').selectAll().where('endpoint_id', '=', id),
      query,
      deliveriesList,
    );
  });
  return { data: page.data.map(toDelivery), nextCursor: page.nextCursor };
}

export async function getDelivery(
  deps: WebhookDeps,
  access: OrgAccess,
  id: string,
  deliveryId: string,
): Promise<WebhookDeliveryDetail> {
  return deps.database.withTenant(access.orgId, async (db) => {
    await findEndpoint(db, id);
    const delivery = await repo.findDelivery(db, id, deliveryId);
    if (!delivery) throw new AppError(webhookErrors.WEBHOOK_DELIVERY_NOT_FOUND);
    const attempts = await repo.attemptsOf(db, deliveryId);
    return {
      ...toDelivery(delivery),
      payload: delivery.payload,
      attempts: attempts.map((a) => ({
        attempt: a.attempt,
        attemptedAt: a.attempted_at,
        statusCode: a.status_code,
        latencyMs: a.latency_ms,
        responseBody: a.response_body,
        error: a.error,
      })),
    };
  });
}

/**
 * Sends a delivery's message again, as a new delivery with the same `webhook-id` and body (so a receiver that
 * already handled it recognises it) and a fresh timestamp and signature, on the full retry schedule. The
 * endpoint must be active.
 */
export async function redeliver(
  deps: WebhookDeps,
  access: OrgAccess,
  id: string,
  deliveryId: string,
  audit: AuditContext,
): Promise<WebhookDelivery> {
  const row = await deps.database.withTenant(access.orgId, async (db) => {
    const endpoint = await findEndpoint(db, id);
    const original = await repo.findDelivery(db, id, deliveryId);
    if (!original) throw new AppError(webhookErrors.WEBHOOK_DELIVERY_NOT_FOUND);
    if (endpoint.active !== 1) throw new AppError(webhookErrors.WEBHOOK_INACTIVE);
    const delivery = await createDelivery(deps, db, {
      orgId: access.orgId,
      endpointId: id,
      messageId: original.message_id,
      eventType: original.event_type,
      eventId: original.event_id,
      payload: original.payload,
      redeliveryOf: original.id,
    });
    await recordAuditEvent(db, audit, {
      action: 'webhook.redelivery_requested',
      target: { type: 'webhook', id },
      changes: fieldChanges(null, { deliveryId: delivery.id, redeliveryOf: original.id }),
    });
    return delivery;
  });
  return toDelivery(row);
}
