import { isDeepStrictEqual } from 'node:util';
import { type AuditEvent, type AuditVerifyResult, auditErrors } from '@plinth/shared';
import type { FastifyRequest } from 'fastify';
import type { Transaction } from 'kysely';
import type { Clock } from '../../core/clock.ts';
import { AppError } from '../../core/errors.ts';
import { newId } from '../../core/ids.ts';
import { type ListSpec, type NoFilters, paginate } from '../../core/pagination.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import type { Database } from '../../db/schema.ts';
import type { Principal } from '../auth/index.ts';
import type { OrgAccess } from '../rbac/index.ts';
import { eventHash, GENESIS_HASH, personalDigest } from './audit.chain.ts';
import * as repo from './audit.repo.ts';

/** Who acted, as an audit event records it. */
export interface AuditActorRef {
  type: 'user' | 'apikey' | 'system';
  /** The user's or key's id, or for `system` the component acting (`cli`, `scheduler`, …). */
  id: string;
  /** For a user: the session they acted in. */
  via?: string | undefined;
}

/** Where an event comes from: the organization, the actor and the request, if any. */
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
  const userAgent = request.headers['user-agent'];
  return {
    orgId: org,
    actor: actorOf(principal),
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
 * Appends an event to its organization's chain, in the caller's transaction: `db` must be the `withTenant`
 * transaction that makes the change, so that the change never commits without its event and an event never
 * outlives a change that rolled back. Locks the chain head until that transaction ends (see repo.lockHead):
 * concurrent appends for one organization queue, and its chain never forks. Returns the event's `seq`.
 */
export async function recordAuditEvent(
  db: Transaction<Database>,
  context: AuditContext,
  event: AuditEventInput,
): Promise<number> {
  let head = await repo.lockHead(db, context.orgId);
  if (!head) {
    await repo.createHead(db, {
      org_id: context.orgId,
      seq: 0,
      hash: GENESIS_HASH,
      archived_through_seq: 0,
    });
    head = await repo.lockHead(db, context.orgId);
    if (!head) throw new Error(`the audit chain head of ${context.orgId} is missing after creating it`);
  }
  const changes =
    event.changes && Object.keys(event.changes).length > 0 ? JSON.stringify(event.changes) : null;
  const personal = {
    actorId: context.actor.id,
    ip: context.ip,
    userAgent: context.userAgent,
    changes,
  };
  const chained = {
    id: newId(),
    orgId: context.orgId,
    seq: Number(head.seq) + 1,
    at: context.clock.now().toISOString(),
    actorType: context.actor.type,
    actorVia: context.actor.via ?? null,
    action: event.action,
    targetType: event.target?.type ?? null,
    targetId: event.target?.id ?? null,
    requestId: context.requestId,
    outcome: event.outcome ?? 'success',
  };
  const digest = personalDigest(personal);
  const hash = eventHash({ ...chained, personalDigest: digest, prevHash: head.hash });
  await repo.insertEvent(db, {
    id: chained.id,
    org_id: chained.orgId,
    seq: chained.seq,
    at: chained.at,
    actor_type: chained.actorType,
    actor_id: personal.actorId,
    actor_via: chained.actorVia,
    action: chained.action,
    target_type: chained.targetType,
    target_id: chained.targetId,
    request_id: chained.requestId,
    ip: personal.ip,
    user_agent: personal.userAgent,
    outcome: chained.outcome,
    changes,
    personal_digest: digest,
    prev_hash: head.hash,
    hash,
    erased_at: null,
  });
  await repo.advanceHead(db, context.orgId, chained.seq, hash);
  return chained.seq;
}

/** An event in API field names. */
export function toAuditEvent(row: repo.AuditEventRow): AuditEvent {
  return {
    seq: Number(row.seq),
    at: row.at,
    orgId: row.org_id,
    actor: {
      type: row.actor_type,
      id: row.actor_id,
      ...(row.actor_via === null ? {} : { via: row.actor_via }),
    },
    action: row.action,
    target:
      row.target_type === null || row.target_id === null
        ? null
        : { type: row.target_type, id: row.target_id },
    requestId: row.request_id,
    ip: row.ip,
    userAgent: row.user_agent,
    outcome: row.outcome,
    changes: row.changes === null ? null : (JSON.parse(row.changes) as FieldChanges),
  };
}

export const auditEventsList: ListSpec<'seq', NoFilters> = {
  sort: { seq: 'seq' },
  defaultSort: '-seq',
};

/** ISO-8601 UTC with milliseconds, the stored form, so the range compares correctly as text on SQLite too. */
function normaliseRange(filters: repo.AuditEventFilters): repo.AuditEventFilters {
  const from = filters.from === undefined ? undefined : new Date(filters.from).toISOString();
  const to = filters.to === undefined ? undefined : new Date(filters.to).toISOString();
  if (from !== undefined && to !== undefined && from > to)
    throw new AppError(auditErrors.AUDIT_RANGE_INVALID);
  return { ...filters, from, to };
}

/** One page of the organization's events, newest first unless `sort=seq`. */
export async function listAuditEvents(
  database: DatabaseHandle,
  access: OrgAccess,
  query: { limit: number; cursor?: string | undefined; sort: string } & repo.AuditEventFilters,
): Promise<{ data: AuditEvent[]; nextCursor: string | null }> {
  const filters = normaliseRange(query);
  const page = await database.withTenant(access.orgId, (db) =>
    paginate(
      repo.filteredEvents(db, access.orgId, filters),
      { limit: query.limit, cursor: query.cursor, sort: query.sort },
      auditEventsList,
    ),
  );
  return { data: page.data.map(toAuditEvent), nextCursor: page.nextCursor };
}

/** How many events a verification or an export reads per query: memory stays bounded however long the log. */
const PAGE_SIZE = 500;

/**
 * Recomputes the organization's chain from its first unarchived event to the head as it was when verification
 * began (events appended meanwhile are left for the next run). Each event must have the next `seq`, link to the
 * previous event's hash, carry a personal digest matching its personal fields (unless they were erased), and a
 * hash matching its fields; the last must be the head. Reads in pages, each in its own short transaction.
 */
export async function verifyAuditChain(database: DatabaseHandle, orgId: string): Promise<AuditVerifyResult> {
  const head = await database.withTenant(orgId, (db) => repo.readHead(db, orgId));
  if (!head) {
    // No head: either no event was ever written, or the head was removed; any event left is then unlinked.
    const stray = await database.withTenant(orgId, (db) => repo.eventsAfter(db, orgId, 0, 1));
    return stray[0] ? { ok: false, checked: 1, brokenAt: Number(stray[0].seq) } : { ok: true, checked: 0 };
  }
  const headSeq = Number(head.seq);
  let expectedSeq = Number(head.archived_through_seq) + 1;
  // After an archive, the first remaining event links to the archived segment, which this run cannot read.
  let prevHash: string | undefined = expectedSeq === 1 ? GENESIS_HASH : undefined;
  let checked = 0;
  for (;;) {
    const rows = await database.withTenant(orgId, (db) =>
      repo.eventsAfter(db, orgId, expectedSeq - 1, PAGE_SIZE, {}, headSeq),
    );
    for (const row of rows) {
      checked += 1;
      const seq = Number(row.seq);
      if (seq !== expectedSeq) return { ok: false, checked, brokenAt: expectedSeq };
      if (!linkHolds(row, prevHash)) return { ok: false, checked, brokenAt: seq };
      prevHash = row.hash;
      expectedSeq += 1;
    }
    if (rows.length < PAGE_SIZE) break;
  }
  // The head names the last event: events missing at the end (or a head moved by hand) break the chain there.
  if (expectedSeq - 1 !== headSeq || (checked > 0 && prevHash !== head.hash)) {
    return { ok: false, checked, brokenAt: expectedSeq - 1 === headSeq ? headSeq : expectedSeq };
  }
  return { ok: true, checked };
}

function linkHolds(row: repo.AuditEventRow, prevHash: string | undefined): boolean {
  if (prevHash !== undefined && row.prev_hash !== prevHash) return false;
  if (
    row.erased_at === null &&
    personalDigest({ actorId: row.actor_id, ip: row.ip, userAgent: row.user_agent, changes: row.changes }) !==
      row.personal_digest
  ) {
    return false;
  }
  const recomputed = eventHash({
    id: row.id,
    orgId: row.org_id,
    seq: Number(row.seq),
    at: row.at,
    actorType: row.actor_type,
    actorVia: row.actor_via,
    action: row.action,
    targetType: row.target_type,
    targetId: row.target_id,
    requestId: row.request_id,
    outcome: row.outcome,
    personalDigest: row.personal_digest,
    prevHash: row.prev_hash,
  });
  return recomputed === row.hash;
}

/** Every organization that has an audit chain. Across tenants: the CLI's `audit verify` checks all of them. */
export function auditedOrganizations(database: DatabaseHandle): Promise<string[]> {
  return database.acrossTenants((db) => repo.auditedOrgIds(db));
}

/** The columns of a CSV export, in order. */
export const CSV_COLUMNS = [
  'seq',
  'at',
  'orgId',
  'actorType',
  'actorId',
  'actorVia',
  'action',
  'targetType',
  'targetId',
  'requestId',
  'ip',
  'userAgent',
  'outcome',
  'changes',
] as const;

/**
 * One CSV field (RFC 4180): quoted when it holds a comma, a quote, a line break or leading/trailing space, with
 * quotes doubled; null is the empty field. A text that a spreadsheet would run as a formula (starting with `=`,
 * `+`, `-`, `@`, a tab or a carriage return — a user agent or a name is attacker-chosen) is prefixed with `'`,
 * as OWASP's CSV-injection advice says, so opening an export never executes anything.
 */
export function csvField(value: string | number | null): string {
  if (value === null) return '';
  const text = typeof value === 'string' && /^[=+\-@\t\r]/.test(value) ? `'${value}` : String(value);
  return /[",\r\n]|^\s|\s$/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

function csvLine(event: AuditEvent): string {
  const values: (string | number | null)[] = [
    event.seq,
    event.at,
    event.orgId,
    event.actor.type,
    event.actor.id,
    event.actor.via ?? null,
    event.action,
    event.target?.type ?? null,
    event.target?.id ?? null,
    event.requestId,
    event.ip,
    event.userAgent,
    event.outcome,
    event.changes === null ? null : JSON.stringify(event.changes),
  ];
  return `${values.map(csvField).join(',')}\r\n`;
}

/**
 * The organization's events in chain order as CSV (header row first) or NDJSON lines, read from the database a
 * page at a time as the consumer pulls, so an export of any size holds one page in memory.
 */
export async function* exportAuditEvents(
  database: DatabaseHandle,
  orgId: string,
  format: 'csv' | 'ndjson',
  filters: repo.AuditEventFilters,
): AsyncGenerator<string> {
  const range = normaliseRange(filters);
  if (format === 'csv') yield `${CSV_COLUMNS.join(',')}\r\n`;
  let after = 0;
  for (;;) {
    const rows = await database.withTenant(orgId, (db) =>
      repo.eventsAfter(db, orgId, after, PAGE_SIZE, range),
    );
    let chunk = '';
    for (const row of rows) {
      const event = toAuditEvent(row);
      chunk += format === 'csv' ? csvLine(event) : `${JSON.stringify(event)}\n`;
      after = event.seq;
    }
    if (chunk !== '') yield chunk;
    if (rows.length < PAGE_SIZE) return;
  }
}

/** Checks an export's range before the response starts, so a bad one is a 400 rather than a broken stream. */
export function checkRange(filters: repo.AuditEventFilters): void {
  normaliseRange(filters);
}
