import { Member, Page, UpdateMemberBody } from '@plinth/shared';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { idParam } from '../../core/ids.ts';
import { listQuerySchema } from '../../core/pagination.ts';
import { jsonResponse, problemResponses } from '../../core/responses.ts';
import { auditContextOf } from '../audit/record.ts';
import { accessOf, OrgParams } from '../rbac/index.ts';
import type { OrgDeps } from './deps.ts';
import * as members from './member.service.ts';

const MemberParams = OrgParams.extend({ userId: idParam('Not a user id.') });
const membersRoute = { tags: ['Members'] };

/** An organization's members: `/api/v1/orgs/{orgId}/members`. */
export const memberRoutes: FastifyPluginAsyncZod<{ deps: OrgDeps }> = async (app, { deps }) => {
  app.get(
    '/orgs/:orgId/members',
    {
      config: { permission: 'members:read' },
      schema: {
        ...membersRoute,
        summary: 'List members',
        operationId: 'listMembers',
        params: OrgParams,
        querystring: listQuerySchema(members.membersList),
        response: {
          200: jsonResponse(Page(Member), 'One page of members.'),
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request) => members.listMembers(deps, accessOf(request), request.query),
  );

  app.patch(
    '/orgs/:orgId/members/:userId',
    {
      config: { permission: 'members:update' },
      schema: {
        ...membersRoute,
        summary: "Change a member's role",
        description:
          'The caller must hold every permission of the current and the new role; the last owner cannot be demoted. Takes effect on the member’s next request.',
        operationId: 'updateMember',
        params: MemberParams,
        body: UpdateMemberBody,
        response: { 200: jsonResponse(Member, 'The member.'), ...problemResponses(400, 401, 403, 404, 409) },
      },
    },
    async (request) =>
      members.changeRole(
        deps,
        accessOf(request),
        request.params.userId,
        request.body.role,
        auditContextOf(request),
      ),
  );

  app.delete(
    '/orgs/:orgId/members/:userId',
    {
      config: { permission: 'members:remove', permissionWaivedForSelf: 'userId' },
      schema: {
        ...membersRoute,
        summary: 'Remove a member, or leave',
        description: 'The last owner can neither be removed nor leave.',
        operationId: 'removeMember',
        params: MemberParams,
        response: {
          204: z.undefined().meta({ description: 'Done.' }),
          ...problemResponses(400, 401, 403, 404, 409),
        },
      },
    },
    async (request, reply) => {
      await members.removeMember(deps, accessOf(request), request.params.userId, auditContextOf(request));
      return reply.status(204).send(undefined);
    },
  );
};
