import { Page, ReportDay, UsageReport } from '@plinth/shared';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { listQuerySchema } from '../../core/pagination.ts';
import { jsonResponse, problemResponses } from '../../core/responses.ts';
import { accessOf, OrgParams } from '../rbac/index.ts';
import type { ReportDeps } from './deps.ts';
import { usageReportList } from './report.repo.ts';
import * as reports from './report.service.ts';

const reportsRoute = { tags: ['Reports'] };

const ListUsageReportsQuery = listQuerySchema(usageReportList).extend({
  from: ReportDay.optional().meta({ description: 'The first day to include (UTC, `YYYY-MM-DD`).' }),
  to: ReportDay.optional().meta({
    description: 'The last day to include; with `from`, at most 400 days after it.',
  }),
});

/** An organization's daily usage reports: `/api/v1/orgs/{orgId}/reports/usage`. */
export const reportRoutes: FastifyPluginAsyncZod<{ deps: ReportDeps }> = async (app, { deps }) => {
  app.get(
    '/orgs/:orgId/reports/usage',
    {
      config: { permission: reports.REPORT_PERMISSION },
      schema: {
        ...reportsRoute,
        summary: 'List daily usage reports',
        description:
          'One report per UTC day, computed shortly after 01:00 UTC for the previous day; newest first unless `sort=day`.',
        operationId: 'listUsageReports',
        params: OrgParams,
        querystring: ListUsageReportsQuery,
        response: {
          200: jsonResponse(Page(UsageReport), 'One page of reports.'),
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request) => reports.listReports(deps, accessOf(request), request.query),
  );

  app.get(
    '/orgs/:orgId/reports/usage/:day',
    {
      config: { permission: reports.REPORT_PERMISSION },
      schema: {
        ...reportsRoute,
        summary: 'Get the usage report of a day',
        operationId: 'getUsageReport',
        params: OrgParams.extend({ day: ReportDay }),
        response: {
          200: jsonResponse(UsageReport, 'The report.'),
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request) => reports.getReport(deps, accessOf(request), request.params.day),
  );
};
