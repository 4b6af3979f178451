import { type ApiKey, apiKeyErrors, coreErrors, orgErrors } from '@plinth/shared';
import type { Selectable, Transaction } from 'kysely';
import type { Clock } from '../../core/clock.ts';
import { AppError } from '../../core/errors.ts';
import { newId } from '../../core/ids.ts';
import { parseRange } from '../../core/ip-ranges.ts';
import { type ListSpec, type NoFilters, paginate } from '../../core/pagination.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import type { ApiKeysTable, Database } from '../../db/schema.ts';
import { type AuditContext, fieldChanges, recordAuditEvent } from '../audit/record.ts';
import type { DomainEvents } from '../events/index.ts';
import type { AccessRegistry, OrgAccess } from '../rbac/index.ts';
import type { ApiKeyStore } from './apikey.store.ts';
import { formatKey, keyPrefix, newSecret } from './key-format.ts';

/** What the API-key services need. */
export interface ApiKeyDeps {
  database: DatabaseHandle;
  clock: Clock;
  registry: AccessRegistry;
  store: ApiKeyStore;
  /** How long a rotated key's old secret keeps working by default, in seconds. */
  rotationGraceSeconds: number;
  /** The domain event outbox: `apikey.created`, `apikey.rotated` and `apikey.revoked` are published here. */
  events: DomainEvents;
}

type ApiKeyRow = Selectable<ApiKeysTable>;

function toApiKey(row: ApiKeyRow, now: Date): ApiKey {
  const expired = row.expires_at !== null && row.expires_at <= now.toISOString();
  return {
    id: row.id,
    name: row.name,
    prefix: keyPrefix(row.id),
    scopes: JSON.parse(row.scopes) as string[],
    allowedIps: row.allowed_ips === null ? null : (JSON.parse(row.allowed_ips) as string[]),
    status: row.revoked_at !== null ? 'revoked' : expired ? 'expired' : 'active',
    expiresAt: row.expires_at,
    createdBy: row.created_by,
    createdAt: row.created_at,
    rotatedAt: row.rotated_at,
    previousSecretExpiresAt: row.previous_secret_hash === null ? null : row.previous_secret_expires_at,
    lastUsedAt: row.last_used_at,
    usageCount: Number(row.usage_count),
    revokedAt: row.revoked_at,
  };
}

export const apiKeysList: ListSpec<'createdAt' | 'name', NoFilters> = {
  sort: { createdAt: 'created_at', name: 'name' },
  defaultSort: '-createdAt',
};

export async function listApiKeys(
  deps: ApiKeyDeps,
  access: OrgAccess,
  query: { limit: number; cursor?: string | undefined; sort: string },
): Promise<{ data: ApiKey[]; nextCursor: string | null }> {
  const page = await deps.database.withTenant(access.orgId, (db) =>
    paginate(db.selectFrom('api_keys').selectAll(), query, apiKeysList),
  );
  const now = deps.clock.now();
  return { data: page.data.map((row) => toApiKey(row, now)), nextCursor: page.nextCursor };
}

async function findKey(db: Transaction<Database>, keyId: string): Promise<ApiKeyRow> {
  const row = await db.selectFrom('api_keys').selectAll().where('id', '=', keyId).executeTakeFirst();
  if (!row) throw new AppError(apiKeyErrors.API_KEY_NOT_FOUND);
  return row;
}

export async function getApiKey(deps: ApiKeyDeps, access: OrgAccess, keyId: string): Promise<ApiKey> {
  const row = await deps.database.withTenant(access.orgId, (db) => findKey(db, keyId));
  return toApiKey(row, deps.clock.now());
}

/**
 * Whoever receives a key's secret (creating or rotating it) gets its powers, so only a person may, and only for
 * scopes they hold themselves: a key cannot mint or re-key keys, and a member cannot obtain, by rotating it, a
 * key more powerful than their role. Returns the person's user id.
 */
function assertMayHandOut(access: OrgAccess, scopes: readonly string[]): string {
  if (access.principal.type !== 'user') throw new AppError(apiKeyErrors.API_KEY_NOT_ALLOWED);
  const notHeld = scopes.filter((s) => !access.permissions.has(s));
  if (notHeld.length > 0) {
    throw new AppError(apiKeyErrors.SCOPE_NOT_HELD, { detail: `You do not hold: ${notHeld.join(', ')}.` });
  }
  return access.principal.userId;
}

/**
 * Creates a key whose scopes are registered permissions the creator holds (a person: keys cannot mint keys),
 * optionally expiring and limited to IP ranges. Returns it with the full key, which is never shown again. The
 * `apikey.created` event is written in the same transaction; it records the key's settings, never its secret.
 */
