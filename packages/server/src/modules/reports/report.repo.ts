import type { Insertable, Kysely, Selectable, Transaction } from 'kysely';
import { sql } from 'kysely';
import type { ListSpec, NoFilters } from '../../core/pagination.ts';
import type { Database, OrgUsageReportsTable } from '../../db/schema.ts';

/** All SQL of usage reports and of the figures they are computed from. Rows in, rows out. */

type Db = Kysely<Database> | Transaction<Database>;
export type UsageReportRow = Selectable<OrgUsageReportsTable>;

/** A half-open UTC interval `[from, to)`, as ISO-8601 timestamps. */
export interface Window {
  from: string;
  to: string;
}

/** The report lists: by day only (unique per organization), newest first unless asked otherwise. */
export const usageReportList: ListSpec<'day', NoFilters> = {
  sort: { day: 'day' },
  defaultSort: '-day',
};

export async function findReport(
  db: Transaction<Database>,
  day: string,
): Promise<UsageReportRow | undefined> {
  return db.selectFrom('org_usage_reports').selectAll().where('day', '=', day).executeTakeFirst();
}

export async function insertReport(
  db: Transaction<Database>,
  row: Insertable<OrgUsageReportsTable>,
): Promise<void> {
  await db.insertInto('org_usage_reports').values(row).execute();
}

/** Audit events of the organization's own chain in the window, counted by action and outcome. */
export async function auditActionCounts(
  db: Transaction<Database>,
  orgId: string,
  window: Window,
): Promise<{ action: string; outcome: string; count: number }[]> {
  const rows = await db
    .selectFrom('audit_events')
    .select(['action', 'outcome', (eb) => eb.fn.countAll<number>().as('count')])
    .where('org_id', '=', orgId)
    .where('at', '>=', window.from)
    .where('at', '<', window.to)
    .groupBy(['action', 'outcome'])
    .execute();
  return rows.map((r) => ({ action: r.action, outcome: r.outcome, count: Number(r.count) }));
}

/** Distinct actors of one type on the organization's chain in the window. */
export async function distinctActors(
  db: Transaction<Database>,
  orgId: string,
  actorType: 'user' | 'apikey',
  window: Window,
): Promise<number> {
  const row = await db
    .selectFrom('audit_events')
    .select((eb) => eb.fn.count<number>('actor_id').distinct().as('count'))
    .where('org_id', '=', orgId)
    .where('actor_type', '=', actorType)
    .where('at', '>=', window.from)
    .where('at', '<', window.to)
    .executeTakeFirstOrThrow();
  return Number(row.count);
}

/**
 * How many events the organization's chain held at `end`: the highest `seq` before it. Events are numbered
 * 1, 2, 3, … without gaps, and retention deletes the oldest first, so when every event before `end` is archived
 * and gone, the first remaining one (or the chain head) still says how many came before.
 */
export async function chainLengthAt(db: Transaction<Database>, orgId: string, end: string): Promise<number> {
  const before = await db
    .selectFrom('audit_events')
    .select((eb) => eb.fn.max('seq').as('seq'))
    .where('org_id', '=', orgId)
    .where('at', '<', end)
    .executeTakeFirst();
  if (before?.seq !== null && before?.seq !== undefined) return Number(before.seq);
  const after = await db
    .selectFrom('audit_events')
    .select((eb) => eb.fn.min('seq').as('seq'))
    .where('org_id', '=', orgId)
    .executeTakeFirst();
  if (after?.seq !== null && after?.seq !== undefined) return Number(after.seq) - 1;
  const head = await db
    .selectFrom('audit_chain_heads')
    .select('seq')
    .where('org_id', '=', orgId)
    .executeTakeFirst();
  return head ? Number(head.seq) : 0;
}

/** API keys created, and revoked, in the window. */
export async function apiKeyChanges(
  db: Transaction<Database>,
  window: Window,
): Promise<{ created: number; revoked: number }> {
  const count = async (column: 'created_at' | 'revoked_at') => {
    const row = await db
      .selectFrom('api_keys')
      .select((eb) => eb.fn.countAll<number>().as('count'))
      .where(column, '>=', window.from)
      .where(column, '<', window.to)
      .executeTakeFirstOrThrow();
    return Number(row.count);
  };
  return { created: await count('created_at'), revoked: await count('revoked_at') };
}

