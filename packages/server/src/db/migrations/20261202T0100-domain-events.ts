import type { Kysely } from 'kysely';
import { columnTypes } from '../column-types.ts';
import type { Migration } from '../migrate.ts';
import { enableTenantIsolation } from './tenant-isolation.ts';

/**
 * The domain event outbox (modules/events): one row per event (`member.added`, `apikey.revoked`, …), written in
 * the transaction of the change it describes, and relayed after commit by the `events.relay` job, which sets
 * `relayed_at`. Org-owned, with the row-level security policy; deleting an organization deletes its events.
 */
export const domainEvents: Migration = {
  async up(db: Kysely<unknown>, dialect) {
    const t = columnTypes(dialect);
    await db.schema
      .createTable('domain_events')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('org_id', t.id, (c) => c.notNull().references('organizations.id').onDelete('cascade'))
      .addColumn('type', t.text, (c) => c.notNull())
      .addColumn('data', 'text', (c) => c.notNull())
      .addColumn('occurred_at', t.timestamp, (c) => c.notNull())
      .addColumn('relayed_at', t.timestamp)
      .execute();
    await db.schema
      .createIndex('domain_events_org')
      .on('domain_events')
      .columns(['org_id', 'occurred_at'])
      .execute();
    await db.schema.createIndex('domain_events_occurred').on('domain_events').column('occurred_at').execute();
    await enableTenantIsolation(db, dialect, 'domain_events');
  },
};
