import { EraseMeBody, ErasureScheduled } from '@plinth/shared';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { idParam } from '../../core/ids.ts';
import { jsonResponse, problemResponses } from '../../core/responses.ts';
import { callerOf, superadminOnly } from '../auth/index.ts';
import type { PrivacyDeps } from './deps.ts';
import { requestErasure, scheduleErasureByOperator } from './erasure.service.ts';

/** `DELETE /api/v1/me`: a person asks for their account to be erased. */
export const erasureRoutes: FastifyPluginAsyncZod<{ deps: PrivacyDeps }> = async (app, { deps }) => {
  app.delete(
    '/me',
    {
      onRequest: app.authenticate,
      // Re-authentication: limited like sign-in, so a stolen access token cannot guess the password here.
      config: { routeClass: 'auth' },
      schema: {
        tags: ['Privacy'],
        security: [{ bearerAuth: [] }],
        summary: 'Erase my account',
        description:
          'Needs the password, and `code` when two-factor authentication is on. Every session ends at once; the account and its personal data are erased at `scheduledFor` (after `ERASURE_GRACE_DAYS`), unless its owner signs in before then. 409 ERASURE_BLOCKED when something must happen first, such as handing over an organization the caller alone owns.',
        operationId: 'eraseMe',
        body: EraseMeBody,
        response: {
          202: jsonResponse(ErasureScheduled, 'Scheduled.'),
          ...problemResponses(400, 401, 403, 409),
        },
      },
    },
    async (request, reply) =>
      reply.status(202).send(await requestErasure(deps, callerOf(request), request.body)),
  );
};

/** `DELETE /api/v1/admin/users/{userId}`: an operator schedules an account's erasure. */
export const adminErasureRoutes: FastifyPluginAsyncZod<{ deps: PrivacyDeps }> = async (app, { deps }) => {
  superadminOnly(app, deps.auth);
  app.delete(
    '/admin/users/:userId',
    {
      schema: {
        tags: ['Admin'],
        security: [{ bearerAuth: [] }],
        summary: 'Erase an account',
        description:
          'Schedules the erasure exactly as the owner would (same grace period; signing in cancels it), recorded on the installation audit log. 409 ERASURE_BLOCKED when something must happen first.',
        operationId: 'eraseUser',
        params: z.object({ userId: idParam('Not a user id.') }),
        response: {
          202: jsonResponse(ErasureScheduled, 'Scheduled.'),
          ...problemResponses(400, 401, 403, 404, 409),
        },
      },
    },
    async (request, reply) =>
      reply.status(202).send(await scheduleErasureByOperator(deps, callerOf(request), request.params.userId)),
  );
};
