import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { FastifyBaseLogger } from 'fastify';
import {
  Kysely,
  type LogEvent,
  PostgresAdapter,
  type RawBuilder,
  type SqlBool,
  SqliteDialect,
  sql,
  type Transaction,
} from 'kysely';
import pg from 'pg';
import type { DatabaseConfig } from '../config.ts';
import { CurrentSchemaPostgresDialect } from './postgres-introspector.ts';
import { type Database, PLATFORM_TENANT_TABLES } from './schema.ts';
import { openSqliteConnection, type SqliteConnection } from './sqlite-driver.ts';
import { TenantScopePlugin, UnscopedAccessGuard } from './tenant.ts';

export type Dialect = DatabaseConfig['dialect'];

/**
 * What the rest of the server holds on to: the query builders and how to check and close them. `db` and `readDb`
 * refuse any query of an org-owned table (see tenant.ts): those go through `withTenant`.
 */
export interface DatabaseHandle {
  readonly dialect: Dialect;
  /** Reads and writes (the primary), of tables that belong to no organization. */
  readonly db: Kysely<Database>;
  /** Reads that may lag slightly (a replica when `DATABASE_READ_URL` is set, else the primary). */
  readonly readDb: Kysely<Database>;
  /**
   * Runs `work` in a transaction confined to one organization: every query of an org-owned table it makes is
   * filtered to `orgId` (and an insert for another organization is refused); on PostgreSQL, row-level security
   * enforces the same through `app.org_id`. The only way to reach org-owned rows in a request.
   */
  withTenant<T>(orgId: string, work: (db: Transaction<Database>) => Promise<T>): Promise<T>;
  /**
   * Runs `work` in a transaction that may read and write every organization's rows. For the few lookups that
   * come before an organization is known (an API key by its id, an invitation by its token, a user's own
   * memberships) and for platform maintenance; each caller says why in a comment.
   */
  acrossTenants<T>(work: (db: Transaction<Database>) => Promise<T>): Promise<T>;
  /** Declares a module's org-owned table (it must have an `org_id` column and, on PostgreSQL, the RLS policy). */
  registerTenantTable(table: string): void;
  /** Resolves when the database (and the read replica, if any) answers a trivial query. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Whether `db` talks to PostgreSQL, learnt from the executor itself: code that takes the caller's transaction
 * (the audit writer, the job queue) needs the dialect without every caller passing it.
 */
export function isPostgres(db: Kysely<Database>): boolean {
  return db.getExecutor().adapter instanceof PostgresAdapter;
}

/**
 * `column` holds `needle` as a substring, literally (no `LIKE` wildcards: an address's `_` is just a character),
 * on either dialect. For erasure's search for every copy of a person's address or name.
 */
export function containsText(db: Kysely<Database>, column: string, needle: string): RawBuilder<SqlBool> {
  return isPostgres(db)
    ? sql<SqlBool>`strpos(${sql.ref(column)}, ${needle}) > 0`
    : sql<SqlBool>`instr(${sql.ref(column)}, ${needle}) > 0`;
}

/** Where the data lives, without credentials. */
export function describeDatabase(database: DatabaseConfig): string {
  if (database.dialect === 'sqlite') return `SQLite ${database.path}`;
  const url = new URL(database.url);
  return `PostgreSQL ${url.hostname}:${url.port || 5432}${url.pathname}`;
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

  const tenantTables = new Set<string>(PLATFORM_TENANT_TABLES);
  const guard = new UnscopedAccessGuard(tenantTables);

  if (config.dialect === 'sqlite') {
    mkdirSync(dirname(config.path), { recursive: true });
    const db = new Kysely<Database>({
      dialect: new SqliteDialect({ database: async () => openSqlite(config.path) }),
      log,
    });
    const guarded = db.withPlugin(guard);
    return {
      dialect: 'sqlite',
      db: guarded,
      readDb: guarded,
      ...tenantAccess(db, 'sqlite', tenantTables),
      ping: async () => {
        await sql`select 1`.execute(db);
      },
      close: () => db.destroy(),
    };
  }

  const primary = new Kysely<Database>({
    dialect: new CurrentSchemaPostgresDialect({ pool: openPool(config.url, config.poolMax, options.log) }),
    log,
  });
  const replica = config.readUrl
    ? new Kysely<Database>({
        dialect: new CurrentSchemaPostgresDialect({
          pool: openPool(config.readUrl, config.poolMax, options.log),
        }),
        log,
      })
    : primary;
  return {
    dialect: 'postgres',
    db: primary.withPlugin(guard),
    readDb: replica.withPlugin(guard),
    ...tenantAccess(primary, 'postgres', tenantTables),
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

/**
 * `withTenant` and `acrossTenants` over the unguarded primary. On PostgreSQL each sets, for its transaction only,
 * the setting the row-level security policies read: `app.org_id`, or `app.cross_tenant` for the few lookups
 * across organizations.
 */
function tenantAccess(
  primary: Kysely<Database>,
  dialect: Dialect,
  tenantTables: Set<string>,
): Pick<DatabaseHandle, 'withTenant' | 'acrossTenants' | 'registerTenantTable'> {
  const setting = async (trx: Transaction<Database>, name: string, value: string) => {
    if (dialect === 'postgres') await sql`select set_config(${name}, ${value}, true)`.execute(trx);
  };
  return {
    withTenant: (orgId, work) =>
      primary.transaction().execute(async (trx) => {
        await setting(trx, 'app.org_id', orgId);
        return work(trx.withPlugin(new TenantScopePlugin(tenantTables, orgId)));
      }),
    acrossTenants: (work) =>
      primary.transaction().execute(async (trx) => {
        await setting(trx, 'app.cross_tenant', 'on');
        return work(trx);
      }),
    registerTenantTable: (table) => {
      tenantTables.add(table);
    },
  };
}

function openSqlite(path: string): SqliteConnection {
  const db = openSqliteConnection(path);
  // WAL lets readers proceed while a write is in progress; NORMAL sync is durable in WAL mode except for the
  // last transactions before an OS crash, the usual trade-off for an embedded server.
  db.exec('PRAGMA journal_mode = WAL');
  db.exec('PRAGMA synchronous = NORMAL');
  db.exec('PRAGMA foreign_keys = ON');
  db.exec(`PRAGMA busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`);
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
        if (oid === TIMESTAMPTZ) return isoTimestamp;
        if (oid === TIMESTAMP) return (v: string) => isoTimestamp(`${v}+00`);
        return pg.types.getTypeParser(oid, format);
      }) as typeof pg.types.getTypeParser,
    },
  });
  // A client whose server goes away (a restart, a failover, a network cut) emits 'error'. pg-pool listens only
  // while the client is idle in the pool; a client checked out for a query has no listener, and an unhandled
  // 'error' event would crash the process. Every client therefore gets its own listener for its whole life:
  // the query it was running fails on its own, the pool discards the broken client on release, and the next
  // query opens a fresh connection (until then /health/ready says the database is down).
  pool.on('connect', (client) => {
    client.on('error', (err) => log.warn({ err }, 'database connection lost'));
  });
  // The pool re-emits an idle client's error, already logged by the client's own listener above; a pool
  // 'error' without a listener would crash the process too.
  pool.on('error', () => {});
  return pool;
}

