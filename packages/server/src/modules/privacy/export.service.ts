import { type DataExport, privacyErrors } from '@plinth/shared';
import { strToU8, zipSync } from 'fflate';
import type { Selectable } from 'kysely';
import { z } from 'zod';
import { deriveKey, hmacSha256Hex, safeEqual } from '../../core/crypto.ts';
import { AppError } from '../../core/errors.ts';
import { newId } from '../../core/ids.ts';
import type { DataExportsTable } from '../../db/schema.ts';
import { type AccountCaller, auditAccount } from '../auth/index.ts';
import type { JobContext } from '../jobs/index.ts';
import { mailTemplates, sendInBackground } from '../mail/index.ts';
import type { PrivacyDeps } from './deps.ts';

/**
 * Data exports (GDPR art. 15 and 20): a person asks, a background job gathers every section the modules declare
 * (`app.personalData`) into a zip of JSON files, the person is mailed a signed link that downloads it once until
 * it expires. Requests, builds and downloads are recorded on the person's audit chain.
 */

type ExportRow = Selectable<DataExportsTable>;

/** The job that builds an archive. */
export const EXPORT_JOB = 'privacy.export';
const ExportJobPayload = z.strictObject({ exportId: z.uuid() });
/** The archive's format name, in its manifest: a consumer checks it before reading the sections. */
const ARCHIVE_FORMAT = 'plinth-data-export/1';
const EXPORT_MAX_ATTEMPTS = 5;

/** The key download links are signed with: derived from ENCRYPTION_KEY for this purpose only. */
const linkKey = (deps: Pick<PrivacyDeps, 'encryptionKey'>) =>
  deriveKey(deps.encryptionKey, 'plinth data export download links');

function linkSignature(deps: Pick<PrivacyDeps, 'encryptionKey'>, exportId: string, expires: number): string {
  return hmacSha256Hex(linkKey(deps), `${exportId}.${expires}`);
}

/** The signed link of a ready export: it names the export and its expiry, and needs no other credential. */
function downloadUrl(deps: PrivacyDeps, row: ExportRow): string | null {
  if (row.state !== 'ready' || row.expires_at === null) return null;
  const expires = Math.floor(new Date(row.expires_at).getTime() / 1000);
  const signature = linkSignature(deps, row.id, expires);
  return `${deps.publicUrl}/api/v1/me/exports/${row.id}/download?expires=${expires}&signature=${signature}`;
}

function toDataExport(deps: PrivacyDeps, row: ExportRow): DataExport {
  return {
    id: row.id,
    status: row.state,
    requestedAt: row.requested_at,
    completedAt: row.completed_at,
    expiresAt: row.expires_at,
    downloadedAt: row.downloaded_at,
    downloadUrl: downloadUrl(deps, row),
    byteSize: row.byte_size,
  };
}

/** Registers the job that builds archives. */
export function defineExportJob(deps: PrivacyDeps): void {
  deps.jobs.define(EXPORT_JOB, {
    payload: ExportJobPayload,
    maxAttempts: EXPORT_MAX_ATTEMPTS,
    handler: ({ exportId }, context) => buildExport(deps, exportId, context),
  });
}

/**
 * Asks for an export. While one of the caller's exports is still being built, answers with that one instead of
 * queueing another. The request, its job and its audit event commit together.
 */
export async function requestExport(deps: PrivacyDeps, caller: AccountCaller): Promise<{ id: string }> {
  const userId = caller.actor.id;
  return auditAccount(deps, userId, caller, async (db, record) => {
    const pending = await db
      .selectFrom('data_exports')
      .select('id')
      .where('user_id', '=', userId)
      .where('state', '=', 'pending')
      .executeTakeFirst();
    if (pending) return { id: pending.id };
    const id = newId();
    await db
      .insertInto('data_exports')
      .values({
        id,
        user_id: userId,
        state: 'pending',
        requested_at: deps.clock.now().toISOString(),
        completed_at: null,
        expires_at: null,
        downloaded_at: null,
        archive: null,
        byte_size: null,
      })
      .execute();
    await deps.jobs.enqueue(EXPORT_JOB, { exportId: id }, { db, idempotencyKey: `${EXPORT_JOB}:${id}` });
    await record({ action: 'user.export_requested', target: { type: 'data_export', id } });
    return { id };
  });
}

/** One of the caller's exports; another person's is "not found". */
export async function getExport(deps: PrivacyDeps, userId: string, exportId: string): Promise<DataExport> {
  const row = await deps.database.db
    .selectFrom('data_exports')
    .selectAll()
    .where('id', '=', exportId)
    .where('user_id', '=', userId)
    .executeTakeFirst();
  if (!row) throw new AppError(privacyErrors.EXPORT_NOT_FOUND);
  return toDataExport(deps, { ...row, archive: null });
}

/**
 * The job: reads every declared section in one transaction across tenants (a consistent snapshot on
 * PostgreSQL), zips them with a manifest, stores the archive, and mails the link. Idempotent: an export that is
 * no longer pending is left alone, so a retry after a crash does not build it twice. On its last attempt, a
 * failure marks the export failed, so its owner is not left waiting.
 */
