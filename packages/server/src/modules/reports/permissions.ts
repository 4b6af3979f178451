import { definePermissions } from '../rbac/index.ts';

/** Permissions over an organization's usage reports (owners hold every permission). */
export const reportPermissions = definePermissions({
  'reports:read': {
    description: "Read the organization's daily usage reports, and receive them by email.",
    roles: ['admin'],
  },
});
