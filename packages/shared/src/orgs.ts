import { z } from 'zod';
import { Email, Password, PersonName } from './auth.ts';

/**
 * Request and response schemas of organizations, members, invitations, roles and permissions
 * (`/api/v1/orgs/…`, `/api/v1/invitations/accept`, `/api/v1/permissions`). Request bodies are strict: a field
 * the endpoint does not take (`orgId`, `ownerId`, `plan`, …) is refused with 400 rather than silently ignored.
 */

/** The built-in plans; an installation may add its own (`ORG_PLANS`). */
export const DEFAULT_PLANS = ['free', 'basic', 'premium', 'enterprise'] as const;

/** The built-in roles every organization has; modules may add more. */
export const BUILT_IN_ROLES = ['owner', 'admin', 'member', 'viewer'] as const;

export const OrgName = z
  .string()
  .trim()
  .min(1, { error: 'Enter a name.' })
  .max(100, { error: 'A name has at most 100 characters.' })
  .meta({ description: 'Display name of the organization.' });

export const OrgSlug = z
  .string()
  .regex(/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/, {
    error: 'Use 1–63 lower-case letters, digits and inner hyphens.',
  })
  .meta({ description: 'Unique URL-safe name.', example: 'acme-logistics' });

/** A role name: a built-in one, one a module adds, or an organization's own. */
export const RoleName = z
  .string()
  .regex(/^[a-z][a-z0-9_-]{0,39}$/, {
    error: 'Use up to 40 lower-case letters, digits, hyphens and underscores, starting with a letter.',
  })
  .meta({ description: 'Role name.', example: 'dispatcher' });

/** A permission: `resource:action`. */
export const PermissionName = z
  .string()
  .regex(/^[a-z][a-z0-9_-]*:[a-z][a-z0-9_-]*$/, { error: 'A permission looks like `resource:action`.' })
  .max(80)
  .meta({ description: 'A permission, `resource:action`.', example: 'members:read' });

export const Organization = z
  .object({
    id: z.uuid(),
    name: z.string(),
    slug: z.string(),
    plan: z.string().meta({ description: 'The plan, which selects rate-limit tiers and quotas.' }),
    auditRetentionDays: z.number().int().nullable().meta({
      description:
        "Days its audit events are kept before they are archived and removed; null follows the installation's default (`AUDIT_RETENTION_DAYS`).",
    }),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .meta({ id: 'Organization' });
export type Organization = z.infer<typeof Organization>;

/** An organization as one of its members sees it in their list: with their own role. */
export const MyOrganization = Organization.extend({
  role: z.string().meta({ description: 'Your role in it.' }),
}).meta({ id: 'MyOrganization' });
export type MyOrganization = z.infer<typeof MyOrganization>;

export const CreateOrgBody = z.strictObject({ name: OrgName, slug: OrgSlug.optional() });
/** The shortest audit retention an organization may choose, in days. */
export const AUDIT_RETENTION_MIN_DAYS = 30;

export const UpdateOrgBody = z
  .strictObject({
    name: OrgName.optional(),
    slug: OrgSlug.optional(),
    auditRetentionDays: z
      .number()
      .int()
      .min(AUDIT_RETENTION_MIN_DAYS, {
        error: `Keep audit events at least ${AUDIT_RETENTION_MIN_DAYS} days.`,
      })
      .max(36_500)
      .nullable()
      .optional()
      .meta({ description: "Days to keep audit events; null returns to the installation's default." }),
  })
  .refine((b) => b.name !== undefined || b.slug !== undefined || b.auditRetentionDays !== undefined, {
    error: 'Change at least one field.',
  });
/** The operator's changes to any organization: its plan, which its own members cannot change. */
export const AdminUpdateOrgBody = z.strictObject({
  plan: z.string().min(1).max(40).meta({ description: 'One of the configured plans.' }),
});

export const Member = z
  .object({
    userId: z.uuid(),
    email: z.string(),
    name: z.string(),
    role: z.string(),
    joinedAt: z.string(),
  })
  .meta({ id: 'Member' });
export type Member = z.infer<typeof Member>;

export const UpdateMemberBody = z.strictObject({ role: RoleName });

export const Invitation = z
  .object({
    id: z.uuid(),
    email: z.string(),
    role: z.string(),
    invitedBy: z.uuid().nullable(),
    createdAt: z.string(),
    expiresAt: z.string(),
  })
  .meta({ id: 'Invitation' });
export type Invitation = z.infer<typeof Invitation>;

export const CreateInvitationBody = z.strictObject({ email: Email, role: RoleName });

/**
 * Accepting an invitation: signed in as the invited address, only the token; without an account yet, also the
 * new account's name and password (the account is created with the address already verified, since the token
 * proves it).
 */
export const AcceptInvitationBody = z.strictObject({
  token: z.string().min(16).max(512),
  name: PersonName.optional(),
  password: Password.optional(),
});
export const AcceptInvitationResponse = z
  .object({
    orgId: z.uuid(),
    role: z.string(),
    userId: z.uuid(),
    accountCreated: z.boolean().meta({ description: 'Whether accepting created the account.' }),
  })
  .meta({ id: 'AcceptedInvitation' });

export const Permission = z
  .object({
    name: z.string(),
    description: z.string(),
    roles: z.array(z.string()).meta({ description: 'The built-in roles that hold it.' }),
  })
  .meta({ id: 'Permission' });

export const Role = z
  .object({
    name: z.string(),
    description: z.string(),
    permissions: z.array(z.string()),
    builtIn: z.boolean().meta({ description: 'Built-in roles are defined by Plinth and its modules.' }),
  })
  .meta({ id: 'Role' });
export type Role = z.infer<typeof Role>;

const RoleDescription = z.string().trim().max(200);
export const CreateRoleBody = z.strictObject({
  name: RoleName,
  description: RoleDescription.default(''),
  permissions: z.array(PermissionName).max(200),
});
export const UpdateRoleBody = z
  .strictObject({
    name: RoleName.optional(),
    description: RoleDescription.optional(),
    permissions: z.array(PermissionName).max(200).optional(),
  })
  .refine((b) => Object.values(b).some((v) => v !== undefined), { error: 'Change at least one field.' });
