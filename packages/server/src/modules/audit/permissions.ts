import { definePermissions } from '../rbac/index.ts';

/** Permissions over an organization's audit log. */
export const auditPermissions = definePermissions({
  'audit:read': {
    description: "Read, verify and export the organization's audit log.",
    roles: ['admin'],
  },
});
