import { definePermissions } from '../rbac/index.ts';

/** The permission that lets a member (or an API key) follow the organization's channel, `org:<orgId>`. */
export const REALTIME_READ = 'realtime:read';

/** Permissions of the realtime module. */
export const realtimePermissions = definePermissions({
  [REALTIME_READ]: {
    description: "Receive the organization's events live (WebSocket or server-sent events).",
    roles: ['admin', 'member', 'viewer'],
  },
});
