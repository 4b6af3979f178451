import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { defineConsentPurposes } from '../privacy/index.ts';
import type { ReportDeps } from './deps.ts';
import { reportPermissions } from './permissions.ts';
import { reportRoutes } from './report.routes.ts';
import { defineReportJobs, REPORT_MAIL_PURPOSE, usageReportRetention } from './report.service.ts';

export type { ReportDeps } from './deps.ts';
export {
  computeFigures,
  DAILY_REPORTS_JOB,
  DAILY_REPORTS_SCHEDULE,
  REPORT_MAIL_JOB,
  REPORT_MAIL_PURPOSE,
  USAGE_REPORT_JOB,
  usageReportRetention,
} from './report.service.ts';

/** The org-owned table of this module. */
export const REPORT_TENANT_TABLES = ['org_usage_reports'] as const;

/** The OpenAPI tags of this module's routes. */
export const reportTags = [
  {
    name: 'Reports',
    description:
      "An organization's daily usage reports: activity, members, invitations, API keys and sign-ins.",
  },
];

async function reportsPlugin(app: FastifyInstance, { deps }: { deps: ReportDeps }): Promise<void> {
  for (const table of REPORT_TENANT_TABLES) deps.database.registerTenantTable(table);
  deps.registry.addPermissions(reportPermissions);
  deps.purposes.add(
    defineConsentPurposes({
      [REPORT_MAIL_PURPOSE]: {
        description:
          'Receiving the daily usage report of the organizations whose reports you may read (on unless withdrawn).',
      },
    }),
  );
  app.retention.add(usageReportRetention);
  defineReportJobs(deps);
  await app.register(reportRoutes, { deps, prefix: '/api/v1' });
}

/**
 * Daily usage reports per organization: the `reports.daily` schedule (01:00 UTC) fans out one `reports.usage`
 * job per organization, which stores the previous day's figures in `org_usage_reports` and mails them to the
 * members who hold `reports:read`; `GET /api/v1/orgs/{orgId}/reports/usage[/{day}]` reads them.
 */
export const reportsModule = fp(reportsPlugin, { name: 'plinth-reports', dependencies: ['plinth-rbac'] });
