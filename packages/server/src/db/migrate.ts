import { type Kysely, type MigrationResultSet, Migrator, sql } from 'kysely';
import type { Dialect } from './database.ts';
import { migrations } from './migrations/index.ts';
import type { Database } from './schema.ts';

/** A Plinth migration: like Kysely's, but told which dialect it runs on so it can pick column types. */
export interface Migration {
  up(db: Kysely<unknown>, dialect: Dialect): Promise<void>;
}

export interface MigrationState {
  name: string;
  /** When it was applied (ISO-8601), or null when it is pending. */
  executedAt: string | null;
}

async function migrator(db: Kysely<Database>, dialect: Dialect): Promise<Migrator> {
  return new Migrator({
    // A migration must not depend on today's schema types: it sees the database as it was when it was written.
    db: db as unknown as Kysely<unknown>,
    provider: {
      getMigrations: async () =>
        Object.fromEntries(
          Object.entries(migrations).map(([name, m]) => [
            name,
            { up: (d: Kysely<unknown>) => m.up(d, dialect) },
          ]),
        ),
    },
    migrationTableName: 'plinth_migrations',
    migrationLockTableName: 'plinth_migrations_lock',
    migrationTableSchema: dialect === 'postgres' ? await currentSchema(db) : undefined,
  });
}

/**
 * The PostgreSQL schema this connection creates tables in (the first existing one on its `search_path`).
 * Kysely looks for its migration tables in every schema unless told which one, so a second Plinth database
 * in another schema of the same server (a staging copy, a test) would make this one look migrated and then
 * fail on a table it cannot see. Pinning the tables to the current schema keeps each database's state its own.
 */
async function currentSchema(db: Kysely<Database>): Promise<string | undefined> {
  const { rows } = await sql<{ schema: string | null }>`select current_schema() as schema`.execute(db);
  return rows[0]?.schema ?? undefined;
}

/**
 * Applies every pending migration, each in its own transaction. Safe to run from several replicas at once:
 * Kysely serialises runs with a lock (an advisory lock on PostgreSQL).
 * @returns the names of the migrations applied by this call.
 */
export async function migrateToLatest(db: Kysely<Database>, dialect: Dialect): Promise<string[]> {
  const result: MigrationResultSet = await (await migrator(db, dialect)).migrateToLatest();
  if (result.error) {
    const failed = result.results?.find((r) => r.status === 'Error')?.migrationName;
    throw new Error(`migration ${failed ?? '(unknown)'} failed: ${String(result.error)}`, {
      cause: result.error,
    });
  }
  return (result.results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}

/** Every known migration in order, with when it was applied. */
export async function migrationStatus(db: Kysely<Database>, dialect: Dialect): Promise<MigrationState[]> {
  const infos = await (await migrator(db, dialect)).getMigrations();
  return infos.map((m) => ({
    name: m.name,
    executedAt: m.executedAt ? new Date(m.executedAt).toISOString() : null,
  }));
}
