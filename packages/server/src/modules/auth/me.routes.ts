import {
  Me,
  MfaCodeBody,
  PasswordAndCodeBody,
  PasswordBody,
  RecoveryCodes,
  TotpEnrollment,
  UpdateMeBody,
  UpdateMeResponse,
} from '@plinth/shared';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { jsonResponse, problemResponses } from '../../core/responses.ts';
import { getUser, toMe, updateMe } from './account.service.ts';
import { callerOf } from './account-audit.ts';
import { userOf } from './authenticate.ts';
import type { AuthDeps } from './deps.ts';
import { confirmTotp, disableTotp, enrollTotp, regenerateRecoveryCodes } from './mfa.service.ts';

const meRoute = { tags: ['Me'], security: [{ bearerAuth: [] }] };
const mfaRoute = { tags: ['MFA'], security: [{ bearerAuth: [] }] };

/** The signed-in user's own account: `/api/v1/me` and the two-factor settings. */
export const meRoutes: FastifyPluginAsyncZod<{ deps: AuthDeps }> = async (app, { deps }) => {
  // onRequest, so that an unauthenticated request is refused before its body is even parsed or validated.
  app.addHook('onRequest', app.authenticate);

  app.get(
    '/me',
    {
      schema: {
        ...meRoute,
        summary: 'My profile',
        description: 'The account of the caller.',
        operationId: 'getMe',
        response: { 200: jsonResponse(Me, 'The profile.'), ...problemResponses(401) },
      },
    },
    async (request) => toMe(await getUser(deps, userOf(request).userId)),
  );

  app.patch(
    '/me',
    {
      schema: {
        ...meRoute,
        summary: 'Update my profile',
        description:
          'Changes the name, or the email address (with `currentPassword`; it takes effect once the link sent to the new address is followed).',
        operationId: 'updateMe',
        body: UpdateMeBody,
        response: {
          200: jsonResponse(UpdateMeResponse, 'The updated profile.'),
          ...problemResponses(400, 401, 403),
        },
      },
    },
    async (request) => {
      const { me, emailChangePending } = await updateMe(
        deps,
        userOf(request).userId,
        request.body,
        callerOf(request),
      );
      return { ...me, emailChangePending };
    },
  );

  app.post(
    '/auth/mfa/totp/enroll',
    {
      config: { routeClass: 'auth' },
      schema: {
        ...mfaRoute,
        summary: 'Start authenticator-app enrolment',
        description:
          'Needs the current password. Returns the secret and an `otpauth://` URI for a QR code; confirm with a code to turn it on.',
        operationId: 'enrollTotp',
        body: PasswordBody,
        response: {
          200: jsonResponse(TotpEnrollment, 'The new secret.'),
          ...problemResponses(400, 401, 403, 409),
        },
      },
    },
    async (request) => enrollTotp(deps, callerOf(request), request.body.password),
  );

  app.post(
    '/auth/mfa/totp/confirm',
    {
      config: { routeClass: 'auth' },
      schema: {
        ...mfaRoute,
        summary: 'Turn on two-factor authentication',
        description: 'A current code from the enrolled app. Returns ten recovery codes, shown only now.',
        operationId: 'confirmTotp',
        body: MfaCodeBody,
        response: {
          200: jsonResponse(RecoveryCodes, 'Two-factor authentication is on.'),
          ...problemResponses(400, 401, 409),
        },
      },
    },
    async (request) => confirmTotp(deps, callerOf(request), request.body.code),
  );

  app.post(
    '/auth/mfa/totp/disable',
    {
      config: { routeClass: 'auth' },
      schema: {
        ...mfaRoute,
        summary: 'Turn off two-factor authentication',
        description: 'Needs the password and a current code (or a recovery code).',
        operationId: 'disableTotp',
        body: PasswordAndCodeBody,
        response: {
          204: z.undefined().meta({ description: 'Done.' }),
          ...problemResponses(400, 401, 403, 409),
        },
      },
    },
    async (request, reply) => {
      await disableTotp(deps, callerOf(request), request.body);
      return reply.status(204).send(undefined);
    },
  );

  app.post(
    '/auth/mfa/recovery-codes',
    {
      config: { routeClass: 'auth' },
      schema: {
        ...mfaRoute,
        summary: 'Replace my recovery codes',
        description: 'Needs the password and a current code. The old codes stop working.',
        operationId: 'regenerateRecoveryCodes',
        body: PasswordAndCodeBody,
        response: {
          200: jsonResponse(RecoveryCodes, 'The new codes.'),
          ...problemResponses(400, 401, 403, 409),
        },
      },
    },
    async (request) => regenerateRecoveryCodes(deps, callerOf(request), request.body),
  );
};