async function buildExport(deps: PrivacyDeps, exportId: string, context: JobContext): Promise<void> {
  const row = await deps.database.db
    .selectFrom('data_exports')
    .select(['id', 'user_id', 'state', 'requested_at'])
    .where('id', '=', exportId)
    .executeTakeFirst();
  if (row?.state !== 'pending') return;
  try {
    const archive = await deps.database.acrossTenants(async (db) => {
      const files: Record<string, Uint8Array> = {};
      const sections: string[] = [];
      for (const source of deps.personalData.list()) {
        files[`${source.name}.json`] = strToU8(JSON.stringify(await source.export(db, row.user_id), null, 2));
        sections.push(source.name);
      }
      const manifest = {
        format: ARCHIVE_FORMAT,
        exportId,
        userId: row.user_id,
        requestedAt: row.requested_at,
        generatedAt: deps.clock.now().toISOString(),
        sections,
      };
      files['manifest.json'] = strToU8(JSON.stringify(manifest, null, 2));
      return Buffer.from(zipSync(files, { level: 6 }));
    });
    const now = deps.clock.now();
    const expiresAt = new Date(now.getTime() + deps.exportTtlSeconds * 1000).toISOString();
    // The notification commits with the state change, so a retry that finds the export ready adds none.
    const ready = await deps.database.db.transaction().execute(async (trx) => {
      const updated = await trx
        .updateTable('data_exports')
        .set({
          state: 'ready',
          archive,
          byte_size: archive.byteLength,
          completed_at: now.toISOString(),
          expires_at: expiresAt,
        })
        .where('id', '=', exportId)
        .where('state', '=', 'pending')
        .returningAll()
        .executeTakeFirst();
      if (updated) {
        // The signed link is a credential: it stays in the mail and the export's page, not in the notification.
        await deps.notifications.create(trx, {
          userId: updated.user_id,
          type: 'privacy.export_ready',
          title: 'Your data export is ready',
          body: `Download it from the link in the mail we sent, or from the export's page, by ${expiresAt}. It can be downloaded once.`,
          data: { exportId },
        });
      }
      return updated;
    });
    if (ready) await notifyReady(deps, ready);
  } catch (error) {
    if (context.attempt >= EXPORT_MAX_ATTEMPTS) {
      await deps.database.db
        .updateTable('data_exports')
        .set({ state: 'failed', completed_at: deps.clock.now().toISOString() })
        .where('id', '=', exportId)
        .where('state', '=', 'pending')
        .execute();
    }
    throw error;
  }
}

async function notifyReady(deps: PrivacyDeps, row: ExportRow): Promise<void> {
  const user = await deps.database.db
    .selectFrom('users')
    .select(['email', 'name'])
    .where('id', '=', row.user_id)
    .executeTakeFirst();
  const url = downloadUrl(deps, row);
  if (!user || !url || !row.expires_at) return;
  const message = mailTemplates.dataExportReady({
    name: user.name,
    url,
    expiresAt: new Date(row.expires_at),
  });
  sendInBackground(deps.mailer, { to: user.email, ...message, actionUrl: url }, deps.log);
}

/**
 * Hands out a ready archive once, for a link whose signature verifies (compared in constant time) and whose
 * expiry has not passed: marking it downloaded, dropping the archive from the database and recording the
 * download on the owner's chain happen in one transaction, so two clicks on the link download it once.
 */
export async function downloadExport(
  deps: PrivacyDeps,
  exportId: string,
  link: { expires: number; signature: string },
  caller: (ownerId: string) => AccountCaller,
): Promise<{ archive: Buffer; fileName: string }> {
  if (!safeEqual(link.signature, linkSignature(deps, exportId, link.expires))) {
    throw new AppError(privacyErrors.INVALID_DOWNLOAD_LINK);
  }
  const now = deps.clock.now();
  if (link.expires * 1000 <= now.getTime()) throw new AppError(privacyErrors.EXPORT_GONE);
  const row = await deps.database.db
    .selectFrom('data_exports')
    .select('user_id')
    .where('id', '=', exportId)
    .executeTakeFirst();
  if (!row) throw new AppError(privacyErrors.EXPORT_NOT_FOUND);
  const ownerId = row.user_id;
  const archive = await auditAccount(deps, ownerId, caller(ownerId), async (db, record) => {
    const ready = await db
      .selectFrom('data_exports')
      .select('archive')
      .where('id', '=', exportId)
      .where('state', '=', 'ready')
      .where('expires_at', '>', now.toISOString())
      .executeTakeFirst();
    if (!ready?.archive) return null;
    // The conditional update is the gate: of two downloads at once, only one changes the row.
    const taken = await db
      .updateTable('data_exports')
      .set({ state: 'downloaded', downloaded_at: now.toISOString(), archive: null })
      .where('id', '=', exportId)
      .where('state', '=', 'ready')
      .executeTakeFirst();
    if (Number(taken.numUpdatedRows) !== 1) return null;
    await record({ action: 'user.export_downloaded', target: { type: 'data_export', id: exportId } });
    return Buffer.from(ready.archive);
  });
  if (archive === null) throw new AppError(privacyErrors.EXPORT_GONE);
  return { archive, fileName: `plinth-export-${exportId}.zip` };
}
