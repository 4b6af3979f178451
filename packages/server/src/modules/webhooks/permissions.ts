import { definePermissions } from '../rbac/index.ts';

/** Permissions over an organization's webhook endpoints. */
export const webhookPermissions = definePermissions({
  'webhooks:manage': {
    description:
      'Register, change, re-key, test and remove webhook endpoints, and see their deliveries (and redeliver).',
    roles: ['admin'],
  },
});
