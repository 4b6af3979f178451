import { afterEach, describe, expect, it } from 'vitest';
import { buildApp, type PlinthApp } from '../../app.ts';
import type { Dialect } from '../../db/database.ts';
import { bearer, login, loginResponse, STRONG_PASSWORDS } from '../../test/auth-helpers.ts';
import { type CliResult, runPlinth } from '../../test/cli.ts';
import { testDialects } from '../../test/dialects.ts';
import { buildTestApp, createTestDatabase, type TestDatabase, testConfig } from '../../test/harness.ts';

const [ADMIN_PASSWORD = '', OTHER_PASSWORD = ''] = STRONG_PASSWORDS;
const BOOTSTRAP_ENV = { PLINTH_ADMIN_EMAIL: 'Operator@Example.com', PLINTH_ADMIN_PASSWORD: ADMIN_PASSWORD };

/** The repository root, where `node packages/server/bin/plinth.js` is run from. */

const usersOf = (app: PlinthApp) =>
  app.database.db
    .selectFrom('users')
    .select(['id', 'email', 'name', 'platform_role', 'email_verified_at'])
    .execute();

describe('embedded-mode bootstrap (SQLite)', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function database(): Promise<TestDatabase> {
    const db = await createTestDatabase('sqlite');
    cleanups.push(() => db.drop());
    return db;
  }

  it('PLINTH_ADMIN_EMAIL and PLINTH_ADMIN_PASSWORD create exactly one superadmin, who can sign in', async () => {
    const app = await buildTestApp('sqlite', { env: BOOTSTRAP_ENV });
    cleanups.push(() => app.close());

    const users = await usersOf(app);
    expect(users).toHaveLength(1);
    expect(users[0]).toMatchObject({ email: 'operator@example.com', platform_role: 'superadmin' });
    expect(users[0]?.email_verified_at).not.toBeNull();

    const { accessToken } = await login(app, 'operator@example.com', ADMIN_PASSWORD);
    const me = await app.inject({ method: 'GET', url: '/api/v1/me', headers: bearer(accessToken) });
    expect(me.statusCode).toBe(200);
    expect(me.json()).toMatchObject({
      email: 'operator@example.com',
      platformRole: 'superadmin',
      emailVerified: true,
    });
  });

  it('is idempotent: later starts, even with other values, create no further operator', async () => {
    const db = await database();
    const first = await buildApp(testConfig(db, BOOTSTRAP_ENV));
    const created = await usersOf(first);
    await first.close();

    const second = await buildApp(testConfig(db, BOOTSTRAP_ENV));
    expect(await usersOf(second)).toEqual(created);
    await second.close();

    const third = await buildApp(
      testConfig(db, {
        PLINTH_ADMIN_EMAIL: 'someone-else@example.com',
        PLINTH_ADMIN_PASSWORD: OTHER_PASSWORD,
      }),
    );
    cleanups.push(() => third.close());
    expect(await usersOf(third)).toEqual(created);
    expect((await loginResponse(third, 'operator@example.com', ADMIN_PASSWORD)).statusCode).toBe(200);
  });

  it('refuses to start with a weak PLINTH_ADMIN_PASSWORD, saying why', async () => {
    const db = await database();

    await expect(
      buildApp(
        testConfig(db, { PLINTH_ADMIN_EMAIL: 'operator@example.com', PLINTH_ADMIN_PASSWORD: 'admin' }),
      ),
    ).rejects.toThrow(/at least 15 characters/);
  });
});

describe.each(testDialects)('accounts at first start on %s', (dialect) => {
  it('there are no default accounts', async () => {
    const app = await buildTestApp(dialect);
    try {
      expect(await usersOf(app)).toEqual([]);
      for (const [email, password] of [
        ['admin@plinth.local', 'admin'],
        ['admin@example.com', 'admin'],
        ['root@plinth.local', 'root'],
      ] as const) {
        expect((await loginResponse(app, email, password)).statusCode).toBe(401);
      }
    } finally {
      await app.close();
    }
  });
});

/** Runs `plinth <args>` against a test database. */
function runCli(db: TestDatabase, args: string[]): Promise<CliResult> {
  return runPlinth(args, { DATABASE_URL: db.url, DATA_DIR: db.dataDir, AUTO_MIGRATE: 'true' });
}

describe.each(testDialects)('plinth create-admin on %s', (dialect: Dialect) => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function database(): Promise<TestDatabase> {
    const db = await createTestDatabase(dialect);
    cleanups.push(() => db.drop());
    return db;
  }

  async function appOn(db: TestDatabase): Promise<PlinthApp> {
    const app = await buildApp(testConfig(db));
    cleanups.push(() => app.close());
    return app;
  }

  it('creates a verified superadmin who can sign in, and exits 0', async () => {
    const db = await database();

    const result = await runCli(db, [
      'create-admin',
      '--email',
      'Operator@Example.com',
      '--password',
      ADMIN_PASSWORD,
    ]);

    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/Created superadmin [0-9a-f-]{36}\./);
    expect(result.stdout).not.toContain(ADMIN_PASSWORD);
    const app = await appOn(db);
    const users = await usersOf(app);
    expect(users).toEqual([
      expect.objectContaining({
        email: 'operator@example.com',
        name: 'Administrator',
        platform_role: 'superadmin',
      }),
    ]);
    expect(users[0]?.email_verified_at).not.toBeNull();
    const { accessToken } = await login(app, 'operator@example.com', ADMIN_PASSWORD);
    expect(
      (await app.inject({ method: 'GET', url: '/api/v1/me', headers: bearer(accessToken) })).json(),
    ).toMatchObject({
      platformRole: 'superadmin',
    });
  });

  it('refuses a weak password: exits 1 with a readable message and creates nothing', async () => {
    const db = await database();

    const result = await runCli(db, [
      'create-admin',
      '--email',
      'operator@example.com',
      '--password',
      'admin123',
    ]);

    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/at least 15 characters/);
    // A sentence for a person, not a stack trace.
    expect(result.stderr).not.toMatch(/\n\s+at /);
    expect(result.stderr).not.toContain('AppError');
    const app = await appOn(db);
    expect(await usersOf(app)).toEqual([]);
  });
});
