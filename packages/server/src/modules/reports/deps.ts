import type { FastifyBaseLogger } from 'fastify';
import type { Clock } from '../../core/clock.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import type { JobQueue } from '../jobs/index.ts';
import type { Mailer } from '../mail/index.ts';
import type { ConsentPurposeRegistry } from '../privacy/index.ts';
import type { AccessRegistry, AccessResolver } from '../rbac/index.ts';

/** What the reports module needs, built once in the composition root. */
export interface ReportDeps {
  database: DatabaseHandle;
  clock: Clock;
  log: FastifyBaseLogger;
  jobs: JobQueue;
  mailer: Mailer;
  /** The permission registry: `reports:read` is declared here. */
  registry: AccessRegistry;
  /** Resolves a role's permissions (built-in or custom), to find who receives the mail. */
  access: Pick<AccessResolver, 'rolePermissions'>;
  /** The consent purposes: `usage_report_email` (withdrawing it stops the mail) is declared here. */
  purposes: ConsentPurposeRegistry;
}
