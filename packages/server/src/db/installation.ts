import type { DatabaseHandle } from './database.ts';

/**
 * The id of this installation, shared by every replica on its database; null before the migrations have
 * created it (or while the database is unreachable).
 */
export async function readInstallationId(database: DatabaseHandle): Promise<string | null> {
  // The primary: a replica that lags behind a fresh installation must not report it as missing.
  const row = await database.db
    .selectFrom('installation')
    .select('id')
    .executeTakeFirst()
    .catch(() => undefined);
  return row?.id ?? null;
}
