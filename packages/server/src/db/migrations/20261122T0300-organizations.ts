import type { ColumnDefinitionBuilder, Kysely } from 'kysely';
import { columnTypes } from '../column-types.ts';
import type { Migration } from '../migrate.ts';
import { enableTenantIsolation } from './tenant-isolation.ts';

/**
 * Organizations (the tenants), their members, custom roles, invitations and API keys. Every table but
 * `organizations` is org-owned: it has `org_id`, is reached only through `withTenant`, and on PostgreSQL carries
 * the row-level security policy. Deleting an organization deletes everything it owns. Permission lists are JSON
 * arrays in text columns, which both dialects store and compare alike.
 */
export const organizations: Migration = {
  async up(db: Kysely<unknown>, dialect) {
    const t = columnTypes(dialect);
    const orgId = (c: ColumnDefinitionBuilder) =>
      c.notNull().references('organizations.id').onDelete('cascade');

    await db.schema
      .createTable('organizations')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('name', t.text, (c) => c.notNull())
      .addColumn('slug', t.text, (c) => c.notNull().unique())
      .addColumn('plan', t.text, (c) => c.notNull())
      .addColumn('created_at', t.timestamp, (c) => c.notNull())
      .addColumn('updated_at', t.timestamp, (c) => c.notNull())
      .execute();

    await db.schema
      .createTable('memberships')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('org_id', t.id, orgId)
      .addColumn('user_id', t.id, (c) => c.notNull().references('users.id').onDelete('cascade'))
      .addColumn('role', t.text, (c) => c.notNull())
      .addColumn('created_at', t.timestamp, (c) => c.notNull())
      .addColumn('updated_at', t.timestamp, (c) => c.notNull())
      .addUniqueConstraint('memberships_org_user', ['org_id', 'user_id'])
      .execute();
    await db.schema.createIndex('memberships_user').on('memberships').column('user_id').execute();

    await db.schema
      .createTable('roles')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('org_id', t.id, orgId)
      .addColumn('name', t.text, (c) => c.notNull())
      .addColumn('description', 'text', (c) => c.notNull())
      .addColumn('permissions', 'text', (c) => c.notNull())
      .addColumn('created_at', t.timestamp, (c) => c.notNull())
      .addColumn('updated_at', t.timestamp, (c) => c.notNull())
      .addUniqueConstraint('roles_org_name', ['org_id', 'name'])
      .execute();

    await db.schema
      .createTable('invitations')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('org_id', t.id, orgId)
      .addColumn('email', t.text, (c) => c.notNull())
      .addColumn('role', t.text, (c) => c.notNull())
      .addColumn('token_hash', 'text', (c) => c.notNull().unique())
      .addColumn('invited_by', t.id, (c) => c.references('users.id').onDelete('set null'))
      .addColumn('created_at', t.timestamp, (c) => c.notNull())
      .addColumn('expires_at', t.timestamp, (c) => c.notNull())
      .addColumn('accepted_at', t.timestamp)
      .addColumn('accepted_by', t.id, (c) => c.references('users.id').onDelete('set null'))
      .addColumn('revoked_at', t.timestamp)
      .execute();
    await db.schema
      .createIndex('invitations_org')
      .on('invitations')
      .columns(['org_id', 'created_at'])
      .execute();

    await db.schema
      .createTable('api_keys')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('org_id', t.id, orgId)
      .addColumn('name', t.text, (c) => c.notNull())
      .addColumn('secret_hash', 'text', (c) => c.notNull())
      .addColumn('previous_secret_hash', 'text')
      .addColumn('previous_secret_expires_at', t.timestamp)
      .addColumn('scopes', 'text', (c) => c.notNull())
      .addColumn('allowed_ips', 'text')
      .addColumn('expires_at', t.timestamp)
      .addColumn('created_by', t.id, (c) => c.references('users.id').onDelete('set null'))
      .addColumn('created_at', t.timestamp, (c) => c.notNull())
      .addColumn('rotated_at', t.timestamp)
      .addColumn('last_used_at', t.timestamp)
      .addColumn('usage_count', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('revoked_at', t.timestamp)
      .execute();
    await db.schema.createIndex('api_keys_org').on('api_keys').columns(['org_id', 'created_at']).execute();

    // Each table's org_id leads one of its indexes above (a unique constraint or a listing index).
    for (const table of ['memberships', 'roles', 'invitations', 'api_keys']) {
      await enableTenantIsolation(db, dialect, table);
    }
  },
};
