import { type AuditEvent, type AuditVerifyResult, auditErrors } from '@plinth/shared';
import { sql } from 'kysely';
import { AppError } from '../../core/errors.ts';
import { type ListSpec, type NoFilters, paginate } from '../../core/pagination.ts';
import type { PersonalDataSource } from '../../core/personal-data.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import { containsText } from '../../db/database.ts';
import { eventHash, personalDigest } from './audit.chain.ts';
import * as repo from './audit.repo.ts';
import { accountChain, type FieldChanges, orgOfChain } from './record.ts';
import { sequenceAllChains, sequenceChain, sequenceChainNow } from './sequencer.ts';

/** An event in API field names. */
export function toAuditEvent(row: repo.AuditEventRow): AuditEvent {
  return {
    seq: Number(row.seq),
    at: row.at,
    orgId: orgOfChain(row.org_id),
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

/** One page of a chain's events (an organization's, an account's), newest first unless `sort=seq`. */
export async function listAuditEvents(
  database: DatabaseHandle,
  chain: string,
  query: { limit: number; cursor?: string | undefined; sort: string } & repo.AuditEventFilters,
): Promise<{ data: AuditEvent[]; nextCursor: string | null }> {
  const filters = normaliseRange(query);
  const page = await database.withTenant(chain, async (db) => {
    await sequenceChain(db, chain);
    return paginate(
      repo.filteredEvents(db, chain, filters),
      { limit: query.limit, cursor: query.cursor, sort: query.sort },
      auditEventsList,
    );
  });
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
  const head = await database.withTenant(orgId, async (db) => {
    await sequenceChain(db, orgId);
    return repo.readHead(db, orgId);
  });
  if (!head) {
    // No head: either no event was ever written, or the head was removed; any event left is then unlinked.
    const stray = await database.withTenant(orgId, (db) => repo.eventsAfter(db, orgId, 0, 1));
    return stray[0] ? { ok: false, checked: 1, brokenAt: Number(stray[0].seq) } : { ok: true, checked: 0 };
  }
  const headSeq = Number(head.seq);
  let expectedSeq = Number(head.archived_through_seq) + 1;
  // After an archive, the first remaining event links to the archived segment's last hash, which the head keeps
  // (its guard lets only an archive change it); before any archive that is the genesis value.
  let prevHash = head.archived_hash;
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
  if (expectedSeq - 1 !== headSeq || prevHash !== head.hash) {
    return { ok: false, checked, brokenAt: expectedSeq - 1 === headSeq ? headSeq : expectedSeq };
  }
  return { ok: true, checked };
}

/** Whether a stored event links to `prevHash` and its digest (unless erased) and hash match its fields. */
export function linkHolds(row: repo.AuditEventRow, prevHash: string): boolean {
  if (row.prev_hash !== prevHash) return false;
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

/**
 * Every audit chain: each organization's, each account's and the installation's. Across tenants: the CLI's
 * `audit verify` checks all of them.
 */
export function auditChains(database: DatabaseHandle): Promise<string[]> {
  return database.acrossTenants(async (db) => {
    await sequenceAllChains(db);
    return repo.chainNames(db);
  });
}

/**
 * The audit events about a person, for their data export: every event on their account's chain, and every event
 * they acted in on any other chain (organizations, the installation), in time order. On those other chains the
 * field diffs are left out: they can hold other people's data (the address of someone the person invited), which
 * an access request must not disclose (GDPR art. 15(4)); what the person did, when, from where, stays.
 */
export const auditPersonalData: PersonalDataSource = {
  name: 'auditEvents',
  async export(db, userId) {
    await sequenceAllChains(db);
    const rows = await db
      .selectFrom('audit_events')
      .selectAll()
      .where((eb) => eb.or([eb('org_id', '=', accountChain(userId)), eb('actor_id', '=', userId)]))
      .orderBy('at')
      .orderBy('org_id')
      .orderBy('seq')
      .execute();
    const own = accountChain(userId);
    return rows.map((row) => toAuditEvent(row.org_id === own ? row : { ...row, changes: null }));
  },
  /**
   * Pseudonymises, never deletes: the events stay in their chains, which still verify (the personal fields are
   * outside the hash, see audit.chain.ts). Where the person acted, and on their own account's chain, the actor
   * becomes their pseudonym and the address, user agent and field diff are cleared. Where they were only the
   * subject of someone else's action (the target, or named in the diff), the diff is cleared; the other actor's
   * address stays.
   */
  async erase(db, subject) {
    // Events still pending carry the person's fields too; in their chains, they are erased below with the rest.
    await sequenceAllChains(db);
    await db
      .updateTable('audit_events')
      .set({
        actor_id: sql<string>`case when actor_id = ${subject.userId} then ${subject.pseudonym} else actor_id end`,
        ip: null,
        user_agent: null,
        changes: null,
        erased_at: subject.at,
      })
      .where((eb) =>
        eb.or([eb('actor_id', '=', subject.userId), eb('org_id', '=', accountChain(subject.userId))]),
      )
      .execute();
    await db
      .updateTable('audit_events')
      .set({ changes: null, erased_at: subject.at })
      .where('changes', 'is not', null)
      .where((eb) =>
        eb.or([
          eb('target_id', '=', subject.userId),
          // As whole JSON string values, so a short name does not match inside other words.
          containsText(db, 'changes', JSON.stringify(subject.email)),
          containsText(db, 'changes', JSON.stringify(subject.name)),
        ]),
      )
      .execute();
  },
};

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
  await sequenceChainNow(database, orgId);
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
