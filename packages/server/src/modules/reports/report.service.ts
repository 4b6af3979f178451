import { MAX_REPORT_RANGE_DAYS, reportErrors, type UsageFigures, type UsageReport } from '@plinth/shared';
import { z } from 'zod';
import { AppError } from '../../core/errors.ts';
import { newId } from '../../core/ids.ts';
import { paginate } from '../../core/pagination.ts';
import { purgeAfter, type RetentionPolicy } from '../../core/retention.ts';
import { sequenceAllChains } from '../audit/index.ts';
import { mailTemplates } from '../mail/index.ts';
import type { OrgAccess } from '../rbac/index.ts';
import type { ReportDeps } from './deps.ts';
import * as repo from './report.repo.ts';

/** The schedule's job: fans out one report job per organization for the previous UTC day. */
export const DAILY_REPORTS_JOB = 'reports.daily';
/** Computes, stores and mails one organization's report for one day. */
export const USAGE_REPORT_JOB = 'reports.usage';
/** Mails one member one stored report. */
export const REPORT_MAIL_JOB = 'reports.mail';
/** 01:00 UTC every day: the previous day has ended everywhere a UTC report is read. */
export const DAILY_REPORTS_SCHEDULE = '0 1 * * *';
/** The consent purpose whose withdrawal stops the daily mail (no record: the mail is sent). */
export const REPORT_MAIL_PURPOSE = 'usage_report_email';
/** The permission that lets a member read reports, and makes them a recipient of the mail. */
export const REPORT_PERMISSION = 'reports:read';
/** How many organizations one fan-out transaction enqueues. */
const FANOUT_BATCH = 500;
const DAY_MS = 86_400_000;

/** Reports are kept this long after they were computed (then deleted by the daily retention job). */
export const usageReportRetention: RetentionPolicy = {
  name: 'org_usage_reports',
  description: 'daily usage reports of organizations',
  days: 400,
  apply: purgeAfter({ table: 'org_usage_reports', after: ['computed_at'] }),
};

/** The UTC day before the one `now` falls in, `YYYY-MM-DD`. */
export function previousDay(now: Date): string {
  return new Date(now.getTime() - DAY_MS).toISOString().slice(0, 10);
}

/** The half-open interval of a UTC day. */
export function dayWindow(day: string): repo.Window {
  const from = new Date(`${day}T00:00:00.000Z`);
  return { from: from.toISOString(), to: new Date(from.getTime() + DAY_MS).toISOString() };
}

function toUsageReport(row: repo.UsageReportRow): UsageReport {
  return {
    id: row.id,
    orgId: row.org_id,
    day: row.day,
    computedAt: row.computed_at,
    ...(JSON.parse(row.figures) as UsageFigures),
  };
}

/** The number of events whose action is exactly one of `actions`. */
function actionTotal(counts: { action: string; count: number }[], ...actions: string[]): number {
  return counts.filter((c) => actions.includes(c.action)).reduce((sum, c) => sum + c.count, 0);
}

/**
 * The day's figures for one organization, from what Plinth stores: the organization's audit chain (activity,
 * members, invitations, rotations), `api_keys` (created, revoked, active), the account chains of its current
 * members (sign-ins) and its memberships. Counts that describe a state rather than the day (`members.total`,
 * `apiKeys.active`) are as of `now`, the computation.
 */
export async function computeFigures(deps: ReportDeps, orgId: string, day: string): Promise<UsageFigures> {
  const window = dayWindow(day);
  const now = deps.clock.now().toISOString();
  // Across tenants on purpose: sign-ins are on the members' own account chains, which belong to no organization.
  // The query names the organization itself (memberships.org_id). Every chain is sequenced first, so that the
  // day's last events count (audit/sequencer.ts).
  const signIns = await deps.database.acrossTenants(async (db) => {
    await sequenceAllChains(db);
    return repo.memberSignIns(db, orgId, window);
  });
  return deps.database.withTenant(orgId, async (db) => {
    const counts = await repo.auditActionCounts(db, orgId, window);
    const byCategory: Record<string, number> = {};
    for (const { action, count } of counts) {
      const category = action.split('.')[0] ?? action;
      byCategory[category] = (byCategory[category] ?? 0) + count;
    }
    const keys = await repo.apiKeyChanges(db, window);
    return {
      activity: {
        auditEvents: counts.reduce((sum, c) => sum + c.count, 0),
        failedEvents: counts.filter((c) => c.outcome !== 'success').reduce((sum, c) => sum + c.count, 0),
        activeMembers: await repo.distinctActors(db, orgId, 'user', window),
        activeApiKeys: await repo.distinctActors(db, orgId, 'apikey', window),
        byCategory: Object.fromEntries(Object.entries(byCategory).sort(([a], [b]) => (a < b ? -1 : 1))),
      },
      members: {
        added: actionTotal(counts, 'member.added'),
        removed: actionTotal(counts, 'member.removed'),
        roleChanged: actionTotal(counts, 'member.role_changed'),
        total: await repo.memberCount(db),
      },
      invitations: {
        created: actionTotal(counts, 'invitation.created'),
        accepted: actionTotal(counts, 'invitation.accepted'),
        revoked: actionTotal(counts, 'invitation.revoked'),
      },
      apiKeys: {
        created: keys.created,
        rotated: actionTotal(counts, 'apikey.rotated'),
        revoked: keys.revoked,
        active: await repo.activeApiKeys(db, now),
      },
      signIns,
      auditLog: { eventsTotal: await repo.chainLengthAt(db, orgId, window.to) },
    };
  });
}

