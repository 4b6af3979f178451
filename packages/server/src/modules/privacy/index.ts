import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { consentPurposeRoutes, consentRoutes } from './consent.routes.ts';
import type { PrivacyDeps } from './deps.ts';
import type { ConsentPurposeRegistry } from './purposes.ts';

export { consentsForExport, toConsentRecord } from './consent.service.ts';
export type { PrivacyDeps } from './deps.ts';
export {
  type ConsentPurposeRegistry,
  type ConsentPurposeStatement,
  createConsentPurposeRegistry,
  defineConsentPurposes,
  platformConsentPurposes,
} from './purposes.ts';

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * The installation's declared consent purposes. An application module declares its own at start-up with
     * `app.consentPurposes.add(defineConsentPurposes({ … }))`; `PUT /me/consents` accepts only declared ones.
     */
    consentPurposes: ConsentPurposeRegistry;
  }
}

/** The OpenAPI tags of this module's routes. */
export const privacyTags = [
  {
    name: 'Privacy',
    description:
      "A person's consents: grants and withdrawals per declared purpose, kept as an append-only history.",
  },
];

async function privacy(app: FastifyInstance, { deps }: { deps: PrivacyDeps }): Promise<void> {
  app.decorate('consentPurposes', deps.purposes);
  await app.register(consentRoutes, { deps, prefix: '/api/v1' });
  await app.register(consentPurposeRoutes, { deps, prefix: '/api/v1' });
}

/** Privacy: consent records (`/api/v1/me/consents`) and the declared purposes (`app.consentPurposes`). */
export const privacyModule = fp(privacy, { name: 'plinth-privacy', dependencies: ['plinth-auth'] });
