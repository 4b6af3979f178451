import {
  AdminUpdateOrgBody,
  CreateOrgBody,
  MyOrganization,
  Organization,
  Page,
  UpdateOrgBody,
} from '@plinth/shared';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { idParam } from '../../core/ids.ts';
import { listQuerySchema } from '../../core/pagination.ts';
import { jsonResponse, problemResponses } from '../../core/responses.ts';
import { auditContextOf } from '../audit/record.ts';
import { superadminOnly, userOf } from '../auth/index.ts';
import { accessOf, OrgParams } from '../rbac/index.ts';
import type { OrgDeps } from './deps.ts';
import * as orgs from './org.service.ts';

const orgsRoute = { tags: ['Organizations'] };
const userRoute = { ...orgsRoute, security: [{ bearerAuth: [] }] };
const NoContent = { 204: z.undefined().meta({ description: 'Done.' }) };

/** Organizations: `/api/v1/orgs` (the caller's own) and `/api/v1/orgs/{orgId}`. */
export const orgRoutes: FastifyPluginAsyncZod<{ deps: OrgDeps }> = async (app, { deps }) => {
  app.post(
    '/orgs',
    {
      onRequest: app.authenticate,
      schema: {
        ...userRoute,
        summary: 'Create an organization',
        description:
          'The caller becomes its owner. Without a slug, one is derived from the name. The plan is the installation’s first; only operators change it.',
        operationId: 'createOrg',
        body: CreateOrgBody,
        response: {
          201: jsonResponse(Organization, 'The new organization.'),
          ...problemResponses(400, 401, 403, 409),
        },
      },
    },
    async (request, reply) =>
      reply
        .status(201)
        .send(
          await orgs.createOrg(deps, userOf(request).userId, request.body, (orgId) =>
            auditContextOf(request, orgId),
          ),
        ),
  );

  app.get(
    '/orgs',
    {
      onRequest: app.authenticate,
      schema: {
        ...userRoute,
        summary: 'List my organizations',
        description: 'The organizations the caller is a member of, with the caller’s role in each.',
        operationId: 'listMyOrgs',
        querystring: listQuerySchema(orgs.myOrgsList),
        response: {
          200: jsonResponse(Page(MyOrganization), 'One page of organizations.'),
          ...problemResponses(400, 401, 403),
        },
      },
    },
    async (request) => orgs.listMyOrgs(deps, userOf(request).userId, request.query),
  );

  app.get(
    '/orgs/:orgId',
    {
      config: { permission: 'org:read' },
      schema: {
        ...orgsRoute,
        summary: 'Get an organization',
        operationId: 'getOrg',
        params: OrgParams,
        response: {
          200: jsonResponse(Organization, 'The organization.'),
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request) => orgs.getOrg(deps, accessOf(request)),
  );

  app.patch(
    '/orgs/:orgId',
    {
      config: { permission: 'org:update' },
      schema: {
        ...orgsRoute,
        summary: 'Rename an organization',
        description: 'Changes its name or slug.',
        operationId: 'updateOrg',
        params: OrgParams,
        body: UpdateOrgBody,
        response: {
          200: jsonResponse(Organization, 'The organization.'),
          ...problemResponses(400, 401, 403, 404, 409),
        },
      },
    },
    async (request) => orgs.updateOrg(deps, accessOf(request), request.body, auditContextOf(request)),
  );

  app.delete(
    '/orgs/:orgId',
    {
      config: { permission: 'org:delete' },
      schema: {
        ...orgsRoute,
        summary: 'Delete an organization',
        description: 'Deletes it with its members, roles, invitations and API keys. Cannot be undone.',
        operationId: 'deleteOrg',
        params: OrgParams,
        response: { ...NoContent, ...problemResponses(400, 401, 403, 404) },
      },
    },
    async (request, reply) => {
      await orgs.deleteOrg(deps, accessOf(request), auditContextOf(request));
      return reply.status(204).send(undefined);
    },
  );
};

const AdminOrgParams = z.object({ orgId: idParam('Not an organization id.') });

/** Installation operators' view of every organization: `/api/v1/admin/orgs`, superadmin only. */
export const adminOrgRoutes: FastifyPluginAsyncZod<{ deps: OrgDeps }> = async (app, { deps }) => {
  superadminOnly(app, deps.auth);
  const adminRoute = { tags: ['Admin'], security: [{ bearerAuth: [] }] };

  app.get(
    '/admin/orgs',
    {
      config: { auditRead: { action: 'admin.orgs_viewed' } },
      schema: {
        ...adminRoute,
        summary: 'List every organization',
        operationId: 'adminListOrgs',
        querystring: listQuerySchema(orgs.allOrgsList),
        response: {
          200: jsonResponse(Page(Organization), 'One page of organizations.'),
          ...problemResponses(400, 401, 403),
        },
      },
    },
    async (request) => orgs.listAllOrgs(deps, request.query),
  );

  app.patch(
    '/admin/orgs/:orgId',
    {
      schema: {
        ...adminRoute,
        summary: "Change an organization's plan",
        description: 'Plans select rate-limit tiers and quotas, so members cannot choose their own.',
        operationId: 'adminUpdateOrg',
        params: AdminOrgParams,
        body: AdminUpdateOrgBody,
        response: {
          200: jsonResponse(Organization, 'The organization.'),
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request) =>
      orgs.setPlan(
        deps,
        request.params.orgId,
        request.body.plan,
        auditContextOf(request, request.params.orgId),
      ),
  );
};
