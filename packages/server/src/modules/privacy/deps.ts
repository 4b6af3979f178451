import type { FastifyBaseLogger } from 'fastify';
import type { Clock } from '../../core/clock.ts';
import type { PersonalDataRegistry } from '../../core/personal-data.ts';
import type { RetentionRegistry } from '../../core/retention.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import type { AuthDeps } from '../auth/index.ts';
import type { JobQueue } from '../jobs/index.ts';
import type { Mailer } from '../mail/index.ts';
import type { Notifier } from '../notifications/index.ts';
import type { ConsentPurposeRegistry } from './purposes.ts';

/** What the privacy module needs, built once in the composition root. */
export interface PrivacyDeps {
  database: DatabaseHandle;
  clock: Clock;
  log: FastifyBaseLogger;
  /** The installation's declared consent purposes. */
  purposes: ConsentPurposeRegistry;
  /** Every module's declared personal data, which an export gathers. */
  personalData: PersonalDataRegistry;
  jobs: JobQueue;
  mailer: Mailer;
  /** Where download links point. */
  publicUrl: string;
  /** The installation's key; download links are signed with a key derived from it. */
  encryptionKey: Buffer;
  /** How long a finished export can be downloaded, in seconds (`DATA_EXPORT_TTL_SECONDS`). */
  exportTtlSeconds: number;
  /** Days between an erasure request and the erasure (`ERASURE_GRACE_DAYS`). */
  erasureGraceDays: number;
  /** Re-authentication and session revocation for erasure requests. */
  auth: AuthDeps;
  /** Every module's retention policies, which the daily retention job applies. */
  retention: RetentionRegistry;
  /** `RETENTION_DAYS`: policy name → days, over the policies' defaults. */
  retentionDays: Readonly<Record<string, number>>;
  /** In-app notifications: the person is told when their export is ready. */
  notifications: Pick<Notifier, 'create'>;
}
