import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyBaseLogger } from 'fastify';
import { backupSqliteFile, openSqliteConnection } from '../../db/sqlite-driver.ts';

/** A finished backup file's name: `plinth-<UTC timestamp>.db`, which sorts in time order. */
const BACKUP_FILE = /^plinth-\d{8}T\d{6}Z\.db$/;
/** A backup being written: `.plinth-<UTC timestamp>.db.<random>.tmp` (dot first, so listings skip it). */
const TEMPORARY_FILE = /^\.plinth-\d{8}T\d{6}Z\.db\.[0-9a-f]+\.tmp$/;
/** A temporary file this old is left over from a crash (no backup takes this long) and is removed. */
const STALE_TEMPORARY_MS = 24 * 3600 * 1000;

export interface BackupOptions {
  /** The SQLite database file to back up. */
  source: string;
  /** The directory backups are written to; created (mode 0700) when missing. */
  dir: string;
  /** How many backups to keep, newest first; older ones are deleted after this one is in place. */
  keep: number;
  /** The time the backup's name carries (UTC). */
  now: Date;
  log?: FastifyBaseLogger;
}

export interface BackupResult {
  /** The backup's path. */
  file: string;
  bytes: number;
  /** The paths of the older backups deleted to keep `keep`. */
  removed: string[];
}

/** `plinth-20261203T020000Z.db` for 2026-12-03 02:00:00 UTC. */
export function backupFileName(at: Date): string {
  const stamp = at
    .toISOString()
    .replace(/\.\d{3}Z$/, 'Z')
    .replaceAll('-', '')
    .replaceAll(':', '');
  return `plinth-${stamp}.db`;
}

/**
 * Backs up a SQLite database: SQLite's online backup into a temporary file in `dir`; that file turned into a
 * self-contained one (rollback journal instead of WAL, so it is a single file with nothing beside it); opened
 * read-only and checked with `pragma integrity_check`; made readable by the owner only (it holds password
 * hashes and encrypted secrets), flushed to disk, and renamed to its final name in one atomic step — a file with
 * a final name is always a complete, verified backup. Then the oldest backups beyond `keep` are deleted. On any
 * failure the temporary file is removed and the error thrown (the job queue logs and retries it).
 */
export async function backupSqlite(options: BackupOptions): Promise<BackupResult> {
  const { source, dir, keep, now } = options;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const name = backupFileName(now);
  const temporary = join(dir, `.${name}.${randomBytes(6).toString('hex')}.tmp`);
  const file = join(dir, name);
  try {
    await backupSqliteFile(source, temporary);
    const copy = openSqliteConnection(temporary);
    try {
      copy.exec('PRAGMA journal_mode = DELETE');
    } finally {
      copy.close();
    }
    verifyBackup(temporary);
    await chmod(temporary, 0o600);
    await fsync(temporary);
    await rename(temporary, file);
    await fsync(dir);
  } catch (error) {
    await removeDatabaseFile(temporary);
    throw error;
  }
  const { size } = await stat(file);
  const removed = await prune(dir, keep, now);
  options.log?.info({ file, bytes: size, removed }, 'database backup written');
  return { file, bytes: size, removed };
}

/** Opens `path` read-only and throws unless SQLite's integrity check reports exactly `ok`. */
export function verifyBackup(path: string): void {
  const db = openSqliteConnection(path, { readonly: true });
  try {
    const rows = db.prepare('PRAGMA integrity_check').all([]) as { integrity_check?: unknown }[];
    const verdict = rows.map((r) => String(r.integrity_check)).join('; ');
    if (verdict !== 'ok') throw new Error(`the backup failed its integrity check: ${verdict.slice(0, 500)}`);
  } finally {
    db.close();
  }
}

/** The finished backups in `dir`, newest first. */
export async function listBackups(dir: string): Promise<string[]> {
  const names = await readdir(dir).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return [] as string[];
    throw error;
  });
  return names
    .filter((n) => BACKUP_FILE.test(n))
    .sort()
    .reverse();
}

/** Deletes the backups beyond the `keep` newest, and temporary files left over from a crash. */
async function prune(dir: string, keep: number, now: Date): Promise<string[]> {
  const removed: string[] = [];
  for (const name of (await listBackups(dir)).slice(keep)) {
    const path = join(dir, name);
    await rm(path, { force: true });
    removed.push(path);
  }
  for (const name of await readdir(dir)) {
    if (!TEMPORARY_FILE.test(name)) continue;
    const path = join(dir, name);
    const { mtimeMs } = await stat(path).catch(() => ({ mtimeMs: now.getTime() }));
    if (now.getTime() - mtimeMs > STALE_TEMPORARY_MS) await removeDatabaseFile(path);
  }
  return removed;
}

/** Removes a database file and whatever SQLite may have left beside it. */
async function removeDatabaseFile(path: string): Promise<void> {
  for (const suffix of ['', '-wal', '-shm', '-journal']) await rm(`${path}${suffix}`, { force: true });
}

/** Flushes a file (or a directory, so that a rename in it is durable) to disk. */
async function fsync(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