const parseTimestamptz = pg.types.getTypeParser(TIMESTAMPTZ, 'text') as (value: string) => unknown;

/**
 * A PostgreSQL timestamp as Plinth's ISO-8601 UTC string. PostgreSQL prints it in the session's time zone
 * (`2026-11-22 02:23:45.678+01`, or `1890-01-01 00:19:32+00:19:32` for local mean time), which `new Date()`
 * does not reliably parse, so pg's own parser reads it. `infinity` and anything else that is not a point in
 * time is returned as PostgreSQL printed it rather than failing the whole query.
 */
function isoTimestamp(value: string): string {
  const parsed = parseTimestamptz(value);
  return parsed instanceof Date && !Number.isNaN(parsed.getTime()) ? parsed.toISOString() : value;
}

const QUERY_KINDS: Record<string, string> = {
  SelectQueryNode: 'select',
  InsertQueryNode: 'insert',
  UpdateQueryNode: 'update',
  DeleteQueryNode: 'delete',
};

/**
 * The `kind` label of a query: `select`, `insert`, `update`, `delete`, or `other` for everything else (raw SQL,
 * schema changes, merges), so the label has a small fixed set of values whatever SQL the server runs.
 */
function queryKind(nodeKind: string): string {
  return QUERY_KINDS[nodeKind] ?? 'other';
}
