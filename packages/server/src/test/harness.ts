import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AppOptions, buildApp, type PlinthApp } from '../app.ts';
import { type Config, loadConfig } from '../config.ts';
import type { Dialect } from '../db/database.ts';
import { TEST_APP_ROLE, testSchemaPrefix } from './dialects.ts';
import { writeUnlimitedRateLimitsFile } from './rate-limits.ts';
import { copyPostgresTemplate, copySqliteTemplate, postgresSchemaUrl, withPgClient } from './templates.ts';

/** A database of its own for one test app: a temporary SQLite file, or a fresh PostgreSQL schema. */
export interface TestDatabase {
  /** The `DATABASE_URL` that points at it. */
  url: string;
  /** The data directory of the test (dev secrets, SQLite file). */
  dataDir: string;
  /** Deletes its data directory (and with it a SQLite file; a PostgreSQL schema goes when the run ends). */
  drop(): Promise<void>;
}

/**
 * Creates a database for one test: empty, or with `migrated` a copy of the run's migrated template
 * (templates.ts). On PostgreSQL each test gets its own schema, selected through the connection's `search_path`,
 * so tests run in parallel without seeing each other's tables.
 */
export async function createTestDatabase(
  dialect: Dialect,
  { migrated = false }: { migrated?: boolean } = {},
): Promise<TestDatabase> {
  const dataDir = mkdtempSync(join(tmpdir(), 'plinth-test-'));
  const removeDir = () => rmSync(dataDir, { recursive: true, force: true });
  if (dialect === 'sqlite') {
    const path = join(dataDir, 'plinth.db');
    if (migrated) copySqliteTemplate(path);
    return { url: `sqlite:${path}`, dataDir, drop: async () => removeDir() };
  }
  const schema = `${testSchemaPrefix()}${randomBytes(8).toString('hex')}`;
  // First, so that without TEST_DATABASE_URL this fails saying so, before connecting anywhere.
  const url = postgresSchemaUrl(schema);
  if (migrated) await copyPostgresTemplate(schema);
  else await withPgClient((client) => client.query(`create schema ${schema} authorization ${TEST_APP_ROLE}`));
  // The schema itself is dropped when the whole run ends (global-setup.ts), with every other schema of the run:
  // several apps of a multi-replica test share one database, and the first to close must not pull it away.
  return { url, dataDir, drop: async () => removeDir() };
}

/**
 * A test configuration: quiet logs, its own data directory and database, rate limits no test reaches (unless
 * `env` sets `RATE_LIMITS_FILE`; an empty value means the defaults), no background job worker (tests run due jobs
 * with `app.jobs.drain()`, at the moment they choose, on their fake clock; `JOBS_WORKER: 'true'` turns it on),
 * no load shedding (the test files run side by side, and a busy machine's event-loop delay must not turn a test's
 * request into a 503; the tests of load shedding set `LOAD_SHED_*` themselves), an audit sequencer that passes
 * once a minute (so that every test of a reader sees it sequence what it reads; the sequencer's tests set
 * `AUDIT_SEQUENCE_INTERVAL_MS`), everything else at defaults.
 */
export function testConfig(database: TestDatabase, env: Record<string, string> = {}): Config {
  return loadConfig({
    NODE_ENV: 'test',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    DATA_DIR: database.dataDir,
    DATABASE_URL: database.url,
    AUTO_MIGRATE: 'true',
    JWT_SECRET: randomBytes(32).toString('base64url'),
    JOBS_WORKER: 'false',
    LOAD_SHED_MAX_EVENT_LOOP_DELAY_MS: '0',
    AUDIT_SEQUENCE_INTERVAL_MS: '60000',
    ...('RATE_LIMITS_FILE' in env
      ? {}
      : { RATE_LIMITS_FILE: writeUnlimitedRateLimitsFile(database.dataDir, planNames(env.ORG_PLANS)) }),
    ...env,
  });
}

/** The plans of `ORG_PLANS` as the server reads them (the built-in four when unset). */
function planNames(orgPlans: string | undefined): string[] {
  return (orgPlans || 'free,basic,premium,enterprise')
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean);
}

/**
 * A configuration from `env` alone, as in a test of the variables themselves: both secrets are given, so that
 * loading it writes no development secrets file.
 */
export function configFromEnv(env: Record<string, string>): Config {
  return loadConfig({
    NODE_ENV: 'test',
    JWT_SECRET: 's'.repeat(32),
    ENCRYPTION_KEY: Buffer.alloc(32, 7).toString('base64'),
    ...env,
  });
}

/**
 * The secrets every replica of one installation must share (`JWT_SECRET`, `ENCRYPTION_KEY`), freshly made: give
 * the same object to each app of a multi-replica test.
 */
export function installationSecrets(): { JWT_SECRET: string; ENCRYPTION_KEY: string } {
  return {
    JWT_SECRET: randomBytes(32).toString('base64url'),
    ENCRYPTION_KEY: randomBytes(32).toString('base64'),
  };
}

export interface TestAppOptions extends AppOptions {
  /** Extra environment variables, as an operator would set them. */
  env?: Record<string, string>;
}

/**
 * A fully built app on a fresh database of the given dialect, exercised with `app.inject`. Closing the app
 * drops its database.
 */
export async function buildTestApp(dialect: Dialect, options: TestAppOptions = {}): Promise<PlinthApp> {
  // An app that does not migrate at start-up is a test of the migrations: it gets an empty database.
  const database = await createTestDatabase(dialect, { migrated: options.env?.AUTO_MIGRATE !== 'false' });
  try {
    const app = await buildApp(testConfig(database, options.env), options);
    app.addHook('onClose', async () => database.drop());
    return app;
  } catch (error) {
    await database.drop();
    throw error;
  }
}
