import { randomBytes } from 'node:crypto';
import type { MyOrganization, Organization } from '@plinth/shared';
import { orgErrors } from '@plinth/shared';
import { AppError } from '../../core/errors.ts';
import { newId } from '../../core/ids.ts';
import { type ListSpec, type NoFilters, paginate } from '../../core/pagination.ts';
import { isUniqueViolation } from '../../db/errors.ts';
import { type AuditContext, fieldChanges, recordAuditEvent } from '../audit/record.ts';
import type { OrgAccess } from '../rbac/index.ts';
import type { OrgDeps } from './deps.ts';
import * as repo from './org.repo.ts';

export function toOrganization(row: repo.OrgRow): Organization {
  return {
    id: row.id,
    name: row.name,
    slug: row.slug,
    plan: row.plan,
    auditRetentionDays: row.audit_retention_days,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

/** A slug from a name: ASCII letters and digits, hyphen-separated, at most 50 characters; `org` if none are left. */
export function slugify(name: string): string {
  const slug = name
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .slice(0, 50)
    .replace(/^-+|-+$/g, '');
  return slug === '' ? 'org' : slug;
}

/** How many times a generated slug is retried with a random suffix before giving up. */
const SLUG_ATTEMPTS = 5;

/**
 * Creates an organization on the installation's first plan, with its creator as owner, in one transaction. A
 * slug the caller chose must be free (409 otherwise); one derived from the name gets a random suffix if taken.
 */
export async function createOrg(
  deps: OrgDeps,
  userId: string,
  input: { name: string; slug?: string | undefined },
  audit: (orgId: string) => AuditContext,
): Promise<Organization> {
  const now = deps.clock.now().toISOString();
  const base = input.slug ?? slugify(input.name);
  for (let attempt = 0; ; attempt++) {
    const slug = attempt === 0 ? base : `${base.slice(0, 50)}-${randomBytes(4).toString('hex')}`;
    const org = {
      id: newId(),
      name: input.name,
      slug,
      plan: deps.config.orgs.plans[0] ?? 'free',
      audit_retention_days: null,
      created_at: now,
      updated_at: now,
    };
    try {
      await deps.database.withTenant(org.id, async (db) => {
        await repo.insertOrg(db, org);
        await db
          .insertInto('memberships')
          .values({
            id: newId(),
            org_id: org.id,
            user_id: userId,
            role: 'owner',
            created_at: now,
            updated_at: now,
          })
          .execute();
        await recordAuditEvent(db, audit(org.id), {
          action: 'org.created',
          target: { type: 'org', id: org.id },
          changes: fieldChanges(null, { name: org.name, slug: org.slug, plan: org.plan }),
        });
      });
      deps.log.info({ orgId: org.id, userId }, 'organization created');
      return toOrganization(org);
    } catch (error) {
      if (!isUniqueViolation(error)) throw error;
      if (input.slug !== undefined) throw new AppError(orgErrors.SLUG_TAKEN);
      if (attempt + 1 >= SLUG_ATTEMPTS) throw error;
    }
  }
}

export const myOrgsList: ListSpec<'name' | 'createdAt', NoFilters> = {
  sort: { name: 'organizations.name', createdAt: 'organizations.created_at' },
  defaultSort: 'name',
  idColumn: 'organizations.id',
};

/** The organizations the user belongs to, with their role in each. */
export async function listMyOrgs(
  deps: OrgDeps,
  userId: string,
  query: { limit: number; cursor?: string | undefined; sort: string },
): Promise<{ data: MyOrganization[]; nextCursor: string | null }> {
  // Across organizations, because the question is which ones: the user's own memberships, and only theirs.
  const page = await deps.database.acrossTenants((db) =>
    paginate(
      db
        .selectFrom('memberships')
        .innerJoin('organizations', 'organizations.id', 'memberships.org_id')
        .selectAll('organizations')
        .select('memberships.role')
        .where('memberships.user_id', '=', userId),
      query,
      myOrgsList,
    ),
  );
  return {
    data: page.data.map((row) => ({ ...toOrganization(row), role: row.role })),
    nextCursor: page.nextCursor,
  };
}

export async function getOrg(deps: OrgDeps, access: OrgAccess): Promise<Organization> {
  const org = await repo.findOrg(deps.database.db, access.orgId);
  if (!org) throw new AppError(orgErrors.ORG_NOT_FOUND);
  return toOrganization(org);
}

export async function updateOrg(
  deps: OrgDeps,
  access: OrgAccess,
  input: {
    name?: string | undefined;
    slug?: string | undefined;
    auditRetentionDays?: number | null | undefined;
  },
  audit: AuditContext,
): Promise<Organization> {
  const changes = {
    ...(input.name === undefined ? {} : { name: input.name }),
    ...(input.slug === undefined ? {} : { slug: input.slug }),
    ...(input.auditRetentionDays === undefined ? {} : { audit_retention_days: input.auditRetentionDays }),
    updated_at: deps.clock.now().toISOString(),
  };
  try {
    // In a tenant transaction, although `organizations` is not org-owned, so the `org.updated` event commits
    // with the change or not at all.
    await deps.database.withTenant(access.orgId, async (db) => {
      const before = await repo.findOrg(db, access.orgId);
      if (!before) throw new AppError(orgErrors.ORG_NOT_FOUND);
      await repo.updateOrg(db, access.orgId, changes);
      await recordAuditEvent(db, audit, {
        action: 'org.updated',
        target: { type: 'org', id: access.orgId },
        changes: fieldChanges(
          { name: before.name, slug: before.slug, auditRetentionDays: before.audit_retention_days },
          {
            name: changes.name ?? before.name,
            slug: changes.slug ?? before.slug,
            auditRetentionDays:
              changes.audit_retention_days === undefined
                ? before.audit_retention_days
                : changes.audit_retention_days,
          },
        ),
      });
      const after = await repo.findOrg(db, access.orgId);
      if (after) {
        await deps.events.publish(db, {
          orgId: access.orgId,
          type: 'org.updated',
          data: toOrganization(after),
        });
      }
    });
  } catch (error) {
    if (isUniqueViolation(error)) throw new AppError(orgErrors.SLUG_TAKEN);
    throw error;
  }
  return getOrg(deps, access);
}

/**
 * Deletes the organization and, by cascade, everything it owns — except its audit log, which outlives it (the
 * events name the organization but do not reference it) with `org.deleted` as its last event, until retention
 * removes it. Every replica forgets the organization's memberships and keys.
 */
export async function deleteOrg(deps: OrgDeps, access: OrgAccess, audit: AuditContext): Promise<void> {
  await deps.database.withTenant(access.orgId, async (db) => {
    await repo.deleteOrg(db, access.orgId);
    await recordAuditEvent(db, audit, { action: 'org.deleted', target: { type: 'org', id: access.orgId } });
  });
  await deps.access.orgChanged(access.orgId);
  deps.log.info({ orgId: access.orgId }, 'organization deleted');
}

export const allOrgsList: ListSpec<'name' | 'createdAt', NoFilters> = {
  sort: { name: 'name', createdAt: 'created_at' },
  defaultSort: 'createdAt',
};

/** Every organization of the installation (operators only). */
export async function listAllOrgs(
  deps: OrgDeps,
  query: { limit: number; cursor?: string | undefined; sort: string },
): Promise<{ data: Organization[]; nextCursor: string | null }> {
  const page = await paginate(deps.database.db.selectFrom('organizations').selectAll(), query, allOrgsList);
  return { data: page.data.map(toOrganization), nextCursor: page.nextCursor };
}

/** Moves an organization to another plan (operators only: members must not choose their own limits). */
export async function setPlan(
  deps: OrgDeps,
  orgId: string,
  plan: string,
  audit: AuditContext,
): Promise<Organization> {
  if (!deps.config.orgs.plans.includes(plan)) {
    throw new AppError(orgErrors.UNKNOWN_PLAN, { detail: `Plans: ${deps.config.orgs.plans.join(', ')}.` });
  }
  const org = await repo.findOrg(deps.database.db, orgId);
  if (!org) throw new AppError(orgErrors.ORG_NOT_FOUND);
  const updatedAt = deps.clock.now().toISOString();
  await deps.database.withTenant(orgId, async (db) => {
    await repo.updateOrg(db, orgId, { plan, updated_at: updatedAt });
    await recordAuditEvent(db, audit, {
      action: 'org.plan_changed',
      target: { type: 'org', id: orgId },
      changes: fieldChanges({ plan: org.plan }, { plan }),
    });
  });
  // Every replica forgets the organization's cached plan, so its new limits apply from the next request.
  await deps.access.orgChanged(orgId);
  deps.log.info({ orgId, plan }, 'organization plan changed');
  return toOrganization({ ...org, plan, updated_at: updatedAt });
}
