import { randomInt } from 'node:crypto';
import { ALL_EVENT_TYPES, PING_EVENT_TYPE, type WebhookPayload } from '@plinth/shared';
import type { Transaction } from 'kysely';
import { z } from 'zod';
import { decryptSecret, deriveKey, encryptSecret } from '../../core/crypto.ts';
import { newId } from '../../core/ids.ts';
import type { Database } from '../../db/schema.ts';
import { recordAuditEvent, systemAuditContext } from '../audit/record.ts';
import type { DomainEvent } from '../events/index.ts';
import { mailTemplates } from '../mail/index.ts';
import type { WebhookDeps } from './deps.ts';
import type { AttemptOutcome } from './sender.ts';
import { signedHeaders } from './signing.ts';
import * as repo from './webhook.repo.ts';

/**
 * Delivering messages to endpoints: the relay target that turns a domain event into one delivery per subscribed
 * active endpoint, the job that makes one HTTP attempt of a delivery and schedules the next, and the
 * automatic turning off of endpoints that answer 410 or keep failing (with a mail to the organization's admins).
 */

/** The job that makes one attempt of one delivery. */
export const DELIVER_JOB = 'webhooks.deliver';
const DeliverPayload = z.strictObject({
  orgId: z.uuid(),
  deliveryId: z.uuid(),
  attempt: z.number().int().min(1),
});
/** The job that mails the admins about an endpoint turned off automatically. */
export const NOTIFY_DISABLED_JOB = 'webhooks.notify_disabled';
const NotifyPayload = z.strictObject({
  orgId: z.uuid(),
  endpointId: z.uuid(),
  reason: z.enum(['gone', 'failing']),
});

/**
 * The Standard Webhooks retry schedule, in seconds: the delay before the 2nd, 3rd, … attempt (5 s, 5 min,
 * 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h), so a delivery makes at most 10 attempts over about 3 days and 4 hours.
 */
export const RETRY_SCHEDULE_SECONDS = [5, 300, 1800, 7200, 18_000, 36_000, 50_400, 72_000, 86_400] as const;
export const MAX_DELIVERY_ATTEMPTS = RETRY_SCHEDULE_SECONDS.length + 1;
/** Each scheduled delay is spread by up to this fraction either way, so failures together do not retry together. */
const JITTER = 0.1;
/** A `Retry-After` can postpone an attempt, but never by more than this (seconds). */
const MAX_RETRY_AFTER_SECONDS = 86_400;

/** The key signing secrets are encrypted with: derived from ENCRYPTION_KEY for this purpose only. */
export function secretKey(deps: Pick<WebhookDeps, 'encryptionKey'>): Buffer {
  return deriveKey(deps.encryptionKey, 'plinth webhook signing secrets');
}

/** A signing secret as stored: encrypted, bound to its endpoint (a value copied to another row does not decrypt). */
export function sealSecret(
  deps: Pick<WebhookDeps, 'encryptionKey'>,
  endpointId: string,
  secret: string,
): string {
  return encryptSecret(secretKey(deps), secret, `webhook:${endpointId}`);
}

function openSecret(deps: Pick<WebhookDeps, 'encryptionKey'>, endpointId: string, sealed: string): string {
  return decryptSecret(secretKey(deps), sealed, `webhook:${endpointId}`);
}

/**
 * The delay before attempt `attempt + 1` after attempt `attempt` failed, in seconds: the schedule's, jittered,
 * or the receiver's `Retry-After` when that is later (capped at 24 hours). Undefined after the last attempt.
 */
export function nextAttemptDelaySeconds(attempt: number, retryAfter: number | undefined): number | undefined {
  const scheduled = RETRY_SCHEDULE_SECONDS[attempt - 1];
  if (scheduled === undefined) return undefined;
  const jitter = 1 - JITTER + (randomInt(0, 1_000_001) / 1_000_000) * 2 * JITTER;
  const delay = scheduled * jitter;
  return retryAfter === undefined ? delay : Math.max(delay, Math.min(retryAfter, MAX_RETRY_AFTER_SECONDS));
}

