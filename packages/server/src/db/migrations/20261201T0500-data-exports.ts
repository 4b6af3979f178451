import { type Kysely, sql } from 'kysely';
import { columnTypes } from '../column-types.ts';
import type { Migration } from '../migrate.ts';

/**
 * Data exports (modules/privacy): a person's request for everything Plinth holds about them, built by a
 * background job into a zip archive kept in the row until it is downloaded (once) or expires. The archive lives in
 * the database so that every replica can serve it with no shared file system; it is removed on download and by
 * retention.
 */
export const dataExports: Migration = {
  async up(db: Kysely<unknown>, dialect) {
    const t = columnTypes(dialect);
    await db.schema
      .createTable('data_exports')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('user_id', t.id, (c) => c.notNull().references('users.id').onDelete('cascade'))
      .addColumn('state', t.text, (c) => c.notNull())
      .addColumn('requested_at', t.timestamp, (c) => c.notNull())
      .addColumn('completed_at', t.timestamp)
      .addColumn('expires_at', t.timestamp)
      .addColumn('downloaded_at', t.timestamp)
      .addColumn('archive', dialect === 'postgres' ? 'bytea' : 'blob')
      .addColumn('byte_size', 'integer')
      .addCheckConstraint(
        'data_exports_state_known',
        sql`state in ('pending', 'ready', 'downloaded', 'expired', 'failed')`,
      )
      .execute();
    await db.schema
      .createIndex('data_exports_user')
      .on('data_exports')
      .columns(['user_id', 'requested_at'])
      .execute();
  },
};
