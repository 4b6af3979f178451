import { PermissionName, RoleName } from '@plinth/shared';

/**
 * The permissions and built-in roles of the installation, as modules declare them. A permission is a
 * `resource:action` string with a one-line description; a module declares its own next to its routes
 * (`<module>/permissions.ts`) and says which built-in roles hold each. `owner` holds every permission.
 */
export interface PermissionStatement {
  readonly name: string;
  readonly description: string;
  /** The built-in roles besides `owner` that hold it, e.g. `['admin', 'member']`. */
  readonly roles: readonly string[];
}

/** A built-in role a module adds (the fleet module adds `mechanic`, `customer`, …). */
export interface RoleDefinition {
  readonly name: string;
  readonly description: string;
  /** Permissions it holds besides those whose statements name it in `roles`. */
  readonly permissions?: readonly string[];
}

/**
 * Declares a module's permissions: `{ 'members:read': { description, roles } }` → statements, checked for the
 * `resource:action` shape.
 */
export function definePermissions(
  specs: Record<string, { description: string; roles: readonly string[] }>,
): PermissionStatement[] {
  return Object.entries(specs).map(([name, spec]) => {
    if (!PermissionName.safeParse(name).success)
      throw new Error(`"${name}" is not a resource:action permission`);
    return { name, ...spec };
  });
}

const CORE_ROLES: readonly RoleDefinition[] = [
  { name: 'owner', description: 'Everything, including deleting the organization.' },
  {
    name: 'admin',
    description: 'Manages the organization: its settings, members, invitations, roles and API keys.',
  },
  { name: 'member', description: "Works with the organization's data." },
  { name: 'viewer', description: "Reads the organization's data and changes nothing." },
];

export interface AccessRegistry {
  addPermissions(statements: readonly PermissionStatement[]): void;
  addRole(role: RoleDefinition): void;
  hasPermission(name: string): boolean;
  /** Every permission, sorted by name, with the built-in roles that hold it. */
  permissions(): { name: string; description: string; roles: string[] }[];
  /** The built-in roles, in declaration order, with their permissions. */
  builtInRoles(): { name: string; description: string; permissions: ReadonlySet<string> }[];
  /** A built-in role's permissions; undefined when `role` is not built in. */
  builtInRole(role: string): ReadonlySet<string> | undefined;
}

/** A registry holding the core roles (`owner`, `admin`, `member`, `viewer`) and no permissions yet. */
export function createAccessRegistry(): AccessRegistry {
  const statements = new Map<string, PermissionStatement>();
  const roles = new Map<string, RoleDefinition>(CORE_ROLES.map((r) => [r.name, r]));
  // Derived from the two maps; rebuilt after each declaration (all of which happen at start-up).
  let rolePermissions = new Map<string, ReadonlySet<string>>();

  const derive = () => {
    rolePermissions = new Map(
      [...roles.values()].map((role) => {
        const held =
          role.name === 'owner'
            ? [...statements.keys()]
            : [
                ...[...statements.values()].filter((s) => s.roles.includes(role.name)).map((s) => s.name),
                ...(role.permissions ?? []),
              ];
        return [role.name, new Set(held)];
      }),
    );
  };
  derive();

  return {
    addPermissions(added) {
      for (const statement of added) {
        if (statements.has(statement.name)) throw new Error(`permission ${statement.name} is declared twice`);
        statements.set(statement.name, statement);
      }
      derive();
    },
    addRole(role) {
      if (!RoleName.safeParse(role.name).success) throw new Error(`"${role.name}" is not a valid role name`);
      if (roles.has(role.name)) throw new Error(`role ${role.name} is declared twice`);
      for (const permission of role.permissions ?? []) {
        if (!statements.has(permission))
          throw new Error(`role ${role.name} names unknown permission ${permission}`);
      }
      roles.set(role.name, role);
      derive();
    },
    hasPermission: (name) => statements.has(name),
    permissions: () =>
      [...statements.values()]
        .sort((a, b) => (a.name < b.name ? -1 : 1))
        .map((s) => ({
          name: s.name,
          description: s.description,
          roles: [...roles.keys()].filter((r) => rolePermissions.get(r)?.has(s.name)),
        })),
    builtInRoles: () =>
      [...roles.values()].map((r) => ({
        name: r.name,
        description: r.description,
        permissions: rolePermissions.get(r.name) ?? new Set<string>(),
      })),
    builtInRole: (role) => rolePermissions.get(role),
  };
}