/** Whether an endpoint subscribed to `type` receives it. */
export function subscribes(events: readonly string[], type: string): boolean {
  return events.includes(ALL_EVENT_TYPES) || events.includes(type);
}

/** The body of a delivery: the Standard Webhooks payload shape, plus the event's id and organization. */
export function payloadOf(event: {
  id: string;
  type: string;
  orgId: string;
  occurredAt: string;
  data: unknown;
}) {
  const payload: WebhookPayload = {
    id: event.id,
    type: event.type,
    timestamp: event.occurredAt,
    orgId: event.orgId,
    data: event.data as Record<string, unknown>,
  };
  return JSON.stringify(payload);
}

/**
 * Creates a pending delivery and enqueues its first attempt, in `db` (the caller's transaction): the delivery
 * exists, and is attempted, exactly when what asked for it commits.
 */
export async function createDelivery(
  deps: WebhookDeps,
  db: Transaction<Database>,
  input: {
    orgId: string;
    endpointId: string;
    messageId: string;
    eventType: string;
    eventId: string | null;
    payload: string;
    redeliveryOf?: string | null;
  },
): Promise<repo.DeliveryRow> {
  const now = deps.clock.now().toISOString();
  const row: repo.DeliveryRow = {
    id: newId(),
    org_id: input.orgId,
    endpoint_id: input.endpointId,
    message_id: input.messageId,
    event_type: input.eventType,
    event_id: input.eventId,
    payload: input.payload,
    status: 'pending',
    attempts: 0,
    next_attempt_at: now,
    last_status_code: null,
    last_latency_ms: null,
    last_response_body: null,
    last_error: null,
    redelivery_of: input.redeliveryOf ?? null,
    created_at: now,
    updated_at: now,
    finished_at: null,
  };
  await repo.insertDelivery(db, row);
  await enqueueAttempt(deps, db, row.org_id, row.id, 1);
  return row;
}

function enqueueAttempt(
  deps: WebhookDeps,
  db: Transaction<Database>,
  orgId: string,
  deliveryId: string,
  attempt: number,
  runAt?: Date,
) {
  return deps.jobs.enqueue(
    DELIVER_JOB,
    { orgId, deliveryId, attempt },
    { db, idempotencyKey: `${DELIVER_JOB}:${deliveryId}:${attempt}`, ...(runAt ? { runAt } : {}) },
  );
}

/** The outbox's relay target: one delivery per active endpoint of the organization subscribed to the event. */
export function webhookRelayTarget(deps: WebhookDeps) {
  return {
    name: 'webhooks',
    async relay(db: Transaction<Database>, event: DomainEvent): Promise<void> {
      const endpoints = await repo.activeEndpoints(db);
      const payload = payloadOf(event);
      for (const endpoint of endpoints) {
        // An endpoint receives the events that happened while it existed, not one registered just before relay.
        if (endpoint.created_at > event.occurredAt) continue;
        if (!subscribes(JSON.parse(endpoint.events) as string[], event.type)) continue;
        await createDelivery(deps, db, {
          orgId: event.orgId,
          endpointId: endpoint.id,
          messageId: event.id,
          eventType: event.type,
          eventId: event.id,
          payload,
        });
      }
    },
  };
}

/** The body of a ping: what a receiver can check its signature verification against. */
export function pingPayload(orgId: string, endpointId: string, messageId: string, at: string): string {
  return payloadOf({
    id: messageId,
    type: PING_EVENT_TYPE,
    orgId,
    occurredAt: at,
    data: { webhookId: endpointId, message: 'Plinth test event' },
  });
}

