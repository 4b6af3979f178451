import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import SQLite from 'better-sqlite3';
import type { FastifyBaseLogger } from 'fastify';
import { Kysely, type LogEvent, PostgresDialect, SqliteDialect, sql } from 'kysely';
import pg from 'pg';
import type { DatabaseConfig } from '../config.ts';
import type { Database } from './schema.ts';

export type Dialect = DatabaseConfig['dialect'];

/** What the rest of the server holds on to: the query builders and how to check and close them. */
export interface DatabaseHandle {
  readonly dialect: Dialect;
  /** Reads and writes (the primary). */
  readonly db: Kysely<Database>;
  /** Reads that may lag slightly (a replica when `DATABASE_READ_URL` is set, else the primary). */
  readonly readDb: Kysely<Database>;
  /** Resolves when the database (and the read replica, if any) answers a trivial query. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  log: FastifyBaseLogger;
  /** Called after every query with its kind (`select`, `insert`, …) and duration in seconds. */
  onQuery?: (kind: string, seconds: number) => void;
}

/** The SQLite busy timeout: how long a writer waits for another writer's lock before failing, in ms. */
const SQLITE_BUSY_TIMEOUT_MS = 5000;
/** How long acquiring a PostgreSQL connection may take before the query fails, in ms. */
const PG_CONNECT_TIMEOUT_MS = 5000;

export function openDatabase(config: DatabaseConfig, options: DatabaseOptions): DatabaseHandle {
  const log = (event: LogEvent) => {
    if (event.level === 'error') {
      options.log.debug({ err: event.error, sql: event.query.sql }, 'query failed');
    }
    options.onQuery?.(queryKind(event.query.query.kind), event.queryDurationMillis / 1000);
  };

  if (config.dialect === 'sqlite') {
    mkdirSync(dirname(config.path), { recursive: true });
    const db = new Kysely<Database>({
      dialect: new SqliteDialect({ database: async () => openSqlite(config.path) }),
      log,
    });
    return {
      dialect: 'sqlite',
      db,
      readDb: db,
      ping: async () => {
        await sql`select 1`.execute(db);
      },
      close: () => db.destroy(),
    };
  }

  const primary = new Kysely<Database>({
    dialect: new PostgresDialect({ pool: openPool(config.url, config.poolMax, options.log) }),
    log,
  });
  const replica = config.readUrl
    ? new Kysely<Database>({
        dialect: new PostgresDialect({ pool: openPool(config.readUrl, config.poolMax, options.log) }),
        log,
      })
    : primary;
  return {
    dialect: 'postgres',
    db: primary,
    readDb: replica,
    ping: async () => {
      await sql`select 1`.execute(primary);
      if (replica !== primary) await sql`select 1`.execute(replica);
    },
    close: async () => {
      await primary.destroy();
      if (replica !== primary) await replica.destroy();
    },
  };
}

function openSqlite(path: string): SQLite.Database {
  const db = new SQLite(path);
  // WAL lets readers proceed while a write is in progress; NORMAL sync is durable in WAL mode except for the
  // last transactions before an OS crash, the usual trade-off for an embedded server.
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  db.pragma(`busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`);
  return db;
}

// PostgreSQL type OIDs whose default JavaScript mapping would differ from SQLite's (see schema.ts).
const INT8 = 20;
const TIMESTAMP = 1114;
const TIMESTAMPTZ = 1184;

function openPool(connectionString: string, max: number, log: FastifyBaseLogger): pg.Pool {
  const pool = new pg.Pool({
    connectionString,
    max,
    connectionTimeoutMillis: PG_CONNECT_TIMEOUT_MS,
    application_name: 'plinth',
    types: {
      getTypeParser: ((oid: number, format?: 'text' | 'binary') => {
        if (oid === INT8) return (v: string) => Number(v);
        if (oid === TIMESTAMPTZ) return (v: string) => new Date(v).toISOString();
        if (oid === TIMESTAMP) return (v: string) => new Date(`${v}Z`).toISOString();
        return pg.types.getTypeParser(oid, format);
      }) as typeof pg.types.getTypeParser,
    },
  });
  // An idle client whose server went away emits 'error' on the pool; without a listener that would crash the
  // process. The next query fails (and /health/ready says so) until the database is back.
  pool.on('error', (err) => log.warn({ err }, 'idle database connection failed'));
  return pool;
}

function queryKind(nodeKind: string): string {
  return nodeKind.replace(/QueryNode$/, '').toLowerCase() || 'other';
}
