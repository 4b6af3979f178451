import { isDeepStrictEqual } from 'node:util';
import type { FastifyRequest } from 'fastify';
import type { Transaction } from 'kysely';
import type { Clock } from '../../core/clock.ts';
import { newId } from '../../core/ids.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import type { Database } from '../../db/schema.ts';
import type { Principal } from '../auth/index.ts';
import * as repo from './audit.repo.ts';

/*
 * The writing side of the audit log: what every module uses to record events in its own transactions. A leaf —
 * it imports nothing from other modules but types — so that the modules the audit module itself builds on (auth,
 * rbac) can record events without an import cycle.
 */

/**
 * Which chain an event belongs to. An organization's events form the chain named by its id; events that belong
 * to no organization form one chain per account (sign-ins, password, two-factor, consent, export, erasure:
 * {@link accountChain}) and one for the installation ({@link PLATFORM_CHAIN}: sign-in failures for addresses with
 * no account, operators' actions). One chain per account rather than one for all keeps sign-ins from queueing on
 * a single chain head, and puts a person's own history in one place for an export.
 */
export const PLATFORM_CHAIN = 'platform';

/** The chain of one account's own events. */
export function accountChain(userId: string): string {
  return `user:${userId}`;
}

/** The organization a chain belongs to, or null for an account's or the installation's chain. */
export function orgOfChain(chain: string): string | null {
  return chain === PLATFORM_CHAIN || chain.startsWith('user:') ? null : chain;
}

/** Who acted, as an audit event records it. */
export interface AuditActorRef {
  type: 'user' | 'apikey' | 'system';
  /** The user's or key's id, or for `system` the component acting (`cli`, `scheduler`, …). */
  id: string;
  /** For a user: the session they acted in. */
  via?: string | undefined;
}

/** Where an event comes from: the chain (an organization's id, or see {@link accountChain}), the actor, the request. */
export interface AuditContext {
  orgId: string;
  actor: AuditActorRef;
  requestId: string | null;
  ip: string | null;
  userAgent: string | null;
  /** Stamps the event's `at`. */
  clock: Clock;
}

/** One field's values before and after a change. */
export interface FieldChange {
  before: unknown;
  after: unknown;
}

/** The field-level diff of an update: only fields that changed, secrets redacted. */
export type FieldChanges = Record<string, FieldChange>;

/** What happened, as the caller of {@link recordAuditEvent} describes it. */
export interface AuditEventInput {
  /** `resource.verb`, e.g. `apikey.created`. */
  action: string;
  target?: { type: string; id: string } | undefined;
  /** `success` when omitted. */
  outcome?: 'success' | 'failure' | 'denied' | undefined;
  /** Build with {@link fieldChanges}, which redacts secrets; an empty diff is stored as null. */
  changes?: FieldChanges | null | undefined;
}

/** The placeholder a redacted value is replaced with. */
export const REDACTED = '[redacted]';

/**
 * Field names that are redacted whatever the caller lists: a diff must never carry a password hash, a token, a
 * secret or a key, even when its author forgot to say so.
 */
const SECRET_FIELD = /password|secret|token|hash|totp|recovery|private|^key$/i;

/** An actor for a principal: a person with their session, or an API key. */
export function actorOf(principal: Principal): AuditActorRef {
  return principal.type === 'user'
    ? { type: 'user', id: principal.userId, via: principal.sessionId }
    : { type: 'apikey', id: principal.keyId };
}

/**
 * The audit context of an organization route's request: its organization (from the permission check, or
 * `orgId`), the authenticated principal, the request id, the client address (`request.ip`, so `TRUST_PROXY`
 * decides whether `X-Forwarded-For` counts) and user agent.
 */
export function auditContextOf(request: FastifyRequest, orgId?: string): AuditContext {
  const org = orgId ?? request.orgAccess?.orgId;
  const principal = request.orgAccess?.principal ?? request.principal;
  if (org === undefined || principal === undefined) {
    throw new Error(`${request.routeOptions.url}: an audit context needs an organization and a principal`);
  }
  return requestAuditContext(request, org, actorOf(principal));
}

