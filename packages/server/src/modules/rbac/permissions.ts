import { definePermissions } from './registry.ts';

/** Permissions over an organization's custom roles. */
export const rbacPermissions = definePermissions({
  'roles:read': {
    description: "See the organization's roles and their permissions.",
    roles: ['admin', 'member', 'viewer'],
  },
  'roles:create': { description: 'Define a custom role.', roles: ['admin'] },
  'roles:update': {
    description: "Change a custom role's name, description or permissions.",
    roles: ['admin'],
  },
  'roles:delete': { description: 'Delete a custom role nobody holds.', roles: ['admin'] },
});
