import type { FastifyInstance, FastifyRequest, onSendHookHandler, RouteOptions } from 'fastify';
import fp from 'fastify-plugin';
import type { DatabaseHandle } from '../../db/database.ts';
import {
  type AuditContext,
  accountChain,
  actorOf,
  auditContextOf,
  PLATFORM_CHAIN,
  withAuditedTransaction,
} from './record.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * Makes the route a sensitive read: each successful (2xx) response records `action` (e.g. `audit.viewed`),
     * with the target `target` names, before the response is sent — a read the log cannot record is not served.
     * The event goes to the organization's chain on an organization route, to the installation's on an
     * operator's (`/api/v1/admin/…`) route, and to the caller's own account chain otherwise.
     */
    auditRead?: {
      action: string;
      target?: { type: string; id: (request: FastifyRequest) => string };
    };
  }
}

const ADMIN_ROUTES = '/api/v1/admin/';

function readContext(request: FastifyRequest): AuditContext {
  if (request.orgAccess) return auditContextOf(request);
  const principal = request.principal;
  if (principal?.type !== 'user') {
    throw new Error(
      `${request.routeOptions.url}: a sensitive read outside an organization needs a signed-in user`,
    );
  }
  const chain = request.routeOptions.url?.startsWith(ADMIN_ROUTES)
    ? PLATFORM_CHAIN
    : accountChain(principal.userId);
  return { ...auditContextOf(request, chain), actor: actorOf(principal) };
}

async function auditReads(app: FastifyInstance, { database }: { database: DatabaseHandle }): Promise<void> {
  app.addHook('onRoute', (route: RouteOptions) => {
    const declared = route.config?.auditRead;
    if (declared === undefined) return;
    const record: onSendHookHandler = async (request, reply, payload) => {
      if (reply.statusCode < 200 || reply.statusCode >= 300) return payload;
      const target = declared.target && { type: declared.target.type, id: declared.target.id(request) };
      await withAuditedTransaction(database, readContext(request), (_db, write) =>
        write({ action: declared.action, target }),
      );
      return payload;
    };
    route.onSend = [...(route.onSend === undefined ? [] : [route.onSend].flat()), record];
  });
}

/**
 * Records reads of sensitive resources, declared per route with `config.auditRead`. Registered before every route,
 * since its `onRoute` hook equips each later route that declares it.
 */
export const auditReadsPlugin = fp(auditReads, { name: 'plinth-audit-reads' });
