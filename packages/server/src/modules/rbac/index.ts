import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { Authenticate } from '../auth/index.ts';
import { enforcePermissions } from './authorize.ts';
import { rbacPermissions } from './permissions.ts';
import { permissionRoutes, roleRoutes } from './role.routes.ts';
import type { RbacDeps } from './role.service.ts';

export { type AccessResolver, accessOf, createAccessResolver, type OrgAccess } from './access.ts';
export {
  type AccessRegistry,
  createAccessRegistry,
  definePermissions,
  type PermissionStatement,
  type RoleDefinition,
} from './registry.ts';
export { lockOrgAccess } from './role.repo.ts';
export { OrgParams } from './role.routes.ts';
export { assertCanGrant, type RbacDeps, requireRolePermissions } from './role.service.ts';
export { type RowRule, type RowRules, rowCondition } from './row-rules.ts';

/** The OpenAPI tags of this module's routes. */
export const rbacTags = [
  { name: 'Roles', description: 'Roles and the permissions they grant, built-in and custom.' },
];

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * The installation's permissions and built-in roles. A module declares its own before registering its routes:
     * `app.accessRegistry.addPermissions(vehiclePermissions)`, `app.accessRegistry.addRole({ name: 'mechanic', … })`.
     */
    accessRegistry: RbacDeps['registry'];
  }
}

async function rbac(
  app: FastifyInstance,
  { deps, authenticate }: { deps: RbacDeps; authenticate: Authenticate },
): Promise<void> {
  deps.registry.addPermissions(rbacPermissions);
  app.decorate('accessRegistry', deps.registry);
  enforcePermissions(app, { registry: deps.registry, resolver: deps.access, authenticate });
  await app.register(roleRoutes, { deps, prefix: '/api/v1' });
  await app.register(permissionRoutes, { registry: deps.registry, prefix: '/api/v1' });
}

/**
 * Role-based access control: the permission registry, built-in and custom roles, the declarative permission
 * check of organization routes (`config: { permission }`), and the row-level rule hook for domain modules.
 */
export const rbacModule = fp(rbac, { name: 'plinth-rbac', dependencies: ['plinth-errors', 'plinth-auth'] });