/**
 * Computes and stores the report of `orgId` for `day`, and in the same transaction enqueues one mail job per
 * recipient (so the mails exist exactly when the report does, each retried on its own). A report already stored
 * is left as it is and nothing is mailed again: a rerun never doubles. An organization deleted meanwhile gets
 * nothing. Returns whether a report was stored.
 */
export async function generateReport(deps: ReportDeps, orgId: string, day: string): Promise<boolean> {
  const exists = await deps.database.db
    .selectFrom('organizations')
    .select('id')
    .where('id', '=', orgId)
    .executeTakeFirst();
  if (!exists) return false;
  const already = await deps.database.withTenant(orgId, (db) => repo.findReport(db, day));
  if (already) return false;
  const figures = await computeFigures(deps, orgId, day);
  return deps.database.withTenant(orgId, async (db) => {
    // Checked again in the writing transaction: the unique (org_id, day) index refuses a second row anyway.
    if (await repo.findReport(db, day)) return false;
    await repo.insertReport(db, {
      id: newId(),
      org_id: orgId,
      day,
      figures: JSON.stringify(figures),
      computed_at: deps.clock.now().toISOString(),
    });
    for (const recipient of await recipients(deps, db)) {
      await deps.jobs.enqueue(
        REPORT_MAIL_JOB,
        { orgId, day, userId: recipient.userId },
        { db, idempotencyKey: `${REPORT_MAIL_JOB}:${orgId}:${day}:${recipient.userId}` },
      );
    }
    deps.log.info({ orgId, day }, 'usage report stored');
    return true;
  });
}

type TenantDb = Parameters<Parameters<ReportDeps['database']['withTenant']>[1]>[0];

/** Members (not disabled) whose role holds `reports:read` and who have not withdrawn the mail's consent. */
async function recipients(
  deps: ReportDeps,
  db: TenantDb,
): Promise<{ userId: string; email: string; name: string }[]> {
  const members = await repo.membersWithRoles(db);
  const permitted: typeof members = [];
  const roles = new Map<string, boolean>();
  for (const member of members) {
    let holds = roles.get(member.role);
    if (holds === undefined) {
      holds = (await deps.access.rolePermissions(db, member.role))?.has(REPORT_PERMISSION) ?? false;
      roles.set(member.role, holds);
    }
    if (holds) permitted.push(member);
  }
  const optedOut = await repo.withdrawnConsents(
    db,
    REPORT_MAIL_PURPOSE,
    permitted.map((m) => m.userId),
  );
  return permitted.filter((m) => !optedOut.has(m.userId));
}

/**
 * Mails one stored report to one member — if they are still a member who may read it and still want it (both
 * checked again at sending time, since the job may run later than it was enqueued).
 */
export async function mailReport(
  deps: ReportDeps,
  job: { orgId: string; day: string; userId: string },
): Promise<void> {
  const found = await deps.database.withTenant(job.orgId, async (db) => {
    const report = await repo.findReport(db, job.day);
    if (!report) return undefined;
    const recipient = (await recipients(deps, db)).find((r) => r.userId === job.userId);
    if (!recipient) return undefined;
    const org = await db
      .selectFrom('organizations')
      .select('name')
      .where('id', '=', job.orgId)
      .executeTakeFirst();
    return { report: toUsageReport(report), recipient, orgName: org?.name ?? '' };
  });
  if (!found) return;
  const { report, recipient } = found;
  await deps.mailer.send({
    to: recipient.email,
    ...mailTemplates.usageReport({
      name: recipient.name,
      orgName: found.orgName,
      orgId: job.orgId,
      day: job.day,
      figures: [
        ['Audit log events', report.activity.auditEvents],
        ['Failed or denied actions', report.activity.failedEvents],
        ['Active members', report.activity.activeMembers],
        ['Active API keys', report.activity.activeApiKeys],
        ['Members added', report.members.added],
        ['Members removed', report.members.removed],
        ['Members now', report.members.total],
        ['Invitations sent', report.invitations.created],
        ['Invitations accepted', report.invitations.accepted],
        ['API keys created', report.apiKeys.created],
        ['API keys rotated', report.apiKeys.rotated],
        ['API keys revoked', report.apiKeys.revoked],
        ['Sign-ins by members', report.signIns.total],
        ['Members who signed in', report.signIns.members],
        ['Failed sign-ins', report.signIns.failed],
        ['Audit log size (events)', report.auditLog.eventsTotal],
      ],
      categories: Object.entries(report.activity.byCategory).sort((a, b) => b[1] - a[1]),
    }),
  });
}

