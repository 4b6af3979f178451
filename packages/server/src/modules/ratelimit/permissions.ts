import { definePermissions } from '../rbac/index.ts';

/** Permissions over an organization's rate-limit usage. */
export const rateLimitPermissions = definePermissions({
  'usage:read': {
    description: "See the organization's rate limits and how much of them its members and API keys use.",
    roles: ['admin'],
  },
});
