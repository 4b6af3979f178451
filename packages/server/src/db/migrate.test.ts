import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { isId } from '../core/ids.ts';
import { runPlinth } from '../test/cli.ts';
import { testDialects } from '../test/dialects.ts';
import { createTestDatabase, type TestDatabase, testConfig } from '../test/harness.ts';
import { type DatabaseHandle, type Dialect, openDatabase } from './database.ts';
import { migrateToLatest, migrationStatus } from './migrate.ts';
import { migrations } from './migrations/index.ts';

const repoRoot = fileURLToPath(new URL('../../../../', import.meta.url));
const serverPackage = JSON.parse(readFileSync(join(repoRoot, 'packages/server/package.json'), 'utf8')) as {
  version: string;
};
const allMigrations = Object.keys(migrations);
const ISO_TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/** Databases and handles opened by a test, released after it whatever its outcome. */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function freshDatabase(dialect: Dialect): Promise<TestDatabase> {
  const database = await createTestDatabase(dialect);
  cleanups.push(() => database.drop());
  return database;
}

function open(database: TestDatabase, url = database.url): DatabaseHandle {
  const handle = openDatabase(testConfig({ ...database, url }).database, { log: pino({ level: 'silent' }) });
  cleanups.push(() => handle.close());
  return handle;
}

describe.each(testDialects)('migrations (%s)', (dialect) => {
  it('applies every migration in order on an empty database and then reports all of them applied', async () => {
    const database = await freshDatabase(dialect);
    // An operator may create the SQLite file ahead of time (to set its owner or mode): a zero-byte file is an
    // empty database, not an error.
    if (dialect === 'sqlite') writeFileSync(database.url.slice('sqlite:'.length), '');
    const handle = open(database);

    const before = await migrationStatus(handle.db, handle.dialect);
    expect(before).toEqual(allMigrations.map((name) => ({ name, executedAt: null })));

    const applied = await migrateToLatest(handle.db, handle.dialect);
    expect(applied).toEqual(allMigrations);

    const after = await migrationStatus(handle.db, handle.dialect);
    expect(after.map((m) => m.name)).toEqual(allMigrations);
    for (const m of after) expect(m.executedAt).toMatch(ISO_TIMESTAMP);
  });

  it('applies nothing when run again and leaves the status identical', async () => {
    const handle = open(await freshDatabase(dialect));
    await migrateToLatest(handle.db, handle.dialect);
    const first = await migrationStatus(handle.db, handle.dialect);

    expect(await migrateToLatest(handle.db, handle.dialect)).toEqual([]);
    expect(await migrationStatus(handle.db, handle.dialect)).toEqual(first);
  });

  it('creates exactly one installation row, and a second run does not add another', async () => {
    const handle = open(await freshDatabase(dialect));
    await migrateToLatest(handle.db, handle.dialect);
    await migrateToLatest(handle.db, handle.dialect);

    const rows = await handle.db.selectFrom('installation').selectAll().execute();
    expect(rows).toHaveLength(1);
    expect(isId(rows[0]?.id ?? '')).toBe(true);
    expect(rows[0]?.created_at).toMatch(ISO_TIMESTAMP);
  });

  it('keeps the migration state of each database its own when several share one server', async () => {
    // On PostgreSQL, several Plinth databases can live side by side as schemas of one server database (the
    // tests do exactly that). Migrating one must neither hide nor break the other's pending migrations.
    const first = open(await freshDatabase(dialect));
    const second = open(await freshDatabase(dialect));
    await migrateToLatest(first.db, first.dialect);

    expect(await migrationStatus(second.db, second.dialect)).toEqual(
      allMigrations.map((name) => ({ name, executedAt: null })),
    );
    expect(await migrateToLatest(second.db, second.dialect)).toEqual(allMigrations);
    expect(await second.db.selectFrom('installation').select('id').execute()).toHaveLength(1);
  });

  it("describes its own database's tables only, whatever else the server holds", async () => {
    // The migrator asks the introspector whether its tables exist, several times a run: describing every other
    // schema of the server too would make each start-up slower with every database that shares it.
    const first = open(await freshDatabase(dialect));
    const second = open(await freshDatabase(dialect));
    await migrateToLatest(first.db, first.dialect);
    expect(await second.db.introspection.getTables({ withInternalKyselyTables: true })).toEqual([]);

    await migrateToLatest(second.db, second.dialect);
    const tables = await second.db.introspection.getTables({ withInternalKyselyTables: true });
    const ofFirst = await first.db.introspection.getTables({ withInternalKyselyTables: true });
    expect(tables.map((t) => t.name)).toEqual(ofFirst.map((t) => t.name));
    expect(tables.map((t) => t.name)).toEqual(expect.arrayContaining(['plinth_migrations', 'users']));
    expect(new Set(tables.map((t) => t.schema)).size).toBe(1);
    if (dialect === 'postgres') expect(tables[0]?.schema).not.toBe(ofFirst[0]?.schema);
    const email = tables.find((t) => t.name === 'users')?.columns.find((c) => c.name === 'email');
    expect(email).toMatchObject({ isNullable: false, isAutoIncrementing: false });
  });

  it('reads a timestamp back as the identical ISO-8601 string it was written as', async () => {
    const database = await freshDatabase(dialect);
    // A PostgreSQL session that is not on UTC prints timestamps with its own offset, including the odd
    // local-mean-time offsets (`+00:19:32`) of dates before time zones were standardised; reading must not
    // depend on the server's or the session's time zone.
    const url = dialect === 'postgres' ? withSessionTimeZone(database.url, 'Europe/Amsterdam') : database.url;
    const handle = open(database, url);
    await migrateToLatest(handle.db, handle.dialect);

    const written = [
      '2026-11-22T01:23:45.678Z',
      '2026-06-30T23:59:59.999Z',
      '2000-01-01T00:00:00.000Z',
      '1890-01-01T00:00:00.000Z',
    ];
    const ids = written.map((_, index) => `00000000-0000-7000-8000-${String(index + 1).padStart(12, '0')}`);
    await handle.db
      .insertInto('installation')
      .values(written.map((createdAt, index) => ({ id: ids[index] ?? '', created_at: createdAt })))
      .execute();

    const read = await handle.db
      .selectFrom('installation')
      .select(['id', 'created_at'])
      .where('id', 'in', ids)
      .orderBy('id')
      .execute();
    expect(read.map((r) => r.created_at)).toEqual(written);
  });
});