/**
 * Enqueues the report job of every organization that existed before the end of the previous UTC day, a batch of
 * organizations per transaction. The idempotency key (organization and day) makes a second fan-out — the
 * schedule's job retried after a crash — enqueue nothing new.
 */
export async function enqueueDailyReports(deps: ReportDeps): Promise<number> {
  const day = previousDay(deps.clock.now());
  const { to } = dayWindow(day);
  let after: string | undefined;
  let created = 0;
  for (;;) {
    const ids = await repo.orgsCreatedBefore(deps.database.db, to, after, FANOUT_BATCH);
    if (ids.length === 0) break;
    await deps.database.db.transaction().execute(async (trx) => {
      for (const orgId of ids) {
        const result = await deps.jobs.enqueue(
          USAGE_REPORT_JOB,
          { orgId, day },
          { db: trx, idempotencyKey: `${USAGE_REPORT_JOB}:${orgId}:${day}` },
        );
        if (result.created) created++;
      }
    });
    after = ids.at(-1);
    if (ids.length < FANOUT_BATCH) break;
  }
  deps.log.info({ day, enqueued: created }, 'usage reports enqueued');
  return created;
}

const DayPayload = z.string().regex(/^\d{4}-\d{2}-\d{2}$/);

/** Declares the three jobs and the daily schedule. */
export function defineReportJobs(deps: ReportDeps): void {
  deps.jobs.define(DAILY_REPORTS_JOB, {
    payload: z.strictObject({}),
    handler: async () => void (await enqueueDailyReports(deps)),
  });
  deps.jobs.define(USAGE_REPORT_JOB, {
    payload: z.strictObject({ orgId: z.uuid(), day: DayPayload }),
    handler: async ({ orgId, day }) => void (await generateReport(deps, orgId, day)),
    // Its own queue: the 01:00 burst of one job per organization never holds up exports, erasures or mail.
    queue: 'reports',
    maxAttempts: 5,
    backoffSeconds: 60,
  });
  deps.jobs.define(REPORT_MAIL_JOB, {
    payload: z.strictObject({ orgId: z.uuid(), day: DayPayload, userId: z.uuid() }),
    handler: async (payload) => mailReport(deps, payload),
    queue: 'mail',
    maxAttempts: 8,
    backoffSeconds: 60,
  });
  deps.jobs.schedule(DAILY_REPORTS_JOB, DAILY_REPORTS_SCHEDULE, { name: DAILY_REPORTS_JOB, payload: {} });
}

/** `from`…`to` (both optional, both included): refused when reversed or wider than the bound. */
function checkRange(from: string | undefined, to: string | undefined): void {
  if (from === undefined || to === undefined) return;
  if (from > to) {
    throw new AppError(reportErrors.REPORT_RANGE_INVALID, { detail: '`from` is after `to`.' });
  }
  const days = (Date.parse(`${to}T00:00:00Z`) - Date.parse(`${from}T00:00:00Z`)) / DAY_MS + 1;
  if (days > MAX_REPORT_RANGE_DAYS) {
    throw new AppError(reportErrors.REPORT_RANGE_INVALID, {
      detail: `The range spans ${days} days; at most ${MAX_REPORT_RANGE_DAYS} may be asked for at once.`,
    });
  }
}

/** One page of the organization's reports, optionally between two days (both included). */
export async function listReports(
  deps: ReportDeps,
  access: OrgAccess,
  query: {
    limit: number;
    cursor?: string | undefined;
    sort: string;
    from?: string | undefined;
    to?: string | undefined;
  },
): Promise<{ data: UsageReport[]; nextCursor: string | null }> {
  checkRange(query.from, query.to);
  const page = await deps.database.withTenant(access.orgId, (db) => {
    let select = db.selectFrom('org_usage_reports').selectAll();
    if (query.from !== undefined) select = select.where('day', '>=', query.from);
    if (query.to !== undefined) select = select.where('day', '<=', query.to);
    return paginate(select, query, repo.usageReportList);
  });
  return { data: page.data.map(toUsageReport), nextCursor: page.nextCursor };
}

export async function getReport(deps: ReportDeps, access: OrgAccess, day: string): Promise<UsageReport> {
  const row = await deps.database.withTenant(access.orgId, (db) => repo.findReport(db, day));
  if (!row) throw new AppError(reportErrors.USAGE_REPORT_NOT_FOUND);
  return toUsageReport(row);
}
