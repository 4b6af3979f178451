import {
  Accepted,
  ChangePasswordBody,
  ForgotPasswordBody,
  LoginBody,
  LoginResponse,
  LogoutBody,
  MfaVerifyBody,
  RefreshBody,
  ResendVerificationBody,
  ResetPasswordBody,
  SessionList,
  SignupBody,
  SignupResponse,
  TokenPair,
  VerifyEmailBody,
} from '@plinth/shared';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { idParam } from '../../core/ids.ts';
import { jsonResponse, problemResponses } from '../../core/responses.ts';
import * as account from './account.service.ts';
import { clientOf } from './account-audit.ts';
import { userOf } from './authenticate.ts';
import type { AuthDeps } from './deps.ts';
import { login } from './login.service.ts';
import { verifyMfaLogin } from './mfa.service.ts';
import {
  listSessions,
  logout,
  logoutEverywhere,
  refreshSession,
  revokeOwnSession,
} from './session.service.ts';

const publicRoute = { tags: ['Auth'], security: [] };
const userRoute = { tags: ['Auth'], security: [{ bearerAuth: [] }] };
const NoContent = { 204: z.undefined().meta({ description: 'Done.' }) };
// Fastify hands a route `null` for a request without a body, which the shared (optional) schema refuses; signing
// out must work with no body at all, as clients send it.
const OptionalLogoutBody = LogoutBody.nullable();
const SessionParams = z.object({ id: idParam('Not a session id.') });

