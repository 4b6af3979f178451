import pg from 'pg';
import { testPostgresUrl } from './dialects.ts';

/** Says once, at the start of `npm test`, which dialects the database tests run on. */
export default async function setup(): Promise<void> {
  if (!testPostgresUrl) {
    console.log(
      '\n[plinth] PostgreSQL suite SKIPPED: TEST_DATABASE_URL is not set, so database tests run on SQLite only.\n' +
        '         Set TEST_DATABASE_URL=postgres://… to run every database test on PostgreSQL as well (CI does).\n',
    );
    return;
  }
  // Fail the whole run at once, with a clear message, rather than every PostgreSQL test separately.
  const client = new pg.Client({ connectionString: testPostgresUrl, connectionTimeoutMillis: 5000 });
  try {
    await client.connect();
    await client.query('select 1');
  } catch (error) {
    throw new Error(`TEST_DATABASE_URL is set but PostgreSQL is not reachable: ${String(error)}`);
  } finally {
    await client.end().catch(() => {});
  }
  console.log('\n[plinth] Database tests run on SQLite and on PostgreSQL (TEST_DATABASE_URL).\n');
}
