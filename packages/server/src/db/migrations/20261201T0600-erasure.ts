import type { Kysely } from 'kysely';
import { columnTypes } from '../column-types.ts';
import type { Migration } from '../migrate.ts';

/**
 * Account erasure (modules/privacy): when an account's erasure is due. Set by a request, cleared by signing in
 * during the grace period (which cancels it); the `privacy.erase` job erases the account once it has passed.
 */
export const erasure: Migration = {
  async up(db: Kysely<unknown>, dialect) {
    const t = columnTypes(dialect);
    await db.schema.alterTable('users').addColumn('erasure_scheduled_for', t.timestamp).execute();
  },
};
