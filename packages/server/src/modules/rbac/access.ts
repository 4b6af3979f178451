import type { FastifyRequest } from 'fastify';
import type { Transaction } from 'kysely';
import { LRUCache } from 'lru-cache';
import type { Broadcast } from '../../core/broadcast.ts';
import { isId } from '../../core/ids.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import type { Database } from '../../db/schema.ts';
import type { Principal } from '../auth/index.ts';
import type { AccessRegistry } from './registry.ts';

/** What the caller of an organization route may do there, decided once per request. */
export interface OrgAccess {
  readonly orgId: string;
  readonly principal: Principal;
  /** The member's role; undefined for an API key, which has scopes instead. */
  readonly role: string | undefined;
  readonly permissions: ReadonlySet<string>;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set on organization routes by the permission check; see `accessOf`. */
    orgAccess: OrgAccess | undefined;
  }
}

/** The access of an organization route's caller (the route declared a permission, so it was checked). */
export function accessOf(request: FastifyRequest): OrgAccess {
  if (!request.orgAccess) throw new Error(`${request.routeOptions.url} declares no permission`);
  return request.orgAccess;
}

/** A member's role and what it lets them do, as cached. */
interface Membership {
  role: string;
  permissions: ReadonlySet<string>;
}

const NOT_A_MEMBER = 'none' as const;
const CHANNEL = 'plinth:access:changed';
/** The most memberships a replica keeps in memory. */
const CACHE_MAX_ENTRIES = 50_000;

export interface AccessResolver {
  /** The caller's access to `orgId`, or undefined when it has none (not a member, another org's key, no org). */
  resolve(orgId: string, principal: Principal): Promise<OrgAccess | undefined>;
  /** A role's permissions in an organization (built-in or custom); undefined when the role does not exist. */
  rolePermissions(db: Transaction<Database>, role: string): Promise<ReadonlySet<string> | undefined>;
  /** Forgets, on every replica, one member's cached access: call after changing or ending a membership. */
  memberChanged(orgId: string, userId: string): Promise<void>;
  /** Forgets, on every replica, every cached access to an organization: after a role change or its deletion. */
  orgChanged(orgId: string): Promise<void>;
  /** Calls `listener` whenever an organization changes on any replica (other caches of its data listen). */
  onOrgChanged(listener: (orgId: string) => void): void;
}

/**
 * Resolves and caches memberships. A cached entry lives `ttlSeconds` at most; changes made through Plinth reach
 * every replica at once through the broadcast, so a permission change takes effect on the next request, and the
 * expiry bounds how long a replica that missed a message (Redis down) can lag.
 */
export async function createAccessResolver(options: {
  database: DatabaseHandle;
  registry: AccessRegistry;
  broadcast: Broadcast;
  ttlSeconds: number;
}): Promise<AccessResolver> {
  const { database, registry, broadcast } = options;
  const cache =
    options.ttlSeconds > 0
      ? new LRUCache<string, Membership | typeof NOT_A_MEMBER>({
          max: CACHE_MAX_ENTRIES,
          ttl: options.ttlSeconds * 1000,
        })
      : undefined;
  const key = (orgId: string, userId: string) => `${orgId}/${userId}`;

  const orgListeners: ((orgId: string) => void)[] = [];
  // Counts invalidations, so that a lookup that read the database before a change committed, and finishes after
  // the change's invalidation, does not put the old membership back into the cache.
  let invalidations = 0;
  await broadcast.subscribe(CHANNEL, (message) => {
    invalidations++;
    const [orgId = '', userId] = message.split('/');
    if (userId) {
      cache?.delete(key(orgId, userId));
      return;
    }
    if (cache) for (const k of cache.keys()) if (k.startsWith(`${orgId}/`)) cache.delete(k);
    for (const listener of orgListeners) listener(orgId);
  });

  const rolePermissions = async (db: Transaction<Database>, role: string) => {
    const builtIn = registry.builtInRole(role);
    if (builtIn) return builtIn;
    const custom = await db
      .selectFrom('roles')
      .select('permissions')
      .where('name', '=', role)
      .executeTakeFirst();
    // A permission a module no longer declares grants nothing, even if a custom role still lists it.
    return custom
      ? new Set((JSON.parse(custom.permissions) as string[]).filter((p) => registry.hasPermission(p)))
      : undefined;
  };

  const lookUp = (orgId: string, userId: string) =>
    database.withTenant(orgId, async (db): Promise<Membership | typeof NOT_A_MEMBER> => {
      const row = await db
        .selectFrom('memberships')
        .select('role')
        .where('user_id', '=', userId)
        .executeTakeFirst();
      if (!row) return NOT_A_MEMBER;
      return { role: row.role, permissions: (await rolePermissions(db, row.role)) ?? new Set() };
    });

  return {
    async resolve(orgId, principal) {
      // Not an id: no such organization, and PostgreSQL must not be asked to compare it with a uuid column.
      if (!isId(orgId)) return undefined;
      if (principal.type === 'apikey') {
        // Scopes were registered permissions when the key was made; one no module declares any more is required
        // by no route, so it grants nothing without being filtered out here on every request.
        return principal.orgId === orgId
          ? { orgId, principal, role: undefined, permissions: principal.scopes }
          : undefined;
      }
      const k = key(orgId, principal.userId);
      let membership = cache?.get(k);
      if (membership === undefined) {
        const seen = invalidations;
        membership = await lookUp(orgId, principal.userId);
        if (seen === invalidations) cache?.set(k, membership);
      }
      if (membership === NOT_A_MEMBER) return undefined;
      return { orgId, principal, role: membership.role, permissions: membership.permissions };
    },
    rolePermissions,
    memberChanged: (orgId, userId) => broadcast.publish(CHANNEL, key(orgId, userId)),
    orgChanged: (orgId) => broadcast.publish(CHANNEL, orgId),
    onOrgChanged: (listener) => {
      orgListeners.push(listener);
    },
  };
}
