import { type ColumnDefinitionBuilder, type Kysely, sql } from 'kysely';
import { columnTypes } from '../column-types.ts';
import type { Migration } from '../migrate.ts';
import { enableTenantIsolation } from './tenant-isolation.ts';

/**
 * Webhooks (modules/webhooks): an organization's endpoints (URL, subscribed event types, the signing secret and,
 * during a rotation, the previous one — both encrypted, since signing needs them in plain text), the deliveries
 * of messages to them and every attempt of each delivery. All three are org-owned with the row-level security
 * policy; deleting an endpoint deletes its deliveries and their attempts. `active` is an integer 0/1 with a check
 * constraint, not a boolean, which the two dialects read back differently.
 */
export const webhooks: Migration = {
  async up(db: Kysely<unknown>, dialect) {
    const t = columnTypes(dialect);
    const orgId = (c: ColumnDefinitionBuilder) =>
      c.notNull().references('organizations.id').onDelete('cascade');

    await db.schema
      .createTable('webhook_endpoints')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('org_id', t.id, orgId)
      .addColumn('url', 'text', (c) => c.notNull())
      .addColumn('description', 'text', (c) => c.notNull())
      .addColumn('events', 'text', (c) => c.notNull())
      .addColumn('active', 'integer', (c) => c.notNull())
      .addColumn('disabled_reason', t.text)
      .addColumn('disabled_at', t.timestamp)
      .addColumn('secret', 'text', (c) => c.notNull())
      .addColumn('previous_secret', 'text')
      .addColumn('previous_secret_expires_at', t.timestamp)
      .addColumn('failing_since', t.timestamp)
      .addColumn('created_by', t.id, (c) => c.references('users.id').onDelete('set null'))
      .addColumn('created_at', t.timestamp, (c) => c.notNull())
      .addColumn('updated_at', t.timestamp, (c) => c.notNull())
      .addCheckConstraint('webhook_endpoints_active_bit', sql`active in (0, 1)`)
      .addCheckConstraint(
        'webhook_endpoints_disabled_reason_known',
        sql`disabled_reason is null or disabled_reason in ('manual', 'gone', 'failing')`,
      )
      .execute();
    await db.schema
      .createIndex('webhook_endpoints_org')
      .on('webhook_endpoints')
      .columns(['org_id', 'created_at'])
      .execute();

    await db.schema
      .createTable('webhook_deliveries')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('org_id', t.id, orgId)
      .addColumn('endpoint_id', t.id, (c) =>
        c.notNull().references('webhook_endpoints.id').onDelete('cascade'),
      )
      .addColumn('message_id', t.text, (c) => c.notNull())
      .addColumn('event_type', t.text, (c) => c.notNull())
      .addColumn('event_id', t.id)
      .addColumn('payload', 'text', (c) => c.notNull())
      .addColumn('status', t.text, (c) => c.notNull())
      .addColumn('attempts', 'integer', (c) => c.notNull())
      .addColumn('next_attempt_at', t.timestamp)
      .addColumn('last_status_code', 'integer')
      .addColumn('last_latency_ms', 'integer')
      .addColumn('last_response_body', 'text')
      .addColumn('last_error', 'text')
      .addColumn('redelivery_of', t.id)
      .addColumn('created_at', t.timestamp, (c) => c.notNull())
      .addColumn('updated_at', t.timestamp, (c) => c.notNull())
      .addColumn('finished_at', t.timestamp)
      .addCheckConstraint(
        'webhook_deliveries_status_known',
        sql`status in ('pending', 'succeeded', 'failed')`,
      )
      .execute();
    await db.schema
      .createIndex('webhook_deliveries_endpoint')
      .on('webhook_deliveries')
      .columns(['org_id', 'endpoint_id', 'created_at'])
      .execute();
    await db.schema
      .createIndex('webhook_deliveries_created')
      .on('webhook_deliveries')
      .column('created_at')
      .execute();

    await db.schema
      .createTable('webhook_delivery_attempts')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('org_id', t.id, orgId)
      .addColumn('delivery_id', t.id, (c) =>
        c.notNull().references('webhook_deliveries.id').onDelete('cascade'),
      )
      .addColumn('attempt', 'integer', (c) => c.notNull())
      .addColumn('attempted_at', t.timestamp, (c) => c.notNull())
      .addColumn('status_code', 'integer')
      .addColumn('latency_ms', 'integer', (c) => c.notNull())
      .addColumn('response_body', 'text')
      .addColumn('error', 'text')
      .addUniqueConstraint('webhook_delivery_attempts_once', ['delivery_id', 'attempt'])
      .execute();
    await db.schema
      .createIndex('webhook_delivery_attempts_org')
      .on('webhook_delivery_attempts')
      .column('org_id')
      .execute();

    for (const table of ['webhook_endpoints', 'webhook_deliveries', 'webhook_delivery_attempts']) {
      await enableTenantIsolation(db, dialect, table);
    }
  },
};