/** API keys neither revoked nor expired at `now`. */
export async function activeApiKeys(db: Transaction<Database>, now: string): Promise<number> {
  const row = await db
    .selectFrom('api_keys')
    .select((eb) => eb.fn.countAll<number>().as('count'))
    .where('revoked_at', 'is', null)
    .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', now)]))
    .executeTakeFirstOrThrow();
  return Number(row.count);
}

export async function memberCount(db: Transaction<Database>): Promise<number> {
  const row = await db
    .selectFrom('memberships')
    .select((eb) => eb.fn.countAll<number>().as('count'))
    .executeTakeFirstOrThrow();
  return Number(row.count);
}

/**
 * Sign-ins on the account chains (`user:<id>`) of the organization's current members in the window: successful
 * ones, the distinct members with one, and failed ones. Run in `acrossTenants`: the account chains belong to no
 * organization, so `withTenant` (and row-level security) would show none of them; the join names the
 * organization explicitly.
 */
export async function memberSignIns(
  db: Transaction<Database>,
  orgId: string,
  window: Window,
): Promise<{ total: number; members: number; failed: number }> {
  const rows = await db
    .selectFrom('audit_events')
    .innerJoin('memberships', (join) =>
      join.on(
        sql<boolean>`${sql.ref('audit_events.org_id')} = ${sql.lit('user:')} || cast(${sql.ref('memberships.user_id')} as text)`,
      ),
    )
    .select([
      'audit_events.action',
      (eb) => eb.fn.countAll<number>().as('count'),
      (eb) => eb.fn.count<number>('audit_events.org_id').distinct().as('accounts'),
    ])
    .where('memberships.org_id', '=', orgId)
    .where('audit_events.action', 'in', ['user.signed_in', 'user.sign_in_failed'])
    .where('audit_events.at', '>=', window.from)
    .where('audit_events.at', '<', window.to)
    .groupBy('audit_events.action')
    .execute();
  const of = (action: string) => rows.find((r) => r.action === action);
  return {
    total: Number(of('user.signed_in')?.count ?? 0),
    members: Number(of('user.signed_in')?.accounts ?? 0),
    failed: Number(of('user.sign_in_failed')?.count ?? 0),
  };
}

/** Organizations that existed before `end`, a page at a time by id (keyset), for the daily fan-out. */
export async function orgsCreatedBefore(
  db: Db,
  end: string,
  after: string | undefined,
  limit: number,
): Promise<string[]> {
  let query = db
    .selectFrom('organizations')
    .select('id')
    .where('created_at', '<', end)
    .orderBy('id')
    .limit(limit);
  if (after !== undefined) query = query.where('id', '>', after);
  return (await query.execute()).map((r) => r.id);
}

/** The organization's members (not disabled) with their address, name and role. */
export async function membersWithRoles(
  db: Transaction<Database>,
): Promise<{ userId: string; email: string; name: string; role: string }[]> {
  return db
    .selectFrom('memberships')
    .innerJoin('users', 'users.id', 'memberships.user_id')
    .select(['users.id as userId', 'users.email', 'users.name', 'memberships.role'])
    .where('users.disabled_at', 'is', null)
    .orderBy('users.id')
    .execute();
}

/**
 * Of `userIds`, those whose latest consent record for `purpose` is a withdrawal. No record at all means the
 * default applies (they receive the mail).
 */
export async function withdrawnConsents(db: Db, purpose: string, userIds: string[]): Promise<Set<string>> {
  if (userIds.length === 0) return new Set();
  const rows = await db
    .selectFrom('consent_records')
    .select(['user_id', 'granted', 'recorded_at', 'id'])
    .where('purpose', '=', purpose)
    .where('user_id', 'in', userIds)
    .orderBy('recorded_at')
    .orderBy('id')
    .execute();
  const latest = new Map<string, number>();
  for (const row of rows) latest.set(row.user_id, Number(row.granted));
  return new Set([...latest].filter(([, granted]) => granted === 0).map(([userId]) => userId));
}