/** Defines the delivery and notification jobs on the queue; at start-up. */
export function defineDeliveryJobs(deps: WebhookDeps): void {
  deps.jobs.define(DELIVER_JOB, {
    payload: DeliverPayload,
    // Its own queue: a burst of deliveries, or a receiver that takes its 15 s, never holds up mail or exports.
    queue: 'webhooks',
    // Retries of the job itself are for failures to record (the database); failed HTTP attempts are scheduled
    // as new jobs on the Standard Webhooks schedule by `attempt`.
    maxAttempts: 5,
    backoffSeconds: 5,
    handler: (payload) => attempt(deps, payload),
  });
  deps.jobs.define(NOTIFY_DISABLED_JOB, {
    payload: NotifyPayload,
    maxAttempts: 5,
    backoffSeconds: 60,
    handler: (payload) => notifyDisabled(deps, payload),
  });
}

/** One attempt of a delivery: sign, POST, record, and schedule the next attempt or finish. */
async function attempt(
  deps: WebhookDeps,
  job: { orgId: string; deliveryId: string; attempt: number },
): Promise<void> {
  const { database, clock } = deps;
  const loaded = await database.withTenant(job.orgId, async (db) => {
    const delivery = await repo.findDeliveryById(db, job.deliveryId);
    // Gone with its endpoint, finished, or this attempt was already made (a job run twice): nothing to do.
    if (delivery?.status !== 'pending' || delivery.attempts !== job.attempt - 1) return undefined;
    const endpoint = await repo.findEndpoint(db, delivery.endpoint_id);
    if (!endpoint) return undefined;
    if (endpoint.active !== 1) {
      await repo.dropPending(db, endpoint.id, clock.now().toISOString(), delivery.id);
      return undefined;
    }
    return { delivery, endpoint };
  });
  if (!loaded) return;
  const { delivery, endpoint } = loaded;

  const startedAt = clock.now();
  const secrets = [openSecret(deps, endpoint.id, endpoint.secret)];
  if (
    endpoint.previous_secret !== null &&
    endpoint.previous_secret_expires_at !== null &&
    endpoint.previous_secret_expires_at > startedAt.toISOString()
  ) {
    secrets.push(openSecret(deps, endpoint.id, endpoint.previous_secret));
  }
  const timestamp = Math.floor(startedAt.getTime() / 1000);
  const headers = signedHeaders(secrets, delivery.message_id, timestamp, delivery.payload);
  const outcome = await deps.sender.send(endpoint.url, headers, delivery.payload, startedAt);
  await record(deps, job, delivery, endpoint, startedAt, outcome);
}

