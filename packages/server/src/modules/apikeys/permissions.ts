import { definePermissions } from '../rbac/index.ts';

/** Permissions over an organization's API keys. */
export const apiKeyPermissions = definePermissions({
  'apikeys:read': { description: 'See API keys (never their secrets).', roles: ['admin'] },
  'apikeys:create': { description: 'Create API keys with scopes you hold.', roles: ['admin'] },
  'apikeys:rotate': {
    description: "Replace a key's secret, the old one working for a grace period.",
    roles: ['admin'],
  },
  'apikeys:revoke': { description: 'Revoke an API key at once.', roles: ['admin'] },
});
