import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import type { FastifyBaseLogger } from 'fastify';
import { z } from 'zod';
import type { Clock } from '../../core/clock.ts';
import { newId } from '../../core/ids.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import type { JobQueue } from '../jobs/index.ts';
import * as repo from './audit.repo.ts';
import { auditChains, linkHolds } from './audit.service.ts';
import { orgOfChain } from './record.ts';

/**
 * Audit retention: events older than their chain's retention period leave the database as an archived segment —
 * a gzip NDJSON file of the stored rows, hashes included, so the segment can be verified on its own — and the
 * chain stays verifiable, because the head keeps the segment's last hash (`archived_hash`), which the first
 * remaining event links to. The archive row records the range, that hash, the file and its SHA-256.
 */

export const ARCHIVE_JOB = 'audit.archive';
/** Daily, at 04:00 UTC: after the retention job (03:30), on its own schedule. */
const ARCHIVE_SCHEDULE = '0 4 * * *';
const PAGE_SIZE = 500;

export interface ArchiveDeps {
  database: DatabaseHandle;
  clock: Clock;
  log: FastifyBaseLogger;
  jobs: JobQueue;
  /** Where segment files go (`AUDIT_ARCHIVE_DIR`). */
  archiveDir: string;
  /** Days for chains without a setting of their own (`AUDIT_RETENTION_DAYS`); 0 keeps events for ever. */
  defaultRetentionDays: number;
}

export function defineArchiveJob(deps: ArchiveDeps): void {
  deps.jobs.define(ARCHIVE_JOB, {
    payload: z.strictObject({}),
    handler: async () => void (await archiveExpiredEvents(deps)),
  });
  deps.jobs.schedule(ARCHIVE_JOB, ARCHIVE_SCHEDULE, { name: ARCHIVE_JOB, payload: {} });
}

/** A file-system-safe form of a chain name (`user:<id>` has a colon). */
const fileNameOf = (chain: string) => chain.replace(/[^a-z0-9-]/gi, '-');

/**
 * Archives, for every chain with a retention period, the events older than it. An organization's period is its
 * own setting or the installation's default; an account's and the installation's chains follow the default.
 * Returns the segments written.
 */
export async function archiveExpiredEvents(
  deps: ArchiveDeps,
): Promise<{ chain: string; fromSeq: number; throughSeq: number }[]> {
  const settings = new Map(
    (await deps.database.db.selectFrom('organizations').select(['id', 'audit_retention_days']).execute()).map(
      (o) => [o.id, o.audit_retention_days],
    ),
  );
  const archived = [];
  for (const chain of await auditChains(deps.database)) {
    const org = orgOfChain(chain);
    const days = (org === null ? null : settings.get(org)) ?? deps.defaultRetentionDays;
    if (days <= 0) continue;
    const cutoff = new Date(deps.clock.now().getTime() - days * 86_400_000).toISOString();
    const segment = await archiveChain(deps, chain, cutoff);
    if (segment) archived.push({ chain, ...segment });
  }
  return archived;
}

/**
 * Archives one chain's events before `cutoff`: checks the segment links up from the last archive as it writes it
 * (a broken segment is not archived — its evidence stays in the database and the error is logged), writes it to a
 * temporary file renamed into place, then in one transaction records the archive, moves the head's archived
 * range forward (locking it, so a concurrent run archives nothing twice) and deletes the segment's events.
 */
async function archiveChain(
  deps: ArchiveDeps,
  chain: string,
  cutoff: string,
): Promise<{ fromSeq: number; throughSeq: number } | null> {
  const { database } = deps;
  const head = await database.withTenant(chain, (db) => repo.readHead(db, chain));
  if (!head) return null;
  const last = await database.withTenant(chain, (db) =>
    db
      .selectFrom('audit_events')
      .select((eb) => eb.fn.max('seq').as('seq'))
      .where('org_id', '=', chain)
      .where('at', '<', cutoff)
      .executeTakeFirst(),
  );
  const throughSeq = Number(last?.seq ?? 0);
  const fromSeq = Number(head.archived_through_seq) + 1;
  if (throughSeq < fromSeq) return null;

  await mkdir(join(deps.archiveDir, fileNameOf(chain)), { recursive: true });
  // Named by range and a run id: two replicas racing over one range write different files, and the loser
  // removes only its own.
  const location = join(deps.archiveDir, fileNameOf(chain), `${fromSeq}-${throughSeq}-${newId()}.ndjson.gz`);
  const temporary = `${location}.tmp`;
  const digest = createHash('sha256');
  let prevHash = head.archived_hash;
  let count = 0;
  async function* lines(): AsyncGenerator<string> {
    for (let after = fromSeq - 1; after < throughSeq; ) {
      const rows = await database.withTenant(chain, (db) =>
        repo.eventsAfter(db, chain, after, PAGE_SIZE, {}, throughSeq),
      );
      if (rows.length === 0) break;
      for (const row of rows) {
        if (Number(row.seq) !== after + 1 || !linkHolds(row, prevHash)) {
          throw new Error(`${chain}: event ${after + 1} does not verify; the segment is not archived`);
        }
        prevHash = row.hash;
        after = Number(row.seq);
        count += 1;
        yield `${JSON.stringify(row)}\n`;
      }
    }
  }
  try {
    const gzip = createGzip();
    gzip.on('data', (chunk: Buffer) => digest.update(chunk));
    await pipeline(Readable.from(lines()), gzip, createWriteStream(temporary, { flags: 'wx' }));
    if (count !== throughSeq - fromSeq + 1)
      throw new Error(`${chain}: events ${fromSeq}–${throughSeq} are not all there`);
    await rename(temporary, location);
  } catch (err) {
    await rm(temporary, { force: true });
    deps.log.error({ err, chain }, 'audit segment not archived');
    return null;
  }

  const moved = await database.withTenant(chain, async (db) => {
    const locked = await repo.lockHead(db, chain);
    if (!locked || Number(locked.archived_through_seq) !== fromSeq - 1) return false;
    await db
      .insertInto('audit_archives')
      .values({
        id: newId(),
        org_id: chain,
        from_seq: fromSeq,
        through_seq: throughSeq,
        head_hash: prevHash,
        event_count: count,
        location,
        sha256: digest.digest('hex'),
        created_at: deps.clock.now().toISOString(),
      })
      .execute();
    await db
      .updateTable('audit_chain_heads')
      .set({ archived_through_seq: throughSeq, archived_hash: prevHash })
      .where('org_id', '=', chain)
      .execute();
    await db.deleteFrom('audit_events').where('org_id', '=', chain).where('seq', '<=', throughSeq).execute();
    return true;
  });
  if (!moved) {
    await rm(location, { force: true });
    return null;
  }
  deps.log.info({ chain, fromSeq, throughSeq, location }, 'archived audit events');
  return { fromSeq, throughSeq };
}
