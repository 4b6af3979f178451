import { orgErrors } from '@plinth/shared';
import type { FastifyInstance, FastifyRequest, onRequestHookHandler, RouteOptions } from 'fastify';
import { AppError } from '../../core/errors.ts';
import { type Authenticate, principalOf } from '../auth/index.ts';
import type { AccessResolver } from './access.ts';
import type { AccessRegistry } from './registry.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * The permission an organization route requires (`resource:action`). The route's path has an `{orgId}`;
     * the caller must be a member of that organization (or hold an API key of it) whose role (or scopes)
     * include the permission. Checked before the body is parsed; shown in the API docs as `x-permission`.
     */
    permission?: string;
    /**
     * A path parameter naming a user (e.g. `userId`): when it names the caller, the permission is not needed
     * (a member may leave an organization without the right to remove others).
     */
    permissionWaivedForSelf?: string;
  }
}

/** Every route under this path must declare a permission; a route without one is a bug. */
const ORG_ROUTES = '/api/v1/orgs/:orgId';

/**
 * Makes route permissions declarative: for every route that declares `config.permission`, adds the check as
 * an `onRequest` hook (authenticate — access token or API key —, then resolve the caller's access to the
 * organization, then require the permission) and documents it in the route's OpenAPI operation. A route under
 * `/orgs/{orgId}` without a permission, or naming an undeclared one, stops the server from starting.
 *
 * Answers: no or bad credentials → 401; not a member, another organization's key, or no such organization →
 * 404 ORG_NOT_FOUND (whether it exists is not revealed); a member without the permission → 403
 * PERMISSION_DENIED with the missing `permission`.
 */
export function enforcePermissions(
  app: FastifyInstance,
  deps: { registry: AccessRegistry; resolver: AccessResolver; authenticate: Authenticate },
): void {
  app.decorateRequest('orgAccess', undefined);
  app.addHook('onRoute', (route: RouteOptions) => {
    const permission = route.config?.permission;
    if (permission === undefined) {
      if (route.url.startsWith(ORG_ROUTES)) {
        throw new Error(`${route.method} ${route.url} names an organization but declares no permission`);
      }
      return;
    }
    if (!route.url.startsWith(ORG_ROUTES))
      throw new Error(`${route.url} declares a permission outside ${ORG_ROUTES}`);
    if (!deps.registry.hasPermission(permission)) {
      throw new Error(`${route.method} ${route.url} requires undeclared permission ${permission}`);
    }
    const selfParam = route.config?.permissionWaivedForSelf;
    const check: onRequestHookHandler = async (request, reply) => {
      await deps.authenticate(request, reply);
      request.orgAccess = await authorize(request, permission, selfParam, deps.resolver);
    };
    route.onRequest = [check, ...(route.onRequest === undefined ? [] : [route.onRequest].flat())];
    if (route.schema) {
      const waived = selfParam ? ` Members may do this to themselves without it.` : '';
      route.schema = {
        ...route.schema,
        description:
          `${route.schema.description ?? route.schema.summary ?? ''}\n\nRequires the \`${permission}\` permission.${waived}`.trim(),
        security: [{ bearerAuth: [] }, { apiKey: [] }],
        'x-permission': permission,
      } as typeof route.schema;
    }
  });
}

async function authorize(
  request: FastifyRequest,
  permission: string,
  selfParam: string | undefined,
  resolver: AccessResolver,
) {
  const params = request.params as Record<string, string | undefined>;
  const principal = principalOf(request);
  const access = await resolver.resolve(params.orgId ?? '', principal);
  if (!access) throw new AppError(orgErrors.ORG_NOT_FOUND);
  const self = selfParam !== undefined && principal.type === 'user' && params[selfParam] === principal.userId;
  if (!self && !access.permissions.has(permission)) {
    throw new AppError(orgErrors.PERMISSION_DENIED, {
      detail: `This needs the ${permission} permission.`,
      extensions: { permission },
    });
  }
  return access;
}
