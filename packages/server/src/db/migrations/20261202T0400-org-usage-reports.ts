import type { Kysely } from 'kysely';
import { columnTypes } from '../column-types.ts';
import type { Migration } from '../migrate.ts';
import { enableTenantIsolation } from './tenant-isolation.ts';

/**
 * Daily usage reports (modules/reports): one row per organization and UTC day, holding the day's figures as
 * JSON. Org-owned with the row-level security policy; deleting the organization deletes its reports. The unique
 * `(org_id, day)` index is what makes a second computation of the same day impossible, and serves the list by
 * day.
 */
export const orgUsageReports: Migration = {
  async up(db: Kysely<unknown>, dialect) {
    const t = columnTypes(dialect);
    await db.schema
      .createTable('org_usage_reports')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('org_id', t.id, (c) => c.notNull().references('organizations.id').onDelete('cascade'))
      .addColumn('day', t.text, (c) => c.notNull())
      .addColumn('figures', 'text', (c) => c.notNull())
      .addColumn('computed_at', t.timestamp, (c) => c.notNull())
      .execute();
    await db.schema
      .createIndex('org_usage_reports_org_day')
      .on('org_usage_reports')
      .columns(['org_id', 'day'])
      .unique()
      .execute();
    // Retention deletes by computation time across organizations.
    await db.schema
      .createIndex('org_usage_reports_computed')
      .on('org_usage_reports')
      .column('computed_at')
      .execute();
    await enableTenantIsolation(db, dialect, 'org_usage_reports');
  },
};
