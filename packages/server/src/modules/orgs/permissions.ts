import { definePermissions } from '../rbac/index.ts';

/** Permissions over the organization itself, its members and its invitations. */
export const orgPermissions = definePermissions({
  'org:read': {
    description: "See the organization's name, slug and plan.",
    roles: ['admin', 'member', 'viewer'],
  },
  'org:update': { description: "Change the organization's name and slug.", roles: ['admin'] },
  'org:delete': { description: 'Delete the organization and everything it owns.', roles: [] },
  'members:read': {
    description: 'See who the members are and their roles.',
    roles: ['admin', 'member', 'viewer'],
  },
  'members:update': { description: "Change a member's role.", roles: ['admin'] },
  'members:remove': { description: 'Remove a member from the organization.', roles: ['admin'] },
  'invitations:read': { description: 'See pending invitations.', roles: ['admin'] },
  'invitations:create': { description: 'Invite someone by email.', roles: ['admin'] },
  'invitations:revoke': { description: 'Revoke a pending invitation.', roles: ['admin'] },
});
