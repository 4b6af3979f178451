import { Readable } from 'node:stream';
import {
  AuditEvent,
  AuditExportQuery,
  AuditFilters,
  AuditTimeRange,
  AuditVerifyResult,
  Page,
} from '@plinth/shared';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { listQuerySchema } from '../../core/pagination.ts';
import { jsonResponse, problemResponses } from '../../core/responses.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import { accessOf, OrgParams } from '../rbac/index.ts';
import * as audit from './audit.service.ts';

const auditRoute = { tags: ['Audit log'] };

const ListAuditQuery = listQuerySchema(audit.auditEventsList).extend({
  actorId: AuditFilters.actorId.optional(),
  action: AuditFilters.action.optional(),
  targetType: AuditFilters.targetType.optional(),
  targetId: AuditFilters.targetId.optional(),
  ...AuditTimeRange,
});

const EXPORT_MEDIA_TYPES = { csv: 'text/csv; charset=utf-8', ndjson: 'application/x-ndjson' } as const;

/** An organization's audit log: `/api/v1/orgs/{orgId}/audit`, its verification and its export. */
export const auditRoutes: FastifyPluginAsyncZod<{ database: DatabaseHandle }> = async (app, { database }) => {
  app.get(
    '/orgs/:orgId/audit',
    {
      config: { permission: 'audit:read' },
      schema: {
        ...auditRoute,
        summary: 'List audit events',
        description: 'Newest first unless `sort=seq`; filters combine with AND.',
        operationId: 'listAuditEvents',
        params: OrgParams,
        querystring: ListAuditQuery,
        response: {
          200: jsonResponse(Page(AuditEvent), 'One page of events.'),
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request) => audit.listAuditEvents(database, accessOf(request), request.query),
  );

  app.get(
    '/orgs/:orgId/audit/verify',
    {
      // It reads the whole chain: as costly as an export, and limited like one.
      config: { permission: 'audit:read', routeClass: 'expensive' },
      schema: {
        ...auditRoute,
        summary: 'Verify the audit chain',
        description:
          'Recomputes the hash chain; `ok: false` names the first event (`brokenAt`) whose link or content does not verify.',
        operationId: 'verifyAuditChain',
        params: OrgParams,
        response: {
          200: jsonResponse(AuditVerifyResult, 'The result of the verification.'),
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request) => audit.verifyAuditChain(database, accessOf(request).orgId),
  );

  app.get(
    '/orgs/:orgId/audit/export',
    {
      config: { permission: 'audit:read', routeClass: 'expensive' },
      schema: {
        ...auditRoute,
        summary: 'Export audit events',
        description:
          'Every matching event in chain order, streamed as CSV (with a header row) or NDJSON, as an attachment.',
        operationId: 'exportAuditEvents',
        params: OrgParams,
        querystring: AuditExportQuery,
        response: {
          200: {
            description: 'The events, streamed.',
            content: {
              'text/csv': { schema: z.string() },
              'application/x-ndjson': { schema: z.string() },
            },
          },
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request, reply) => {
      const { orgId } = accessOf(request);
      const { format, ...filters } = request.query;
      audit.checkRange(filters);
      const stream = Readable.from(audit.exportAuditEvents(database, orgId, format, filters));
      return (
        reply
          .type(EXPORT_MEDIA_TYPES[format])
          .header('content-disposition', `attachment; filename="audit-${orgId}.${format}"`)
          // A stream is piped, not serialised; the type provider types only the documented string body.
          .send(stream as unknown as string)
      );
    },
  );
};