/** The audit context of a request by `actor`, on `chain` (an organization's id, or see {@link accountChain}). */
export function requestAuditContext(
  request: FastifyRequest,
  chain: string,
  actor: AuditActorRef,
): AuditContext {
  const userAgent = request.headers['user-agent'];
  return {
    orgId: chain,
    actor,
    requestId: request.id,
    ip: request.ip ?? null,
    // A user agent is attacker-chosen; it is stored as text and bounded so one request cannot bloat the log.
    userAgent: typeof userAgent === 'string' ? userAgent.slice(0, 512) : null,
    clock: request.server.clock,
  };
}

/** The audit context of work the platform does itself (a CLI command, a scheduled task): no request, no address. */
export function systemAuditContext(orgId: string, component: string, clock: Clock): AuditContext {
  return {
    orgId,
    actor: { type: 'system', id: component },
    requestId: null,
    ip: null,
    userAgent: null,
    clock,
  };
}

/**
 * The fields that differ between `before` and `after` (null for "did not exist": a creation or a deletion),
 * compared deeply. A field named in `redact`, or whose name looks secret (password, secret, token, hash, TOTP,
 * recovery, private, key), appears as changed with both values `[redacted]`, so the log says that a secret
 * changed without holding it.
 */
export function fieldChanges(
  before: Record<string, unknown> | null,
  after: Record<string, unknown> | null,
  options: { redact?: readonly string[] } = {},
): FieldChanges {
  const redact = new Set(options.redact ?? []);
  const fields = new Set([...Object.keys(before ?? {}), ...Object.keys(after ?? {})]);
  const changes: FieldChanges = {};
  for (const field of [...fields].sort()) {
    const was = before?.[field] ?? null;
    const is = after?.[field] ?? null;
    if (isDeepStrictEqual(was, is)) continue;
    const secret = redact.has(field) || SECRET_FIELD.test(field);
    changes[field] = secret
      ? { before: was === null ? null : REDACTED, after: is === null ? null : REDACTED }
      : { before: was, after: is };
  }
  return changes;
}

/**
 * Records an event on its chain, in the caller's transaction: `db` must be the `withTenant` transaction that
 * makes the change, so that the change never commits without its event and an event never outlives a change
 * that rolled back. The event is written unchained and takes no lock; the sequencer (sequencer.ts) gives it its
 * `seq` and hashes once the change has committed, and every reader of the chain has it sequenced first.
 */
export async function recordAuditEvent(
  db: Transaction<Database>,
  context: AuditContext,
  event: AuditEventInput,
): Promise<void> {
  await repo.insertPending(db, {
    id: newId(),
    org_id: context.orgId,
    at: context.clock.now().toISOString(),
    actor_type: context.actor.type,
    actor_id: context.actor.id,
    actor_via: context.actor.via ?? null,
    action: event.action,
    target_type: event.target?.type ?? null,
    target_id: event.target?.id ?? null,
    request_id: context.requestId,
    ip: context.ip,
    user_agent: context.userAgent,
    outcome: event.outcome ?? 'success',
    changes: event.changes && Object.keys(event.changes).length > 0 ? JSON.stringify(event.changes) : null,
  });
}

/**
 * Runs `work` in a transaction on `context`'s chain and appends the events it hands to `record`, so that the
 * change and its events commit or roll back together. For changes to records that belong to no organization
 * (accounts, sessions); an organization's module opens its own `withTenant` transaction and calls
 * {@link recordAuditEvent}.
 */
export function withAuditedTransaction<T>(
  database: Pick<DatabaseHandle, 'withTenant'>,
  context: AuditContext,
  work: (db: Transaction<Database>, record: (event: AuditEventInput) => Promise<void>) => Promise<T>,
): Promise<T> {
  return database.withTenant(context.orgId, (db) =>
    work(db, (event) => recordAuditEvent(db, context, event)),
  );
}
