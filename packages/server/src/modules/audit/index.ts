import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { DatabaseHandle } from '../../db/database.ts';
import type { AuthDeps } from '../auth/index.ts';
import type { AccessRegistry } from '../rbac/index.ts';
import { type ArchiveDeps, defineArchiveJob } from './archive.service.ts';
import { adminAuditRoutes, auditRoutes, myAuditRoutes } from './audit.routes.ts';
import { auditPersonalData } from './audit.service.ts';
import { auditPermissions } from './permissions.ts';
import { createAuditSequencer } from './sequencer.ts';

export { GENESIS_HASH } from './audit.chain.ts';
export { auditChains, verifyAuditChain } from './audit.service.ts';
export { auditReadsPlugin } from './audit-reads.ts';
export {
  type AuditActorRef,
  type AuditContext,
  type AuditEventInput,
  accountChain,
  actorOf,
  auditContextOf,
  type FieldChanges,
  fieldChanges,
  orgOfChain,
  PLATFORM_CHAIN,
  REDACTED,
  recordAuditEvent,
  requestAuditContext,
  systemAuditContext,
  withAuditedTransaction,
} from './record.ts';
export { sequenceAllChains } from './sequencer.ts';

/** The org-owned tables of the audit log (declared with `registerTenantTable` when the database is opened). */
export const AUDIT_TENANT_TABLES = [
  'audit_events',
  'audit_chain_heads',
  'audit_archives',
  'audit_pending',
] as const;

/** The OpenAPI tags of this module's routes. */
export const auditTags = [
  { name: 'Audit log', description: 'The tamper-evident record of who did what, when, in an organization.' },
];

/** What the audit module needs. */
export interface AuditDeps extends ArchiveDeps {
  registry: AccessRegistry;
  /** For the operators' routes (`superadminOnly`). */
  auth: AuthDeps;
  /** Between two background sequencer passes (`AUDIT_SEQUENCE_INTERVAL_MS`). */
  sequenceIntervalMs: number;
}

/** Declares the audit tables as org-owned on `database`; call before any module writes an event. */
export function registerAuditTables(database: DatabaseHandle): void {
  for (const table of AUDIT_TENANT_TABLES) database.registerTenantTable(table);
}

async function auditModule(app: FastifyInstance, { deps }: { deps: AuditDeps }): Promise<void> {
  registerAuditTables(deps.database);
  deps.registry.addPermissions(auditPermissions);
  app.personalData.add(auditPersonalData);
  defineArchiveJob(deps);
  const sequencer = createAuditSequencer({
    database: deps.database,
    log: deps.log,
    intervalMs: deps.sequenceIntervalMs,
  });
  app.addHook('onReady', async () => sequencer.start());
  app.addHook('onClose', async () => sequencer.stop());
  await app.register(auditRoutes, { database: deps.database, prefix: '/api/v1' });
  await app.register(adminAuditRoutes, { database: deps.database, auth: deps.auth, prefix: '/api/v1' });
  await app.register(myAuditRoutes, { database: deps.database, prefix: '/api/v1' });
}

/**
 * The audit log: the writing API every module uses (`recordAuditEvent` in the caller's transaction,
 * `fieldChanges`, `auditContextOf`), and the routes to list, verify and export an organization's events.
 */
export const auditLogModule = fp(auditModule, { name: 'plinth-audit', dependencies: ['plinth-rbac'] });
