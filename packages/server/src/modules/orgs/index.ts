import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { OrgDeps } from './deps.ts';
import { invitationRoutes } from './invitation.routes.ts';
import { memberRoutes } from './member.routes.ts';
import { adminOrgRoutes, orgRoutes } from './org.routes.ts';
import { orgPermissions } from './permissions.ts';

export type { OrgDeps } from './deps.ts';

/** The OpenAPI tags of this module's routes. */
export const orgTags = [
  { name: 'Organizations', description: 'Organizations (tenants): every business record belongs to one.' },
  { name: 'Members', description: "An organization's members and their roles." },
  { name: 'Invitations', description: 'Inviting people to an organization by email.' },
];

import { invitationRetention, orgPersonalData } from './personal-data.ts';

async function orgs(app: FastifyInstance, { deps }: { deps: OrgDeps }): Promise<void> {
  deps.registry.addPermissions(orgPermissions);
  for (const source of orgPersonalData) app.personalData.add(source);
  app.retention.add(invitationRetention);
  await app.register(orgRoutes, { deps, prefix: '/api/v1' });
  await app.register(memberRoutes, { deps, prefix: '/api/v1' });
  await app.register(invitationRoutes, { deps, prefix: '/api/v1' });
  await app.register(adminOrgRoutes, { deps, prefix: '/api/v1' });
}

/** Organizations, their members and invitations, and the operators' view of every organization. */
export const orgsModule = fp(orgs, { name: 'plinth-orgs', dependencies: ['plinth-rbac'] });
