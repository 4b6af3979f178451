import { type Kysely, sql } from 'kysely';
import type { Migration } from '../migrate.ts';
import { enableChainIsolation } from './tenant-isolation.ts';

/**
 * Audit chains beyond organizations: an account's own events (`user:<id>`) and the installation's (`platform`)
 * live in the same tables as an organization's, keyed by chain name in `org_id`. On PostgreSQL that column was a
 * UUID; it becomes text, and the tenant policy compares the setting as text (the old one cast it to a UUID, which
 * a chain name is not). SQLite stores it as text already; nothing changes there.
 */
export const auditChains: Migration = {
  async up(db: Kysely<unknown>, dialect) {
    if (dialect !== 'postgres') return;
    for (const table of ['audit_events', 'audit_chain_heads']) {
      await sql`drop policy tenant_isolation on ${sql.table(table)}`.execute(db);
      await sql`alter table ${sql.table(table)} alter column org_id type text collate "C"`.execute(db);
      await enableChainIsolation(db, dialect, table);
    }
  },
};