export async function createApiKey(
  deps: ApiKeyDeps,
  access: OrgAccess,
  input: {
    name: string;
    scopes: string[];
    expiresAt?: string | undefined;
    allowedIps?: string[] | undefined;
  },
  audit: AuditContext,
): Promise<ApiKey & { key: string }> {
  if (access.principal.type !== 'user') throw new AppError(apiKeyErrors.API_KEY_NOT_ALLOWED);
  const scopes = [...new Set(input.scopes)].sort();
  const unknown = scopes.filter((s) => !deps.registry.hasPermission(s));
  if (unknown.length > 0) {
    throw new AppError(orgErrors.UNKNOWN_PERMISSION, {
      detail: `Unknown permissions: ${unknown.join(', ')}.`,
    });
  }
  const creatorId = assertMayHandOut(access, scopes);
  const badIps = (input.allowedIps ?? []).flatMap((entry, i) =>
    parseRange(entry) ? [] : [{ path: `body.allowedIps.${i}`, message: 'Not an IP address or CIDR range.' }],
  );
  const now = deps.clock.now();
  const expiresAt = input.expiresAt === undefined ? null : new Date(input.expiresAt).toISOString();
  const badExpiry =
    expiresAt !== null && expiresAt <= now.toISOString()
      ? [{ path: 'body.expiresAt', message: 'Must be in the future.' }]
      : [];
  if (badIps.length + badExpiry.length > 0) {
    throw new AppError(coreErrors.VALIDATION_FAILED, { errors: [...badIps, ...badExpiry] });
  }

  const secret = newSecret();
  const row: ApiKeyRow = {
    id: newId(),
    org_id: access.orgId,
    name: input.name,
    secret_hash: deps.store.hash(secret),
    previous_secret_hash: null,
    previous_secret_expires_at: null,
    scopes: JSON.stringify(scopes),
    allowed_ips: input.allowedIps ? JSON.stringify(input.allowedIps) : null,
    expires_at: expiresAt,
    created_by: creatorId,
    created_at: now.toISOString(),
    rotated_at: null,
    last_used_at: null,
    usage_count: 0,
    revoked_at: null,
  };
  await deps.database.withTenant(access.orgId, async (db) => {
    await db.insertInto('api_keys').values(row).execute();
    await recordAuditEvent(db, audit, {
      action: 'apikey.created',
      target: { type: 'apikey', id: row.id },
      changes: fieldChanges(null, {
        name: row.name,
        scopes,
        allowedIps: input.allowedIps ?? null,
        expiresAt,
      }),
    });
    await deps.events.publish(db, { orgId: access.orgId, type: 'apikey.created', data: toApiKey(row, now) });
  });
  return { ...toApiKey(row, now), key: formatKey(row.id, secret) };
}

/**
 * Gives a key a new secret. The old one keeps working for `gracePeriodSeconds` (the installation default when
 * omitted), so that clients can be updated without an outage; a secret replaced earlier stops at once. The
 * `apikey.rotated` event says that the secret changed (redacted) and until when the old one works.
 */
export async function rotateApiKey(
  deps: ApiKeyDeps,
  access: OrgAccess,
  keyId: string,
  gracePeriodSeconds: number | undefined,
  audit: AuditContext,
): Promise<ApiKey & { key: string }> {
  const now = deps.clock.now();
  const secret = newSecret();
  const grace = gracePeriodSeconds ?? deps.rotationGraceSeconds;
  const row = await deps.database.withTenant(access.orgId, async (db) => {
    const current = await findKey(db, keyId);
    if (current.revoked_at !== null) {
      throw new AppError(apiKeyErrors.API_KEY_NOT_FOUND, { detail: 'The key is revoked; create a new one.' });
    }
    assertMayHandOut(access, JSON.parse(current.scopes) as string[]);
    const changes = {
      secret_hash: deps.store.hash(secret),
      previous_secret_hash: grace > 0 ? current.secret_hash : null,
      previous_secret_expires_at: grace > 0 ? new Date(now.getTime() + grace * 1000).toISOString() : null,
      rotated_at: now.toISOString(),
    };
    await db.updateTable('api_keys').set(changes).where('id', '=', keyId).execute();
    await recordAuditEvent(db, audit, {
      action: 'apikey.rotated',
      target: { type: 'apikey', id: keyId },
      changes: fieldChanges(
        {
          secretHash: current.secret_hash,
          previousSecretExpiresAt: current.previous_secret_expires_at,
          rotatedAt: current.rotated_at,
        },
        {
          secretHash: changes.secret_hash,
          previousSecretExpiresAt: changes.previous_secret_expires_at,
          rotatedAt: changes.rotated_at,
        },
      ),
    });
    const rotated = { ...current, ...changes };
    await deps.events.publish(db, {
      orgId: access.orgId,
      type: 'apikey.rotated',
      data: toApiKey(rotated, now),
    });
    return rotated;
  });
  await deps.store.keyChanged(keyId);
  return { ...toApiKey(row, now), key: formatKey(row.id, secret) };
}

/**
 * Revokes a key: it stops working at once on every replica. Revoking a revoked key changes nothing, and so
 * writes no `apikey.revoked` event.
 */
export async function revokeApiKey(
  deps: ApiKeyDeps,
  access: OrgAccess,
  keyId: string,
  audit: AuditContext,
): Promise<void> {
  await deps.database.withTenant(access.orgId, async (db) => {
    const current = await findKey(db, keyId);
    if (current.revoked_at !== null) return;
    const now = deps.clock.now();
    const revokedAt = now.toISOString();
    await db.updateTable('api_keys').set({ revoked_at: revokedAt }).where('id', '=', keyId).execute();
    await recordAuditEvent(db, audit, {
      action: 'apikey.revoked',
      target: { type: 'apikey', id: keyId },
      changes: fieldChanges({ revokedAt: null }, { revokedAt }),
    });
    await deps.events.publish(db, {
      orgId: access.orgId,
      type: 'apikey.revoked',
      data: toApiKey({ ...current, revoked_at: revokedAt }, now),
    });
  });
  await deps.store.keyChanged(keyId);
}
