import type { FastifyPluginAsync } from 'fastify';
import { loadConfig } from '../src/config.ts';
import { newId } from '../src/core/ids.ts';
import { auditContextOf, fieldChanges, recordAuditEvent } from '../src/modules/audit/record.ts';
import { accessOf } from '../src/modules/rbac/index.ts';
import { insertCustomRole } from '../src/modules/rbac/role.repo.ts';
import { startServer } from '../src/server.ts';

/**
 * `plinth serve` with one extra application module for the audit benchmark: an authenticated create endpoint in
 * two modes that differ only in the audit event. Both authenticate, check the permission, open the tenant
 * transaction and insert a custom role (a fresh name each time); `audited` also records `role.created` on the
 * organization's chain in that transaction, exactly as `POST /orgs/{orgId}/roles` does.
 */
const benchRoles: FastifyPluginAsync = async (api) => {
  api.post<{ Params: { orgId: string; mode: string } }>(
    '/orgs/:orgId/bench-roles/:mode',
    { config: { permission: 'roles:create' } },
    async (request, reply) => {
      const { orgId } = accessOf(request);
      const role = { name: `bench-${newId()}`, description: 'benchmark', permissions: ['members:read'] };
      await api.database.withTenant(orgId, async (db) => {
        await insertCustomRole(db, orgId, role, api.clock.now().toISOString());
        if (request.params.mode === 'audited') {
          await recordAuditEvent(db, auditContextOf(request), {
            action: 'role.created',
            target: { type: 'role', id: role.name },
            changes: fieldChanges(null, role),
          });
        }
      });
      return reply.status(201).send(role);
    },
  );
};

await startServer(loadConfig(), { modules: [benchRoles] });