/** Adds `-c TimeZone=<zone>` to the connection's startup options, keeping the ones already there. */
function withSessionTimeZone(url: string, zone: string): string {
  const parsed = new URL(url);
  const options = parsed.searchParams.get('options');
  parsed.searchParams.set('options', `${options ? `${options} ` : ''}-c TimeZone=${zone}`);
  return parsed.toString();
}

/** Runs the `plinth` command as an operator would, with only the given environment (no inherited config). */
const plinth = runPlinth;

describe.each(testDialects)('plinth migrate (%s)', (dialect) => {
  it('reports pending migrations with exit code 1, applies them, then reports the database current', async () => {
    const database = await freshDatabase(dialect);
    const env = { DATABASE_URL: database.url, DATA_DIR: database.dataDir };

    const pending = await plinth(['migrate', 'status'], env);
    expect(pending.stderr).toBe('');
    expect(pending.code).toBe(1);
    for (const name of allMigrations) expect(pending.stdout).toMatch(new RegExp(`^pending\\s+${name}$`, 'm'));
    expect(pending.stdout).toContain(`Status: ${allMigrations.length} pending.`);

    const up = await plinth(['migrate', 'up'], env);
    expect(up.stderr).toBe('');
    expect(up.code).toBe(0);
    for (const name of allMigrations) expect(up.stdout).toContain(name);

    const current = await plinth(['migrate', 'status'], env);
    expect(current.code).toBe(0);
    for (const name of allMigrations)
      expect(current.stdout).toMatch(new RegExp(`^applied\\s+${name}\\s`, 'm'));
    expect(current.stdout).toContain('Status: current.');

    const again = await plinth(['migrate', 'up'], env);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('Database is up to date.');
  });

  it('names the database it acts on', async () => {
    const database = await freshDatabase(dialect);
    const result = await plinth(['migrate', 'status'], {
      DATABASE_URL: database.url,
      DATA_DIR: database.dataDir,
    });
    const url = new URL(database.url);
    expect(result.stdout.split('\n')[0]).toBe(
      dialect === 'sqlite'
        ? `Database: SQLite ${join(database.dataDir, 'plinth.db')}`
        : `Database: PostgreSQL ${url.hostname}:${url.port || 5432}${url.pathname}`,
    );
  });
});

describe('plinth command', () => {
  it('prints the server package version for --version', async () => {
    const result = await plinth(['--version']);
    expect(result.code).toBe(0);
    expect(result.stdout.trim()).toBe(serverPackage.version);
  });

  it('lists the serve and migrate commands in --help', async () => {
    const result = await plinth(['--help']);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^\s+serve\b/m);
    expect(result.stdout).toMatch(/^\s+migrate\b/m);
  });

  it('exits 1 without printing the password when the database is unreachable', async () => {
    const password = 'never-print-this-password';
    const dataDir = mkdtempSync(join(tmpdir(), 'plinth-cli-'));
    cleanups.push(async () => rmSync(dataDir, { recursive: true, force: true }));
    // Nothing listens on port 1 of the loopback interface, so the connection is refused at once.
    const result = await plinth(['migrate', 'status'], {
      DATABASE_URL: `postgres://plinth:${password}@127.0.0.1:1/plinth`,
      DATA_DIR: dataDir,
    });
    expect(result.code).toBe(1);
    expect(result.stdout).toContain('Database: PostgreSQL 127.0.0.1:1/plinth');
    expect(result.stderr).toContain('ECONNREFUSED');
    expect(`${result.stdout}${result.stderr}`).not.toContain(password);
  });
});
