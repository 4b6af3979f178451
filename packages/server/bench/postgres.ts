import { randomBytes } from 'node:crypto';
import pg from 'pg';

/** The PostgreSQL server of the PostgreSQL rows (`BENCH_POSTGRES_URL`, default the local `test` database). */
export const benchPostgresUrl = process.env.BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** A fresh schema on the bench's PostgreSQL server: the `DATABASE_URL` that selects it, and how to drop it. */
export interface BenchSchema {
  url: string;
  drop(): Promise<void>;
}

/**
 * Creates a schema of its own (`<prefix>_<random>`) for one PostgreSQL row; undefined, with a note on stderr
 * naming `skipping`, when the server is unreachable, so that a machine without PostgreSQL still runs the rest.
 */
export async function benchSchema(prefix: string, skipping: string): Promise<BenchSchema | undefined> {
  const schema = `${prefix}_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: benchPostgresUrl, connectionTimeoutMillis: 2000 });
  try {
    await admin.connect();
  } catch {
    process.stderr.write(`PostgreSQL is not reachable at ${benchPostgresUrl}: skipping ${skipping}.\n`);
    return undefined;
  }
  try {
    await admin.query(`create schema ${schema}`);
  } finally {
    await admin.end();
  }
  const url = new URL(benchPostgresUrl);
  url.searchParams.set('options', `-c search_path=${schema}`);
  return {
    url: url.toString(),
    async drop() {
      const client = new pg.Client({ connectionString: benchPostgresUrl });
      await client.connect();
      try {
        await client.query(`drop schema ${schema} cascade`);
      } finally {
        await client.end();
      }
    },
  };
}
