import { createRequire } from 'node:module';
import type { SqliteDatabase, SqliteStatement } from 'kysely';

/**
 * The SQLite driver under Kysely. Node's built-in `node:sqlite` where it is complete (Node ≥ 22.16 and 24:
 * statements report their result columns), better-sqlite3 elsewhere (Node 20).
 *
 * Why not better-sqlite3 everywhere: compiled against Node 24's headers, every native object's destructor
 * looks up the current Environment; when the garbage collector finalises a statement while no context is
 * entered, that lookup fails a CHECK and the process aborts (WiseLibs/better-sqlite3#1515, unfixed in 12.x,
 * whose successors require Node 22). The built-in module has no such destructor. Both drivers take the same
 * SQL, return integers as numbers and text as strings, so Plinth behaves the same on either.
 */
export interface SqliteConnection extends SqliteDatabase {
  exec(sql: string): void;
}

/** The parts of `node:sqlite` used here (typed locally: the Node 20 type definitions do not describe it). */
interface NodeSqliteStatement {
  all(...parameters: unknown[]): unknown[];
  run(...parameters: unknown[]): { changes: number | bigint; lastInsertRowid: number | bigint };
  iterate(...parameters: unknown[]): IterableIterator<unknown>;
  columns(): unknown[];
}
interface NodeSqliteDatabase {
  exec(sql: string): void;
  prepare(sql: string): NodeSqliteStatement;
  close(): void;
}
interface NodeSqliteModule {
  DatabaseSync: new (path: string, options?: { readOnly?: boolean }) => NodeSqliteDatabase;
  StatementSync: { prototype: Partial<NodeSqliteStatement> };
  backup(source: NodeSqliteDatabase, destination: string, options?: { rate?: number }): Promise<number>;
}

const require = createRequire(import.meta.url);

function builtinSqlite(): NodeSqliteModule | undefined {
  try {
    const module = require('node:sqlite') as NodeSqliteModule;
    return typeof module.StatementSync.prototype.columns === 'function' ? module : undefined;
  } catch {
    return undefined;
  }
}

function fromBuiltin(module: NodeSqliteModule, path: string, options: SqliteOpenOptions): SqliteConnection {
  const db = new module.DatabaseSync(path, options.readonly ? { readOnly: true } : {});
  return {
    exec: (sql) => db.exec(sql),
    close: () => db.close(),
    prepare(sql): SqliteStatement {
      const statement = db.prepare(sql);
      return {
        // A statement that returns columns is read with all()/iterate(); the others report their changes.
        reader: statement.columns().length > 0,
        all: (parameters) => statement.all(...parameters),
        run: (parameters) => statement.run(...parameters),
        iterate: (parameters) => statement.iterate(...parameters),
      };
    },
  };
}

function fromBetterSqlite(path: string, options: SqliteOpenOptions): SqliteConnection {
  // Loaded only where it is used, so that a Node without a matching native build never loads it.
  const BetterSqlite = require('better-sqlite3') as typeof import('better-sqlite3');
  return new BetterSqlite(path, options.readonly ? { readonly: true, fileMustExist: true } : {});
}

/** How many prepared statements a connection keeps for reuse. */
const STATEMENT_CACHE_SIZE = 500;

/**
 * Keeps the most recently used prepared statements, keyed by their SQL: Kysely prepares every query it runs, and
 * preparing (parsing and planning) costs about as much as running a short statement. Plinth's queries come from
 * a fixed set of builders, so a few hundred distinct texts cover them; the least recently used one goes first.
 * A cached statement stays valid across schema changes (SQLite re-prepares it when the schema moved on).
 */
function withStatementCache(connection: SqliteConnection): SqliteConnection {
  const cache = new Map<string, SqliteStatement>();
  const prepare = connection.prepare.bind(connection);
  return Object.assign(Object.create(connection) as SqliteConnection, {
    exec: (sql: string) => connection.exec(sql),
    close: () => connection.close(),
    prepare(sql: string): SqliteStatement {
      const cached = cache.get(sql);
      if (cached) {
        cache.delete(sql);
        cache.set(sql, cached);
        return cached;
      }
      const statement = prepare(sql);
      cache.set(sql, statement);
      if (cache.size > STATEMENT_CACHE_SIZE) cache.delete(cache.keys().next().value as string);
      return statement;
    },
  });
}

export interface SqliteOpenOptions {
  /** Open an existing file for reading only (never creating it, never writing to it). */
  readonly?: boolean;
}

/** Opens (creating if needed, unless `readonly`) the SQLite database file at `path`. */
export function openSqliteConnection(path: string, options: SqliteOpenOptions = {}): SqliteConnection {
  const builtin = builtinSqlite();
  return withStatementCache(builtin ? fromBuiltin(builtin, path, options) : fromBetterSqlite(path, options));
}

/** More pages than any database has: SQLite's online backup then copies everything in one step. */
const ALL_PAGES = 2 ** 31 - 1;

/**
 * Copies the SQLite database at `source` into a new file at `destination` with SQLite's online backup API,
 * through a connection of its own. The copy is one step, so it reads one consistent snapshot: in WAL mode the
 * server's connection keeps reading and writing meanwhile (its writes go to the WAL and are not in the copy),
 * whereas a copy in several steps would restart each time another connection wrote between two of them. The
 * destination inherits the source's WAL mode; see modules/backup for how it is made a self-contained file.
 */
export async function backupSqliteFile(source: string, destination: string): Promise<void> {
  const builtin = builtinSqlite();
  if (builtin) {
    const db = new builtin.DatabaseSync(source, { readOnly: true });
    try {
      await builtin.backup(db, destination, { rate: ALL_PAGES });
    } finally {
      db.close();
    }
    return;
  }
  const BetterSqlite = require('better-sqlite3') as typeof import('better-sqlite3');
  const db = new BetterSqlite(source, { readonly: true, fileMustExist: true });
  try {
    // The first step copies 100 pages; from the second on, everything that is left.
    await db.backup(destination, { progress: () => ALL_PAGES });
  } finally {
    db.close();
  }
}
