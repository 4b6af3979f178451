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
import { idParam } from '../../core/ids.ts';
import { listQuerySchema } from '../../core/pagination.ts';
import { jsonResponse, problemResponses } from '../../core/responses.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import { type AuthDeps, superadminOnly, userOf } from '../auth/index.ts';
import { accessOf, OrgParams } from '../rbac/index.ts';
import * as audit from './audit.service.ts';
import { accountChain, PLATFORM_CHAIN } from './record.ts';

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
      config: { permission: 'audit:read', auditRead: { action: 'audit.viewed' } },
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
    async (request) => audit.listAuditEvents(database, accessOf(request).orgId, request.query),
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
      config: { permission: 'audit:read', routeClass: 'expensive', auditRead: { action: 'audit.exported' } },
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

const UserParams = z.object({ userId: idParam('Not a user id.') });

/**
 * The chains outside organizations, for installation operators: the installation's own
 * (`/api/v1/admin/audit`: operators' actions, sign-in failures for unknown addresses) and each account's
 * (`/api/v1/admin/users/{userId}/audit`: sign-ins, password, two-factor, consent, export, erasure), listed and
 * verified. Every read is itself recorded on the installation's chain.
 */
export const adminAuditRoutes: FastifyPluginAsyncZod<{ database: DatabaseHandle; auth: AuthDeps }> = async (
  app,
  { database, auth },
) => {
  superadminOnly(app, auth);
  const adminRoute = { tags: ['Audit log'], security: [{ bearerAuth: [] }] };

  app.get(
    '/admin/audit',
    {
      config: {
        auditRead: { action: 'audit.viewed', target: { type: 'audit_chain', id: () => PLATFORM_CHAIN } },
      },
      schema: {
        ...adminRoute,
        summary: "List the installation's audit events",
        description: "Operators' actions and sign-in failures for addresses with no account; newest first.",
        operationId: 'listPlatformAuditEvents',
        querystring: ListAuditQuery,
        response: {
          200: jsonResponse(Page(AuditEvent), 'One page of events.'),
          ...problemResponses(400, 401, 403),
        },
      },
    },
    async (request) => audit.listAuditEvents(database, PLATFORM_CHAIN, request.query),
  );

  app.get(
    '/admin/audit/verify',
    {
      config: { routeClass: 'expensive' },
      schema: {
        ...adminRoute,
        summary: "Verify the installation's audit chain",
        operationId: 'verifyPlatformAuditChain',
        response: {
          200: jsonResponse(AuditVerifyResult, 'The result of the verification.'),
          ...problemResponses(401, 403),
        },
      },
    },
    async () => audit.verifyAuditChain(database, PLATFORM_CHAIN),
  );

  app.get(
    '/admin/users/:userId/audit',
    {
      config: {
        auditRead: {
          action: 'audit.viewed',
          target: {
            type: 'audit_chain',
            id: (request) => accountChain((request.params as { userId: string }).userId),
          },
        },
      },
      schema: {
        ...adminRoute,
        summary: "List an account's audit events",
        description:
          'Sign-ins and failures, password, two-factor, session, consent, export and erasure events.',
        operationId: 'listAccountAuditEvents',
        params: UserParams,
        querystring: ListAuditQuery,
        response: {
          200: jsonResponse(Page(AuditEvent), 'One page of events.'),
          ...problemResponses(400, 401, 403),
        },
      },
    },
    async (request) => audit.listAuditEvents(database, accountChain(request.params.userId), request.query),
  );

  app.get(
    '/admin/users/:userId/audit/verify',
    {
      config: { routeClass: 'expensive' },
      schema: {
        ...adminRoute,
        summary: "Verify an account's audit chain",
        operationId: 'verifyAccountAuditChain',
        params: UserParams,
        response: {
          200: jsonResponse(AuditVerifyResult, 'The result of the verification.'),
          ...problemResponses(400, 401, 403),
        },
      },
    },
    async (request) => audit.verifyAuditChain(database, accountChain(request.params.userId)),
  );
};

/** The signed-in person's own security history: `GET /api/v1/me/audit`. */
export const myAuditRoutes: FastifyPluginAsyncZod<{ database: DatabaseHandle }> = async (
  app,
  { database },
) => {
  app.get(
    '/me/audit',
    {
      onRequest: app.authenticate,
      schema: {
        tags: ['Me'],
        security: [{ bearerAuth: [] }],
        summary: 'My account history',
        description:
          "The audit events of the caller's own account — sign-ins and failures, password, two-factor, sessions, consent, export — newest first.",
        operationId: 'listMyAuditEvents',
        querystring: ListAuditQuery,
        response: {
          200: jsonResponse(Page(AuditEvent), 'One page of events.'),
          ...problemResponses(400, 401, 403),
        },
      },
    },
    async (request) => audit.listAuditEvents(database, accountChain(userOf(request).userId), request.query),
  );
};
