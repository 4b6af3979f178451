import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { consentPurposeRoutes, consentRoutes } from './consent.routes.ts';
import { consentsForExport } from './consent.service.ts';
import type { PrivacyDeps } from './deps.ts';
import { adminErasureRoutes, erasureRoutes } from './erasure.routes.ts';
import { defineEraseJob } from './erasure.service.ts';
import { exportRoutes } from './export.routes.ts';
import { defineExportJob } from './export.service.ts';
import type { ConsentPurposeRegistry } from './purposes.ts';
import { defineRetentionJob, exportRetention } from './retention.service.ts';

export { toConsentRecord } from './consent.service.ts';
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
  deps.personalData.add({ name: 'consents', export: consentsForExport });
  defineExportJob(deps);
  defineEraseJob(deps);
  for (const policy of exportRetention) deps.retention.add(policy);
  // Last: every module registered before this one has declared its policies.
  defineRetentionJob(deps);
  await app.register(consentRoutes, { deps, prefix: '/api/v1' });
  await app.register(consentPurposeRoutes, { deps, prefix: '/api/v1' });
  await app.register(exportRoutes, { deps, prefix: '/api/v1' });
  await app.register(erasureRoutes, { deps, prefix: '/api/v1' });
  await app.register(adminErasureRoutes, { deps, prefix: '/api/v1' });
}

/**
 * Privacy: consent records (`/api/v1/me/consents`) and the declared purposes (`app.consentPurposes`), and data
 * exports (`/api/v1/me/export`, `/api/v1/me/exports/{id}`) built by the `privacy.export` job from every module's
 * declared personal data.
 */
export const privacyModule = fp(privacy, { name: 'plinth-privacy', dependencies: ['plinth-auth'] });
