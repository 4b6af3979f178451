import { CreateRoleBody, Page, Permission, Role, RoleName, UpdateRoleBody } from '@plinth/shared';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { idParam } from '../../core/ids.ts';
import { jsonResponse, problemResponses } from '../../core/responses.ts';
import { auditContextOf } from '../audit/record.ts';
import { accessOf } from './access.ts';
import type { AccessRegistry } from './registry.ts';
import type { RbacDeps } from './role.service.ts';
import * as roles from './role.service.ts';

/** The path parameters of every organization route. */
export const OrgParams = z.object({ orgId: idParam('Not an organization id.') });
const RoleParams = OrgParams.extend({ roleName: RoleName });
const NoContent = { 204: z.undefined().meta({ description: 'Done.' }) };
const rolesRoute = { tags: ['Roles'] };

/** An organization's roles, built-in and custom: `/api/v1/orgs/{orgId}/roles`. */
export const roleRoutes: FastifyPluginAsyncZod<{ deps: RbacDeps }> = async (app, { deps }) => {
  app.get(
    '/orgs/:orgId/roles',
    {
      config: { permission: 'roles:read' },
      schema: {
        ...rolesRoute,
        summary: 'List roles',
        description: 'The built-in roles, then the organization’s custom roles by name.',
        operationId: 'listRoles',
        params: OrgParams,
        response: { 200: jsonResponse(Page(Role), 'Every role.'), ...problemResponses(400, 401, 403, 404) },
      },
    },
    async (request) => ({ data: await roles.listRoles(deps, accessOf(request)), nextCursor: null }),
  );

  app.post(
    '/orgs/:orgId/roles',
    {
      config: { permission: 'roles:create' },
      schema: {
        ...rolesRoute,
        summary: 'Create a custom role',
        description: 'A named set of registered permissions, none of which the caller may lack.',
        operationId: 'createRole',
        params: OrgParams,
        body: CreateRoleBody,
        response: { 201: jsonResponse(Role, 'The new role.'), ...problemResponses(400, 401, 403, 404, 409) },
      },
    },
    async (request, reply) =>
      reply
        .status(201)
        .send(await roles.createRole(deps, accessOf(request), request.body, auditContextOf(request))),
  );

  app.get(
    '/orgs/:orgId/roles/:roleName',
    {
      config: { permission: 'roles:read' },
      schema: {
        ...rolesRoute,
        summary: 'Get a role',
        operationId: 'getRole',
        params: RoleParams,
        response: { 200: jsonResponse(Role, 'The role.'), ...problemResponses(400, 401, 403, 404) },
      },
    },
    async (request) => roles.getRole(deps, accessOf(request), request.params.roleName),
  );

  app.patch(
    '/orgs/:orgId/roles/:roleName',
    {
      config: { permission: 'roles:update' },
      schema: {
        ...rolesRoute,
        summary: 'Change a custom role',
        description:
          'Renaming carries the new name over to members and pending invitations. Takes effect for every holder on their next request.',
        operationId: 'updateRole',
        params: RoleParams,
        body: UpdateRoleBody,
        response: { 200: jsonResponse(Role, 'The role.'), ...problemResponses(400, 401, 403, 404, 409) },
      },
    },
    async (request) =>
      roles.updateRole(
        deps,
        accessOf(request),
        request.params.roleName,
        request.body,
        auditContextOf(request),
      ),
  );

  app.delete(
    '/orgs/:orgId/roles/:roleName',
    {
      config: { permission: 'roles:delete' },
      schema: {
        ...rolesRoute,
        summary: 'Delete a custom role',
        description: 'Only a role no member or pending invitation holds.',
        operationId: 'deleteRole',
        params: RoleParams,
        response: { ...NoContent, ...problemResponses(400, 401, 403, 404, 409) },
      },
    },
    async (request, reply) => {
      await roles.deleteRole(deps, accessOf(request), request.params.roleName, auditContextOf(request));
      return reply.status(204).send(undefined);
    },
  );
};

/** The permission registry: `GET /api/v1/permissions`. */
export const permissionRoutes: FastifyPluginAsyncZod<{ registry: AccessRegistry }> = async (
  app,
  { registry },
) => {
  app.get(
    '/permissions',
    {
      onRequest: app.authenticate,
      schema: {
        ...rolesRoute,
        security: [{ bearerAuth: [] }],
        summary: 'List permissions',
        description:
          'Every permission the installation’s modules declare, with the built-in roles that hold it.',
        operationId: 'listPermissions',
        response: {
          200: jsonResponse(z.object({ data: z.array(Permission) }), 'The permissions.'),
          ...problemResponses(401, 403),
        },
      },
    },
    async () => ({ data: registry.permissions() }),
  );
};
