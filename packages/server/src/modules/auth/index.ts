import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { jsonResponse, problemResponses } from '../../core/responses.ts';
import { adminUserRoutes } from './admin-users.routes.ts';
import { authRoutes } from './auth.routes.ts';
import { type Authenticate, refuseApiKeyInUrl } from './authenticate.ts';
import type { AuthDeps } from './deps.ts';
import { meRoutes } from './me.routes.ts';

export { createAdmin, findUserByEmail, getUser, prepareInvitedAccount } from './account.service.ts';
export {
  type AccountCaller,
  auditAccount,
  callerOf,
  clientOf,
  selfCaller,
  systemCaller,
} from './account-audit.ts';
export { superadminOnly } from './admin-users.routes.ts';
export {
  type ApiKeyPrincipal,
  type ApiKeyVerifier,
  type Authenticate,
  createAuthenticators,
  type Principal,
  principalOf,
  type UserPrincipal,
  userOf,
} from './authenticate.ts';
export type { AuthDeps, ClientInfo } from './deps.ts';
export { normalizeEmail } from './deps.ts';
export { reauthenticate } from './mfa.service.ts';
export { createRevokedSessions, type RevokedSessions } from './revocation.ts';
export { revokeUserSessions } from './session.service.ts';
export { createTokenService, type TokenService } from './tokens.ts';

/** The OpenAPI tags of this module's routes. */
export const authTags = [
  { name: 'Auth', description: 'Sign-up, sign-in, sessions, passwords and email verification.' },
  {
    name: 'MFA',
    description: 'Two-factor authentication with an authenticator app (TOTP) and recovery codes.',
  },
  { name: 'Me', description: "The signed-in user's own account." },
  { name: 'Admin', description: 'Actions reserved to the installation operators (superadmins).' },
];

const Jwks = z.object({ keys: z.array(z.record(z.string(), z.unknown())) }).meta({ id: 'Jwks' });

const jwksRoute: FastifyPluginAsyncZod<{ deps: AuthDeps }> = async (app, { deps }) => {
  app.get(
    '/.well-known/jwks.json',
    {
      schema: {
        tags: ['Auth'],
        security: [],
        summary: 'Public keys for access tokens',
        description:
          'The JSON Web Key Set that verifies access tokens when an asymmetric key (EdDSA or RS256) is configured; empty with HS256.',
        operationId: 'getJwks',
        response: { 200: jsonResponse(Jwks, 'The key set.'), ...problemResponses() },
      },
    },
    async () => deps.tokens.jwks,
  );
};

import { identityPersonalData, identityRetention } from './personal-data.ts';

async function auth(
  app: FastifyInstance,
  { deps, authenticateUser }: { deps: AuthDeps; authenticateUser: Authenticate },
): Promise<void> {
  app.decorateRequest('principal', undefined);
  app.decorate('authenticate', authenticateUser);
  app.addHook('onRequest', refuseApiKeyInUrl);
  for (const source of identityPersonalData) app.personalData.add(source);
  for (const policy of identityRetention) app.retention.add(policy);
  await app.register(jwksRoute, { deps });
  await app.register(authRoutes, { deps, prefix: '/api/v1' });
  await app.register(meRoutes, { deps, prefix: '/api/v1' });
  await app.register(adminUserRoutes, { deps, prefix: '/api/v1' });
}

/** Identity: accounts, sessions, passwords, email verification, two-factor authentication, and `app.authenticate`. */
export const authModule = fp(auth, { name: 'plinth-auth', dependencies: ['plinth-errors'] });