/** Sign-up, sign-in, sessions, passwords and email verification: `/api/v1/auth/*`. */
export const authRoutes: FastifyPluginAsyncZod<{ deps: AuthDeps }> = async (app, { deps }) => {
  app.post(
    '/auth/signup',
    {
      config: { routeClass: 'auth' },
      schema: {
        ...publicRoute,
        summary: 'Create an account',
        description:
          'Registers an account and mails a verification link. With verification required (the default), an address that is already registered gets the same answer and its owner a notice; otherwise it is 409 EMAIL_TAKEN.',
        operationId: 'signup',
        body: SignupBody,
        response: {
          201: jsonResponse(
            SignupResponse,
            'Account created (or, for a registered address, the owner notified).',
          ),
          ...problemResponses(400, 403, 409),
        },
      },
    },
    async (request, reply) =>
      reply.status(201).send(await account.signup(deps, request.body, clientOf(request))),
  );

  app.post(
    '/auth/login',
    {
      config: { routeClass: 'auth', rateLimitAccountField: 'email' },
      schema: {
        ...publicRoute,
        summary: 'Sign in',
        description:
          'Email and password. Answers a token pair, or `{ mfaRequired: true, mfaToken }` when two-factor authentication is on.',
        operationId: 'login',
        body: LoginBody,
        response: {
          200: jsonResponse(LoginResponse, 'Signed in, or a second factor is needed.'),
          ...problemResponses(400, 401, 403, 423, 429),
        },
      },
    },
    async (request, reply) => {
      // Token responses must never be stored by a cache (RFC 6749 §5.1).
      reply.header('cache-control', 'no-store');
      const result = await login(deps, request.body, clientOf(request));
      return result.mfaRequired ? { mfaRequired: true as const, mfaToken: result.mfaToken } : result.pair;
    },
  );

  app.post(
    '/auth/mfa/verify',
    {
      config: { routeClass: 'auth' },
      schema: {
        ...publicRoute,
        tags: ['MFA'],
        summary: 'Complete a sign-in with a second factor',
        description:
          'The `mfaToken` from /auth/login and a current authenticator code or an unused recovery code.',
        operationId: 'verifyMfa',
        body: MfaVerifyBody,
        response: {
          200: jsonResponse(TokenPair, 'Signed in.'),
          ...problemResponses(400, 401, 403, 423, 429),
        },
      },
    },
    async (request, reply) => {
      reply.header('cache-control', 'no-store');
      return verifyMfaLogin(deps, request.body, clientOf(request));
    },
  );

  app.post(
    '/auth/refresh',
    {
      schema: {
        ...publicRoute,
        summary: 'Exchange a refresh token for a new pair',
        description:
          'Rotation: the refresh token is spent and a new pair returned. Re-using a spent token ends the session, except for concurrent refreshes within a few seconds, which get the same new pair.',
        operationId: 'refresh',
        body: RefreshBody,
        response: { 200: jsonResponse(TokenPair, 'A new pair.'), ...problemResponses(400, 401) },
      },
    },
    async (request, reply) => {
      reply.header('cache-control', 'no-store');
      return refreshSession(deps, request.body.refreshToken);
    },
  );

  app.post(
    '/auth/logout',
    {
      onRequest: app.authenticate,
      schema: {
        ...userRoute,
        summary: 'Sign out of this session',
        description:
          "Ends the access token's session: its refresh tokens stop working and its access tokens are refused.",
        operationId: 'logout',
        body: OptionalLogoutBody,
        response: { ...NoContent, ...problemResponses(400, 401) },
      },
    },
    async (request, reply) => {
      await logout(deps, userOf(request), clientOf(request));
      return reply.status(204).send(undefined);
    },
  );

  app.post(
    '/auth/logout-all',
    {
      onRequest: app.authenticate,
      schema: {
        ...userRoute,
        summary: 'Sign out everywhere',
        description: "Ends every session of the caller's account, including this one.",
        operationId: 'logoutAll',
        body: OptionalLogoutBody,
        response: { ...NoContent, ...problemResponses(400, 401) },
      },
    },
    async (request, reply) => {
      await logoutEverywhere(deps, userOf(request), clientOf(request));
      return reply.status(204).send(undefined);
    },
  );

  app.get(
    '/auth/sessions',
    {
      onRequest: app.authenticate,
      schema: {
        ...userRoute,
        summary: 'List my sessions',
        description:
          'Live sessions of the caller, newest first; `current` marks the one making this request.',
        operationId: 'listSessions',
        response: { 200: jsonResponse(SessionList, 'The sessions.'), ...problemResponses(401) },
      },
    },
    async (request) => {
      const principal = userOf(request);
      return { data: await listSessions(deps, principal.userId, principal.sessionId) };
    },
  );

  app.delete(
    '/auth/sessions/:id',
    {
      onRequest: app.authenticate,
      schema: {
        ...userRoute,
        summary: 'End one of my sessions',
        description: "Revokes one of the caller's sessions. Another user's session id is 404.",
        operationId: 'revokeSession',
        params: SessionParams,
        response: { ...NoContent, ...problemResponses(400, 401, 404) },
      },
    },
    async (request, reply) => {
      await revokeOwnSession(deps, userOf(request), request.params.id, clientOf(request));
      return reply.status(204).send(undefined);
    },
  );

  app.post(
    '/auth/password/change',
    {
      config: { routeClass: 'auth' },
      onRequest: app.authenticate,
      schema: {
        ...userRoute,
        summary: 'Change my password',
        description: 'Needs the current password. Every other session ends.',
        operationId: 'changePassword',
        body: ChangePasswordBody,
        response: { ...NoContent, ...problemResponses(400, 401, 403) },
      },
    },
    async (request, reply) => {
      await account.changePassword(deps, userOf(request), request.body, clientOf(request));
      return reply.status(204).send(undefined);
    },
  );

  const accepted = { message: 'If the address belongs to an account, a message is on its way.' };

  app.post(
    '/auth/password/forgot',
    {
      config: { routeClass: 'auth' },
      schema: {
        ...publicRoute,
        summary: 'Ask for a password-reset link',
        description:
          'Always 202, whether or not the address is registered. The link is valid for 30 minutes, once.',
        operationId: 'forgotPassword',
        body: ForgotPasswordBody,
        response: { 202: jsonResponse(Accepted, 'Accepted.'), ...problemResponses(400) },
      },
    },
    async (request, reply) => {
      account.forgotPassword(deps, request.body.email);
      return reply.status(202).send(accepted);
    },
  );

  app.post(
    '/auth/password/reset',
    {
      config: { routeClass: 'auth' },
      schema: {
        ...publicRoute,
        summary: 'Set a new password from a reset link',
        description:
          'Every session ends. Two-factor authentication, if on, is still required at the next sign-in.',
        operationId: 'resetPassword',
        body: ResetPasswordBody,
        response: { ...NoContent, ...problemResponses(400) },
      },
    },
    async (request, reply) => {
      await account.resetPassword(deps, request.body, clientOf(request));
      return reply.status(204).send(undefined);
    },
  );

  app.post(
    '/auth/email/verify',
    {
      config: { routeClass: 'auth' },
      schema: {
        ...publicRoute,
        summary: 'Verify an email address',
        description: 'The token from the verification link.',
        operationId: 'verifyEmail',
        body: VerifyEmailBody,
        response: { ...NoContent, ...problemResponses(400, 409) },
      },
    },
    async (request, reply) => {
      await account.verifyEmail(deps, request.body.token, clientOf(request));
      return reply.status(204).send(undefined);
    },
  );

  app.post(
    '/auth/email/resend',
    {
      config: { routeClass: 'auth' },
      schema: {
        ...publicRoute,
        summary: 'Send a new verification link',
        description: 'Always 202; a link is sent only to an unverified account.',
        operationId: 'resendVerification',
        body: ResendVerificationBody,
        response: { 202: jsonResponse(Accepted, 'Accepted.'), ...problemResponses(400) },
      },
    },
    async (request, reply) => {
      account.resendVerification(deps, request.body.email);
      return reply.status(202).send(accepted);
    },
  );
};
