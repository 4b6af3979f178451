import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { TEST_APP_ROLE, testPostgresUrl, testSchemaPrefix } from './dialects.ts';
import { createTemplates } from './templates.ts';

/**
 * Says once, at the start of `npm test`, which dialects the database tests run on; names this run (its
 * PostgreSQL test schemas share the prefix), makes the migrated templates the tests' databases are copied from,
 * and returns the teardown that removes them and drops the run's schemas.
 */
export default async function setup(): Promise<() => Promise<void>> {
  // The run's start time is part of its name, so a later run can tell a killed run's schemas from a live one's.
  process.env.PLINTH_TEST_RUN = `t${Date.now().toString(36)}r${randomBytes(3).toString('hex')}`;
  if (testPostgresUrl) {
    await preparePostgres(testPostgresUrl);
    console.log('\n[plinth] Database tests run on SQLite and on PostgreSQL (TEST_DATABASE_URL).\n');
  } else {
    console.log(
      '\n[plinth] PostgreSQL suite SKIPPED: TEST_DATABASE_URL is not set, so database tests run on SQLite only.\n' +
        '         Set TEST_DATABASE_URL=postgres://… to run every database test on PostgreSQL as well (CI does).\n',
    );
  }
  const removeTemplates = await createTemplates();
  return async () => {
    removeTemplates();
    if (testPostgresUrl) await dropRunSchemas();
  };
}

/**
 * Creates the test app role and drops killed runs' schemas. When the server does not answer, fails the whole run
 * at once with a clear message, rather than every PostgreSQL test separately.
 */
async function preparePostgres(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  try {
    await client.connect();
    await createTestAppRole(client);
    await dropAbandonedSchemas(client);
  } catch (error) {
    throw new Error(`TEST_DATABASE_URL is set but PostgreSQL is not reachable: ${String(error)}`);
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * The role the test apps connect as: neither a superuser nor `BYPASSRLS`, like the application role production
 * uses, so every PostgreSQL test runs under the row-level security policies. Roles belong to the whole server;
 * this one is created once and kept.
 */
async function createTestAppRole(client: pg.Client): Promise<void> {
  await client.query(`do $$ begin
    create role ${TEST_APP_ROLE} login nosuperuser nobypassrls;
  exception when duplicate_object then null;
  end $$`);
}

/** A run older than this is dead (no test run takes hours): its schemas were left by a run that was killed. */
const ABANDONED_AFTER_MS = 6 * 60 * 60 * 1000;

/** Drops the schemas of runs that were killed before their teardown, which would otherwise pile up for ever. */
async function dropAbandonedSchemas(client: pg.Client): Promise<void> {
  const { rows } = await client.query<{ name: string }>(
    "select nspname as name from pg_namespace where nspname ~ '^test_t[0-9a-z]+r[0-9a-f]+_'",
  );
  const now = Date.now();
  for (const { name } of rows) {
    const started = Number.parseInt(/^test_t([0-9a-z]+)r/.exec(name)?.[1] ?? '', 36);
    if (Number.isFinite(started) && now - started > ABANDONED_AFTER_MS) {
      await client.query(`drop schema if exists "${name}" cascade`);
    }
  }
}

async function dropRunSchemas(): Promise<void> {
  const client = new pg.Client({ connectionString: testPostgresUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ name: string }>(
      'select nspname as name from pg_namespace where starts_with(nspname, $1)',
      [testSchemaPrefix()],
    );
    for (const { name } of rows) await client.query(`drop schema if exists "${name}" cascade`);
  } finally {
    await client.end().catch(() => {});
  }
}
