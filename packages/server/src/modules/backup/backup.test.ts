import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { PlinthApp } from '../../app.ts';
import { openSqliteConnection } from '../../db/sqlite-driver.ts';
import { createFakeClock, DAY, type FakeClock } from '../../test/auth-helpers.ts';
import { runPlinth } from '../../test/cli.ts';
import { testDialects } from '../../test/dialects.ts';
import { buildTestApp } from '../../test/harness.ts';
import { signedInUser } from '../../test/org-helpers.ts';
import { BACKUP_JOB, listBackups, verifyBackup } from './index.ts';

// The nightly backup of embedded mode: at 02:00 UTC a verified, self-contained copy of the SQLite database in
// `backups/` beside it, the BACKUP_KEEP newest kept; on PostgreSQL no such job exists.

describe.each(testDialects)('nightly backup (%s)', (dialect) => {
  const apps: PlinthApp[] = [];
  afterEach(async () => {
    for (const app of apps.splice(0)) await app.close();
  });

  async function start(env: Record<string, string> = {}): Promise<{ app: PlinthApp; clock: FakeClock }> {
    const clock = createFakeClock('2030-07-01T12:00:00.000Z');
    const app = await buildTestApp(dialect, { clock, env });
    apps.push(app);
    return { app, clock };
  }

  const backupJobs = (app: PlinthApp) =>
    app.database.db
      .selectFrom('jobs')
      .select(['state', 'last_error'])
      .where('name', '=', BACKUP_JOB)
      .execute();

  if (dialect === 'sqlite') {
    it('writes a verified copy that holds the data at 02:00 UTC, and keeps only the BACKUP_KEEP newest', async () => {
      const { app, clock } = await start({ BACKUP_KEEP: '2' });
      const dir = app.config.backup.dir;
      expect(dir).toBe(join(app.config.dataDir, 'backups'));
      await signedInUser(app, 'backed-up@example.test');
      await app.jobs.drain();
      expect(await listBackups(dir)).toEqual([]);

      clock.set('2030-07-02T02:00:05.000Z');
      await app.jobs.drain();
      expect(await backupJobs(app)).toEqual([{ state: 'succeeded', last_error: null }]);
      expect(await listBackups(dir)).toEqual(['plinth-20300702T020005Z.db']);
      const file = join(dir, 'plinth-20300702T020005Z.db');
      // Owner-only, a single self-contained file (no -wal or -shm beside it), and it passes the integrity check.
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(readdirSync(dir)).toEqual(['plinth-20300702T020005Z.db']);
      verifyBackup(file);
      const copy = openSqliteConnection(file, { readonly: true });
      try {
        expect(copy.prepare('PRAGMA journal_mode').all([])).toEqual([{ journal_mode: 'delete' }]);
        expect(copy.prepare('select email from users').all([])).toEqual([
          { email: 'backed-up@example.test' },
        ]);
        expect(
          copy
            .prepare("select count(*) as n from plinth_migrations where name like '20261202T0400%'")
            .all([]),
        ).toEqual([{ n: 1 }]);
      } finally {
        copy.close();
      }

      for (let night = 0; night < 3; night++) {
        clock.advance(DAY);
        await app.jobs.drain();
      }
      expect(await listBackups(dir)).toEqual(['plinth-20300705T020005Z.db', 'plinth-20300704T020005Z.db']);
      expect(readdirSync(dir).sort()).toEqual(['plinth-20300704T020005Z.db', 'plinth-20300705T020005Z.db']);
    });

    it('fails the job, leaving no file behind, when the backup cannot be written; the queue retries it', async () => {
      const { app, clock } = await start();
      // A file where the directory should be: mkdir fails, as on a broken mount.
      writeFileSync(app.config.backup.dir, 'not a directory');
      await app.jobs.drain();
      clock.set('2030-07-02T02:00:00.000Z');
      await app.jobs.drain();
      const [job] = await backupJobs(app);
      expect(job?.state).toBe('queued');
      expect(job?.last_error).toMatch(/EEXIST|ENOTDIR/);
    });

    it('refuses a corrupt file in verification', () => {
      const file = join(apps[0]?.config.dataDir ?? '/tmp', `corrupt-${process.pid}.db`);
      writeFileSync(file, Buffer.alloc(8192, 7));
      expect(() => verifyBackup(file)).toThrow();
    });
  } else {
    it('declares no backup job or schedule on PostgreSQL, and writes nothing', async () => {
      const { app, clock } = await start();
      await app.jobs.drain();
      clock.set('2030-07-02T02:00:05.000Z');
      await app.jobs.drain();
      expect(await backupJobs(app)).toEqual([]);
      const schedules = await app.database.db.selectFrom('job_schedules').select('name').execute();
      expect(schedules.map((s) => s.name)).not.toContain(BACKUP_JOB);
      expect(schedules.map((s) => s.name)).toContain('reports.daily');
      expect(existsSync(app.config.backup.dir)).toBe(false);
    });
  }
});

describe('plinth backup', () => {
  it('backs up the SQLite database on demand, and refuses PostgreSQL', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'plinth-backup-cli-'));
    try {
      const env = {
        DATA_DIR: dataDir,
        DATABASE_URL: `sqlite:${join(dataDir, 'plinth.db')}`,
        BACKUP_KEEP: '1',
      };
      const migrated = await runPlinth(['migrate'], env);
      expect(migrated.code, migrated.stderr).toBe(0);
      const res = await runPlinth(['backup', '--dir', join(dataDir, 'manual')], env);
      expect(res.code, res.stderr).toBe(0);
      expect(res.stdout).toMatch(
        /Backup written: .*plinth-\d{8}T\d{6}Z\.db \(\d+ bytes, integrity check ok\)/,
      );
      const made = await listBackups(join(dataDir, 'manual'));
      expect(made).toHaveLength(1);
      verifyBackup(join(dataDir, 'manual', made[0] ?? ''));
      const copy = openSqliteConnection(join(dataDir, 'manual', made[0] ?? ''), { readonly: true });
      try {
        expect(copy.prepare('select count(*) as n from plinth_migrations').all([])).not.toEqual([{ n: 0 }]);
      } finally {
        copy.close();
      }

      const refused = await runPlinth(['backup'], {
        ...env,
        DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none',
      });
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain('pg_dump');
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 90_000);
});
