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
