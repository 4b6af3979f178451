import type { Migration } from '../migrate.ts';
import { installation } from './20261122T0100-installation.ts';
import { identity } from './20261122T0200-identity.ts';
import { organizations } from './20261122T0300-organizations.ts';
import { audit } from './20261201T0100-audit.ts';
import { consents } from './20261201T0200-consents.ts';
import { auditChains } from './20261201T0300-audit-chains.ts';
import { jobs } from './20261201T0400-jobs.ts';
import { dataExports } from './20261201T0500-data-exports.ts';
import { erasure } from './20261201T0600-erasure.ts';
import { auditErasureAgain } from './20261201T0700-audit-erasure-again.ts';
import { auditRetention } from './20261201T0800-audit-retention.ts';
import { domainEvents } from './20261202T0100-domain-events.ts';
import { webhooks } from './20261202T0110-webhooks.ts';
import { realtimeNotifications } from './20261202T0200-realtime-notifications.ts';
import { auditEventLayout } from './20261202T0300-audit-event-layout.ts';
import { orgUsageReports } from './20261202T0400-org-usage-reports.ts';
import { auditSequencer } from './20261202T0500-audit-sequencer.ts';

/**
 * Every migration, keyed by a timestamped name that sorts in the order they must run. One set serves both
 * dialects. Add new ones at the end; never edit or remove one that has shipped.
 */
export const migrations: Record<string, Migration> = {
  '20261122T0100-installation': installation,
  '20261122T0200-identity': identity,
  '20261122T0300-organizations': organizations,
  '20261201T0100-audit': audit,
  '20261201T0200-consents': consents,
  '20261201T0300-audit-chains': auditChains,
  '20261201T0400-jobs': jobs,
  '20261201T0500-data-exports': dataExports,
  '20261201T0600-erasure': erasure,
  '20261201T0700-audit-erasure-again': auditErasureAgain,
  '20261201T0800-audit-retention': auditRetention,
  '20261202T0100-domain-events': domainEvents,
  '20261202T0110-webhooks': webhooks,
  '20261202T0200-realtime-notifications': realtimeNotifications,
  '20261202T0300-audit-event-layout': auditEventLayout,
  '20261202T0400-org-usage-reports': orgUsageReports,
  '20261202T0500-audit-sequencer': auditSequencer,
};
