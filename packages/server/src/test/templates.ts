import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import pino from 'pino';
import type { DatabaseConfig } from '../config.ts';
import { openDatabase } from '../db/database.ts';
import { migrateToLatest } from '../db/migrate.ts';
import { TEST_APP_ROLE, testPostgresUrl, testSchemaPrefix } from './dialects.ts';

/*
 * Migrated templates of the test databases. Most tests want a database at the latest migration and do not test
 * the migrations themselves (migrate.test.ts does), yet running every migration for each test app cost about
 * 0.2 s on SQLite and 0.85 s on PostgreSQL, a large share of the whole suite. So the global setup migrates one
 * database of each dialect once per run, and each test gets a copy: the SQLite file copied, the PostgreSQL
 * schema replayed from `pg_dump`'s script of the template schema (tables, indexes, row-level security policies,
 * triggers, grants and the migration bookkeeping rows alike), under the new schema's name. A copy is exactly
 * what migrating would have made; the app's own start-up migration then finds nothing to do.
 */

/** The environment variable that hands the templates' folder from the global setup to the worker processes. */
const TEMPLATES_ENV = 'PLINTH_TEST_TEMPLATES';
const SQLITE_TEMPLATE = 'plinth.db';
const POSTGRES_TEMPLATE = 'schema.sql';

/** `TEST_DATABASE_URL` as the test app role, confined to `schema` through the connection's `search_path`. */
export function postgresSchemaUrl(schema: string): string {
  if (!testPostgresUrl) throw new Error('PostgreSQL tests need TEST_DATABASE_URL');
  const url = new URL(testPostgresUrl);
  url.username = TEST_APP_ROLE;
  url.password = '';
  url.searchParams.set('options', `-c search_path=${schema}`);
  return url.toString();
}

/** Runs `work` on a connection to `TEST_DATABASE_URL` as its own (superuser) role. */
export async function withPgClient<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: testPostgresUrl });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/** The template schema: the run's prefix, so that it is dropped with the run's other schemas. */
function templateSchema(): string {
  return `${testSchemaPrefix()}template`;
}

async function migrate(config: DatabaseConfig): Promise<void> {
  const handle = openDatabase(config, { log: pino({ level: 'silent' }) });
  try {
    await migrateToLatest(handle.db, handle.dialect);
  } finally {
    await handle.close();
  }
}

/** `pg_dump`'s script of `schema`, data included, as one query can run it. */
async function dumpSchema(url: string, schema: string): Promise<string> {
  const dump = await promisify(execFile)('pg_dump', ['--schema', schema, '--inserts', url], {
    maxBuffer: 64 * 1024 * 1024,
  }).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOENT') throw error;
    throw new Error(
      'pg_dump is not on PATH: the PostgreSQL tests need it (apt-get install postgresql-client)',
    );
  });
  // psql's meta-commands (`\restrict`, which recent pg_dump versions add) are not SQL; the rest runs as one query.
  return dump.stdout
    .split('\n')
    .filter((line) => !line.startsWith('\\'))
    .join('\n');
}

/**
 * Makes the run's templates (PostgreSQL's only when `TEST_DATABASE_URL` is set) and returns what removes their
 * folder. For the global setup, after the test app role exists.
 */
export async function createTemplates(): Promise<() => void> {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-test-templates-'));
  process.env[TEMPLATES_ENV] = dir;
  // Closing the only connection checkpoints the WAL into the file, so the file alone is the whole database.
  await migrate({ dialect: 'sqlite', path: join(dir, SQLITE_TEMPLATE) });
  if (testPostgresUrl) {
    const schema = templateSchema();
    await withPgClient((client) => client.query(`create schema ${schema} authorization ${TEST_APP_ROLE}`));
    await migrate({ dialect: 'postgres', url: postgresSchemaUrl(schema), readUrl: undefined, poolMax: 2 });
    writeFileSync(join(dir, POSTGRES_TEMPLATE), await dumpSchema(testPostgresUrl, schema));
  }
  return () => rmSync(dir, { recursive: true, force: true });
}

function templatesDir(): string {
  const dir = process.env[TEMPLATES_ENV];
  if (!dir)
    throw new Error(`${TEMPLATES_ENV} is not set: run the tests through vitest (its global setup sets it)`);
  return dir;
}

/** Writes a copy of the migrated SQLite template to `path`. */
export function copySqliteTemplate(path: string): void {
  copyFileSync(join(templatesDir(), SQLITE_TEMPLATE), path);
}

let postgresScript: string | undefined;

/** Creates `schema` as a copy of the migrated PostgreSQL template. */
export async function copyPostgresTemplate(schema: string): Promise<void> {
  postgresScript ??= readFileSync(join(templatesDir(), POSTGRES_TEMPLATE), 'utf8');
  const script = postgresScript.replaceAll(templateSchema(), schema);
  await withPgClient((client) => client.query(script));
}
