import { type CreateTableBuilder, sql } from 'kysely';
import type { Dialect } from './database.ts';

type ColumnType = Parameters<CreateTableBuilder<string>['addColumn']>[1];

/**
 * Column types for migrations: the few places where the two dialects need different SQL types to behave the
 * same (see the conventions in schema.ts). Everything else in a migration is plain schema-builder calls.
 * - `id`: UUIDs; `timestamp`: ISO-8601 UTC strings;
 * - `text`: text that sorts and compares byte-wise on both (PostgreSQL's collation "C", SQLite's default), so
 *   ordering and uniqueness do not depend on the server's locale.
 */
export function columnTypes(dialect: Dialect): { id: ColumnType; timestamp: ColumnType; text: ColumnType } {
  return dialect === 'postgres'
    ? { id: 'uuid', timestamp: 'timestamptz', text: sql`text collate "C"` }
    : { id: 'text', timestamp: sql`text`, text: 'text' };
}
