import { orgErrors, type Role } from '@plinth/shared';
import type { Transaction } from 'kysely';
import type { Clock } from '../../core/clock.ts';
import { AppError } from '../../core/errors.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import type { Database } from '../../db/schema.ts';
import { type AuditContext, fieldChanges, recordAuditEvent } from '../audit/record.ts';
import type { AccessResolver, OrgAccess } from './access.ts';
import type { AccessRegistry } from './registry.ts';
import * as repo from './role.repo.ts';

/** What the role services need. */
export interface RbacDeps {
  database: DatabaseHandle;
  registry: AccessRegistry;
  access: AccessResolver;
  clock: Clock;
}

/**
 * Refuses to let a caller grant, change or take away a role holding permissions the caller lacks: an admin
 * cannot make anyone an owner, demote an owner, or define a role more powerful than their own.
 */
export function assertCanGrant(access: OrgAccess, permissions: ReadonlySet<string>): void {
  const missing = [...permissions].filter((p) => !access.permissions.has(p));
  if (missing.length > 0) {
    throw new AppError(orgErrors.ROLE_NOT_GRANTABLE, {
      detail: `The role includes permissions you do not hold: ${missing.sort().join(', ')}.`,
    });
  }
}

/** A role's permissions in the caller's organization, or 400 UNKNOWN_ROLE when it does not exist. */
export async function requireRolePermissions(
  deps: Pick<RbacDeps, 'access'>,
  db: Transaction<Database>,
  role: string,
): Promise<ReadonlySet<string>> {
  const permissions = await deps.access.rolePermissions(db, role);
  if (!permissions) throw new AppError(orgErrors.UNKNOWN_ROLE, { detail: `There is no role ${role}.` });
  return permissions;
}

function assertKnownPermissions(registry: AccessRegistry, permissions: readonly string[]): void {
  const unknown = permissions.filter((p) => !registry.hasPermission(p));
  if (unknown.length > 0) {
    throw new AppError(orgErrors.UNKNOWN_PERMISSION, {
      detail: `Unknown permissions: ${unknown.join(', ')}.`,
    });
  }
}

const builtInView = (r: { name: string; description: string; permissions: ReadonlySet<string> }): Role => ({
  name: r.name,
  description: r.description,
  permissions: [...r.permissions].sort(),
  builtIn: true,
});
const customView = (r: repo.CustomRoleRow): Role => ({
  ...r,
  permissions: [...r.permissions].sort(),
  builtIn: false,
});

export async function listRoles(deps: RbacDeps, access: OrgAccess): Promise<Role[]> {
  const custom = await deps.database.withTenant(access.orgId, (db) => repo.listCustomRoles(db));
  return [...deps.registry.builtInRoles().map(builtInView), ...custom.map(customView)];
}

export async function getRole(deps: RbacDeps, access: OrgAccess, name: string): Promise<Role> {
  const builtIn = deps.registry.builtInRoles().find((r) => r.name === name);
  if (builtIn) return builtInView(builtIn);
  const custom = await deps.database.withTenant(access.orgId, (db) => repo.findCustomRole(db, name));
  if (!custom) throw new AppError(orgErrors.ROLE_NOT_FOUND);
  return customView(custom);
}

export async function createRole(
  deps: RbacDeps,
  access: OrgAccess,
  input: { name: string; description: string; permissions: string[] },
  audit: AuditContext,
): Promise<Role> {
  if (deps.registry.builtInRole(input.name)) throw new AppError(orgErrors.ROLE_EXISTS);
  const permissions = [...new Set(input.permissions)];
  assertKnownPermissions(deps.registry, permissions);
  assertCanGrant(access, new Set(permissions));
  const role = { name: input.name, description: input.description, permissions };
  await deps.database.withTenant(access.orgId, async (db) => {
    if (await repo.findCustomRole(db, input.name)) throw new AppError(orgErrors.ROLE_EXISTS);
    await repo.insertCustomRole(db, access.orgId, role, deps.clock.now().toISOString());
    await recordAuditEvent(db, audit, {
      action: 'role.created',
      target: { type: 'role', id: role.name },
      changes: fieldChanges(null, role),
    });
  });
  return customView(role);
}

export async function updateRole(
  deps: RbacDeps,
  access: OrgAccess,
  name: string,
  input: { name?: string | undefined; description?: string | undefined; permissions?: string[] | undefined },
  audit: AuditContext,
): Promise<Role> {
  if (deps.registry.builtInRole(name)) throw new AppError(orgErrors.BUILT_IN_ROLE);
  if (input.name !== undefined && input.name !== name && deps.registry.builtInRole(input.name)) {
    throw new AppError(orgErrors.ROLE_EXISTS);
  }
  if (input.permissions) assertKnownPermissions(deps.registry, input.permissions);
  const updated = await deps.database.withTenant(access.orgId, async (db) => {
    await repo.lockOrgAccess(db, deps.database.dialect, access.orgId);
    const current = await repo.findCustomRole(db, name);
    if (!current) throw new AppError(orgErrors.ROLE_NOT_FOUND);
    assertCanGrant(access, new Set(current.permissions));
    const next = {
      name: input.name ?? current.name,
      description: input.description ?? current.description,
      permissions: input.permissions ? [...new Set(input.permissions)] : current.permissions,
    };
    assertCanGrant(access, new Set(next.permissions));
    if (next.name !== name && (await repo.findCustomRole(db, next.name)))
      throw new AppError(orgErrors.ROLE_EXISTS);
    await repo.updateCustomRole(db, name, next, deps.clock.now().toISOString());
    await recordAuditEvent(db, audit, {
      action: 'role.updated',
      target: { type: 'role', id: name },
      changes: fieldChanges(
        { name: current.name, description: current.description, permissions: current.permissions },
        next,
      ),
    });
    return next;
  });
  await deps.access.orgChanged(access.orgId);
  return customView(updated);
}

export async function deleteRole(
  deps: RbacDeps,
  access: OrgAccess,
  name: string,
  audit: AuditContext,
): Promise<void> {
  if (deps.registry.builtInRole(name)) throw new AppError(orgErrors.BUILT_IN_ROLE);
  await deps.database.withTenant(access.orgId, async (db) => {
    await repo.lockOrgAccess(db, deps.database.dialect, access.orgId);
    const current = await repo.findCustomRole(db, name);
    if (!current) throw new AppError(orgErrors.ROLE_NOT_FOUND);
    assertCanGrant(access, new Set(current.permissions));
    if (await repo.isRoleInUse(db, name, deps.clock.now().toISOString()))
      throw new AppError(orgErrors.ROLE_IN_USE);
    await repo.deleteCustomRole(db, name);
    await recordAuditEvent(db, audit, { action: 'role.deleted', target: { type: 'role', id: name } });
  });
  await deps.access.orgChanged(access.orgId);
}
