import { defineErrors } from './errors.ts';

/** Errors of organizations, members, invitations, roles and permissions. */
export const orgErrors = defineErrors({
  ORG_NOT_FOUND: { status: 404, title: 'No such organization.' },
  SLUG_TAKEN: { status: 409, title: 'Another organization already uses this slug.' },
  UNKNOWN_PLAN: { status: 400, title: 'No such plan on this installation.' },
  MEMBER_NOT_FOUND: { status: 404, title: 'No such member of this organization.' },
  ALREADY_MEMBER: { status: 409, title: 'This person is already a member of the organization.' },
  LAST_OWNER: { status: 409, title: 'An organization must keep at least one owner.' },
  INVITATION_NOT_FOUND: { status: 404, title: 'No such pending invitation.' },
  INVALID_INVITATION: { status: 400, title: 'The invitation is invalid, expired, revoked or already used.' },
  INVITATION_FOR_ANOTHER_ACCOUNT: {
    status: 403,
    title: 'This invitation was sent to another email address; sign in with that account.',
  },
  SIGN_IN_TO_ACCEPT: {
    status: 401,
    title: 'An account with this email address exists; sign in to accept the invitation.',
  },
  ROLE_NOT_FOUND: { status: 404, title: 'No such role in this organization.' },
  UNKNOWN_ROLE: { status: 400, title: 'No role of this name exists in the organization.' },
  ROLE_EXISTS: { status: 409, title: 'A role with this name already exists.' },
  ROLE_IN_USE: { status: 409, title: 'Members or invitations still have this role.' },
  BUILT_IN_ROLE: { status: 409, title: 'Built-in roles cannot be changed or deleted.' },
  UNKNOWN_PERMISSION: { status: 400, title: 'No such permission.' },
  PERMISSION_DENIED: { status: 403, title: 'You lack the permission this action needs.' },
  ROLE_NOT_GRANTABLE: {
    status: 403,
    title: 'You cannot grant, change or remove a role with permissions you do not hold yourself.',
  },
});

/** Errors of API keys, as managed and as used to authenticate. */
export const apiKeyErrors = defineErrors({
  API_KEY_NOT_FOUND: { status: 404, title: 'No such API key.' },
  INVALID_API_KEY: { status: 401, title: 'The API key is invalid, expired or revoked.' },
  API_KEY_IP_NOT_ALLOWED: { status: 403, title: 'This API key may not be used from this address.' },
  API_KEY_IN_URL: {
    status: 400,
    title: 'API keys must not be sent in the URL; use the Authorization or X-API-Key header.',
  },
  API_KEY_NOT_ALLOWED: {
    status: 403,
    title: 'API keys cannot call this endpoint; it needs a signed-in user.',
  },
  SCOPE_NOT_HELD: { status: 403, title: "An API key's scopes must be permissions you hold yourself." },
});
