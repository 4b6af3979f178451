import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { apiKeyRoutes } from './apikey.routes.ts';
import type { ApiKeyDeps } from './apikey.service.ts';
import { apiKeyPermissions } from './permissions.ts';

export type { ApiKeyDeps } from './apikey.service.ts';
export { type ApiKeyStore, createApiKeyStore } from './apikey.store.ts';

/** The OpenAPI tags of this module's routes. */
export const apiKeyTags = [
  { name: 'API keys', description: 'Scoped, hashed, rotatable keys for programs acting in an organization.' },
];

import { apiKeyPersonalData } from './personal-data.ts';

async function apiKeys(app: FastifyInstance, { deps }: { deps: ApiKeyDeps }): Promise<void> {
  deps.registry.addPermissions(apiKeyPermissions);
  app.personalData.add(apiKeyPersonalData);
  await app.register(apiKeyRoutes, { deps, prefix: '/api/v1' });
}

/** API keys: management routes; verification is the store's (`createApiKeyStore`), used by authentication. */
export const apiKeysModule = fp(apiKeys, { name: 'plinth-apikeys', dependencies: ['plinth-rbac'] });
