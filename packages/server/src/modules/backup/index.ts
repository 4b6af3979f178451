import type { FastifyBaseLogger } from 'fastify';
import { z } from 'zod';
import type { BackupConfig, DatabaseConfig } from '../../config.ts';
import type { Clock } from '../../core/clock.ts';
import type { JobQueue } from '../jobs/index.ts';
import { backupSqlite } from './backup.service.ts';

export {
  type BackupOptions,
  type BackupResult,
  backupFileName,
  backupSqlite,
  listBackups,
  verifyBackup,
} from './backup.service.ts';

/** The job that writes one backup, and its nightly schedule (UTC). */
export const BACKUP_JOB = 'backup.sqlite';
export const BACKUP_SCHEDULE = '0 2 * * *';

export interface BackupDeps {
  database: DatabaseConfig;
  backup: BackupConfig;
  jobs: JobQueue;
  clock: Clock;
  log: FastifyBaseLogger;
}

/**
 * Declares the nightly backup of embedded mode: on SQLite, the `backup.sqlite` job and its 02:00 UTC schedule;
 * on PostgreSQL nothing at all (its backups are the operator's: `pg_dump`, or the provider's snapshots and
 * point-in-time recovery; docs/operations.md). Returns whether the schedule was declared.
 */
export function defineBackupJob(deps: BackupDeps): boolean {
  const { database } = deps;
  if (database.dialect !== 'sqlite') return false;
  deps.jobs.define(BACKUP_JOB, {
    payload: z.strictObject({}),
    handler: async () => {
      const started = Date.now();
      const result = await backupSqlite({
        source: database.path,
        dir: deps.backup.dir,
        keep: deps.backup.keep,
        now: deps.clock.now(),
      });
      deps.log.info(
        { file: result.file, bytes: result.bytes, removed: result.removed, durationMs: Date.now() - started },
        'database backup written',
      );
    },
    // A failed backup is logged by the queue and retried: a full disk freed, a transient I/O error.
    maxAttempts: 4,
    backoffSeconds: 300,
  });
  deps.jobs.schedule(BACKUP_JOB, BACKUP_SCHEDULE, { name: BACKUP_JOB, payload: {} });
  return true;
}
