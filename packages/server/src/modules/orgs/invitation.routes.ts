import {
  AcceptInvitationBody,
  AcceptInvitationResponse,
  CreateInvitationBody,
  Invitation,
  Page,
} from '@plinth/shared';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { idParam } from '../../core/ids.ts';
import { listQuerySchema } from '../../core/pagination.ts';
import { jsonResponse, problemResponses } from '../../core/responses.ts';
import { auditContextOf, requestAuditContext } from '../audit/record.ts';
import { accessOf, OrgParams } from '../rbac/index.ts';
import type { OrgDeps } from './deps.ts';
import * as invitations from './invitation.service.ts';

const InvitationParams = OrgParams.extend({ invitationId: idParam('Not an invitation id.') });
const invitationsRoute = { tags: ['Invitations'] };

/** Invitations: `/api/v1/orgs/{orgId}/invitations` and `/api/v1/invitations/accept`. */
export const invitationRoutes: FastifyPluginAsyncZod<{ deps: OrgDeps }> = async (app, { deps }) => {
  app.post(
    '/orgs/:orgId/invitations',
    {
      config: { permission: 'invitations:create' },
      schema: {
        ...invitationsRoute,
        summary: 'Invite someone',
        description:
          'Mails a link that adds the address with the given role (one the caller could grant). Replaces a pending invitation of the same address.',
        operationId: 'createInvitation',
        params: OrgParams,
        body: CreateInvitationBody,
        response: {
          201: jsonResponse(Invitation, 'The invitation (its token is only in the mail).'),
          ...problemResponses(400, 401, 403, 404, 409),
        },
      },
    },
    async (request, reply) =>
      reply
        .status(201)
        .send(
          await invitations.createInvitation(deps, accessOf(request), request.body, auditContextOf(request)),
        ),
  );

  app.get(
    '/orgs/:orgId/invitations',
    {
      config: { permission: 'invitations:read' },
      schema: {
        ...invitationsRoute,
        summary: 'List pending invitations',
        operationId: 'listInvitations',
        params: OrgParams,
        querystring: listQuerySchema(invitations.invitationsList),
        response: {
          200: jsonResponse(Page(Invitation), 'One page of invitations.'),
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request) => invitations.listInvitations(deps, accessOf(request), request.query),
  );

  app.delete(
    '/orgs/:orgId/invitations/:invitationId',
    {
      config: { permission: 'invitations:revoke' },
      schema: {
        ...invitationsRoute,
        summary: 'Revoke an invitation',
        description: 'Its link stops working at once.',
        operationId: 'revokeInvitation',
        params: InvitationParams,
        response: {
          204: z.undefined().meta({ description: 'Done.' }),
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request, reply) => {
      await invitations.revokeInvitation(
        deps,
        accessOf(request),
        request.params.invitationId,
        auditContextOf(request),
      );
      return reply.status(204).send(undefined);
    },
  );

  app.post(
    '/invitations/accept',
    {
      config: { routeClass: 'auth' },
      // Signed in or not: an access token, when sent, must be valid, and makes the signed-in account the one
      // that joins; without one, the invitation creates the account.
      onRequest: async (request, reply) => {
        if (request.headers.authorization !== undefined || request.headers['x-api-key'] !== undefined) {
          await app.authenticate(request, reply);
        }
      },
      schema: {
        ...invitationsRoute,
        security: [{ bearerAuth: [] }, {}],
        summary: 'Accept an invitation',
        description:
          'Signed in as the invited address: send the token. Without an account yet: send the token, a name and a password; the account is created with the address verified. Works once.',
        operationId: 'acceptInvitation',
        body: AcceptInvitationBody,
        response: {
          200: jsonResponse(AcceptInvitationResponse, 'The membership.'),
          ...problemResponses(400, 401, 403, 409),
        },
      },
    },
    async (request) =>
      invitations.acceptInvitation(deps, request.principal, request.body, (orgId, userId) =>
        requestAuditContext(request, orgId, {
          type: 'user',
          id: userId,
          via: request.principal?.type === 'user' ? request.principal.sessionId : undefined,
        }),
      ),
  );
};