async function record(
  deps: WebhookDeps,
  job: { orgId: string; deliveryId: string; attempt: number },
  delivery: repo.DeliveryRow,
  endpoint: repo.EndpointRow,
  startedAt: Date,
  outcome: AttemptOutcome,
): Promise<void> {
  const { database, clock, log } = deps;
  const succeeded = outcome.statusCode !== null && outcome.statusCode >= 200 && outcome.statusCode < 300;
  const gone = outcome.statusCode === 410;
  const error =
    outcome.error ??
    (succeeded
      ? null
      : outcome.statusCode !== null && outcome.statusCode >= 300 && outcome.statusCode < 400
        ? `Answered ${outcome.statusCode}: redirects are not followed.`
        : `Answered ${outcome.statusCode}.`);
  await database.withTenant(job.orgId, async (db) => {
    const now = clock.now();
    const at = now.toISOString();
    const delay =
      succeeded || gone ? undefined : nextAttemptDelaySeconds(job.attempt, outcome.retryAfterSeconds);
    const next = delay === undefined ? undefined : new Date(now.getTime() + delay * 1000);
    const recorded = await repo.recordAttempt(db, delivery.id, job.attempt, {
      status: succeeded ? 'succeeded' : next ? 'pending' : 'failed',
      next_attempt_at: next ? next.toISOString() : null,
      last_status_code: outcome.statusCode,
      last_latency_ms: outcome.latencyMs,
      last_response_body: outcome.responseBody,
      last_error: error,
      updated_at: at,
      finished_at: next ? null : at,
    });
    if (!recorded) return;
    await repo.insertAttempt(db, {
      id: newId(),
      org_id: job.orgId,
      delivery_id: delivery.id,
      attempt: job.attempt,
      attempted_at: startedAt.toISOString(),
      status_code: outcome.statusCode,
      latency_ms: outcome.latencyMs,
      response_body: outcome.responseBody,
      error,
    });
    if (next) await enqueueAttempt(deps, db, job.orgId, delivery.id, job.attempt + 1, next);

    if (succeeded) {
      if (endpoint.failing_since !== null) {
        await db
          .updateTable('webhook_endpoints')
          .set({ failing_since: null })
          .where('id', '=', endpoint.id)
          .execute();
      }
      return;
    }
    const current = await repo.findEndpoint(db, endpoint.id);
    if (current?.active !== 1) return;
    let reason: 'gone' | 'failing' | undefined;
    if (gone) {
      reason = 'gone';
    } else {
      const failingSince = current.failing_since ?? startedAt.toISOString();
      if (current.failing_since === null) {
        await db
          .updateTable('webhook_endpoints')
          .set({ failing_since: failingSince })
          .where('id', '=', endpoint.id)
          .execute();
      }
      const days = deps.config.autoDisableDays;
      if (days > 0 && new Date(failingSince).getTime() <= now.getTime() - days * 86_400_000)
        reason = 'failing';
    }
    if (!reason || !(await repo.disableEndpoint(db, endpoint.id, reason, at))) return;
    await repo.dropPending(db, endpoint.id, at);
    await recordAuditEvent(db, systemAuditContext(job.orgId, 'webhooks', clock), {
      action: 'webhook.disabled',
      target: { type: 'webhook', id: endpoint.id },
      changes: {
        active: { before: true, after: false },
        disabledReason: { before: null, after: reason },
      },
    });
    await deps.jobs.enqueue(
      NOTIFY_DISABLED_JOB,
      { orgId: job.orgId, endpointId: endpoint.id, reason },
      { db, idempotencyKey: `${NOTIFY_DISABLED_JOB}:${endpoint.id}:${at}` },
    );
    log.warn({ orgId: job.orgId, webhookId: endpoint.id, reason }, 'webhook endpoint turned off');
  });
}

/** Mails every owner and admin of the organization that an endpoint was turned off, and why. */
async function notifyDisabled(
  deps: WebhookDeps,
  job: { orgId: string; endpointId: string; reason: 'gone' | 'failing' },
): Promise<void> {
  const found = await deps.database.withTenant(job.orgId, async (db) => {
    const endpoint = await repo.findEndpoint(db, job.endpointId);
    if (!endpoint) return undefined;
    const org = await db
      .selectFrom('organizations')
      .select('name')
      .where('id', '=', job.orgId)
      .executeTakeFirst();
    const admins = await db
      .selectFrom('memberships')
      .innerJoin('users', 'users.id', 'memberships.user_id')
      .select(['users.email', 'users.name'])
      .where('memberships.role', 'in', ['owner', 'admin'])
      .where('users.disabled_at', 'is', null)
      .orderBy('users.email')
      .execute();
    return { endpoint, orgName: org?.name ?? '', admins };
  });
  if (!found) return;
  const url = new URL(found.endpoint.url);
  const reason =
    job.reason === 'gone'
      ? 'it answered 410 Gone, which asks senders to stop'
      : `every delivery attempt to it failed for ${deps.config.autoDisableDays} ${deps.config.autoDisableDays === 1 ? 'day' : 'days'}`;
  for (const admin of found.admins) {
    await deps.mailer.send({
      to: admin.email,
      ...mailTemplates.webhookDisabled({
        name: admin.name,
        orgName: found.orgName,
        endpoint: `${url.protocol}//${url.host}`,
        endpointId: found.endpoint.id,
        reason,
      }),
    });
  }
}
