import type { Dialect } from '../db/database.ts';

/**
 * The PostgreSQL server the database tests also run on, from `TEST_DATABASE_URL` (CI always sets it). Tests
 * read this variable directly: it configures the test run, not the server, so it is not part of config.ts.
 */
export const testPostgresUrl: string | undefined = process.env.TEST_DATABASE_URL || undefined;

/** The Redis server tests that need one use, from `REDIS_URL` (CI always sets it). */
export const testRedisUrl: string | undefined = process.env.REDIS_URL || undefined;

/** Every dialect the database tests run on: SQLite always, PostgreSQL when `TEST_DATABASE_URL` is set. */
export const testDialects: Dialect[] = testPostgresUrl ? ['sqlite', 'postgres'] : ['sqlite'];

/**
 * The prefix of this run's PostgreSQL test schemas, `test_<run id>_`. The global setup picks the run id and
 * drops the run's schemas when it ends; worker processes inherit it through the environment.
 */
export function testSchemaPrefix(): string {
  const run = process.env.PLINTH_TEST_RUN;
  if (!run)
    throw new Error('PLINTH_TEST_RUN is not set: run the tests through vitest (its global setup sets it)');
  return `test_${run}_`;
}

/**
 * The PostgreSQL role test apps connect as (created by the global setup): it owns each test's schema but is no
 * superuser and cannot bypass row-level security, so the policies apply to every test as they do in production.
 */
export const TEST_APP_ROLE = 'plinth_test_app';
