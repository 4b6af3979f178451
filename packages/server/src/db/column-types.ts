import { type CreateTableBuilder, sql } from 'kysely';
import type { Dialect } from './database.ts';

type ColumnType = Parameters<CreateTableBuilder<string>['addColumn']>[1];

/**
 * Column types for migrations: the few places where the two dialects need different SQL types to behave the
 * same (see the conventions in schema.ts). Everything else in a migration is plain schema-builder calls.
 */
export function columnTypes(dialect: Dialect): { id: ColumnType; timestamp: ColumnType } {
  return dialect === 'postgres'
    ? { id: 'uuid', timestamp: 'timestamptz' }
    : { id: 'text', timestamp: sql`text` };
}
