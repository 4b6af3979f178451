import type { Kysely } from 'kysely';
import { newId } from '../../core/ids.ts';
import { columnTypes } from '../column-types.ts';
import type { Migration } from '../migrate.ts';

/** The installation's identity: one row, created with the schema, shared by every replica on this database. */
export const installation: Migration = {
  async up(db: Kysely<unknown>, dialect) {
    const t = columnTypes(dialect);
    await db.schema
      .createTable('installation')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('created_at', t.timestamp, (c) => c.notNull())
      .execute();
    await (db as Kysely<{ installation: { id: string; created_at: string } }>)
      .insertInto('installation')
      .values({ id: newId(), created_at: new Date().toISOString() })
      .execute();
  },
};
