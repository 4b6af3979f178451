import { authErrors } from '@plinth/shared';
import type { FastifyInstance } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { Kysely } from 'kysely';
import { z } from 'zod';
import { AppError } from '../../core/errors.ts';
import { idParam } from '../../core/ids.ts';
import { allowedFrom, type IpRange, parseRange } from '../../core/ip-ranges.ts';
import { problemResponses } from '../../core/responses.ts';
import type { Database } from '../../db/schema.ts';
import { getUser } from './account.service.ts';
import { auditAccount, callerOf } from './account-audit.ts';
import { userOf } from './authenticate.ts';
import type { AuthDeps } from './deps.ts';
import { revokeUserSessions } from './session.service.ts';
import { clearFailures, emailKey } from './throttle.ts';

const adminRoute = { tags: ['Admin'], security: [{ bearerAuth: [] }] };
const UserParams = z.object({ userId: idParam('Not a user id.') });
const ADMIN_ACTIONS = {
  unlock: 'admin.user_unlocked',
  disable: 'admin.user_disabled',
  enable: 'admin.user_enabled',
} as const;
const NoContent = { 204: z.undefined().meta({ description: 'Done.' }) };

/**
 * The hooks of every superadmin route (`/api/v1/admin/…`): a request from an address in
 * `SUPERADMIN_ALLOWED_IPS` (when set), by a signed-in person (checked on request, before the body is even
 * parsed) whose account is an installation operator's (checked before the handler). Each use of these powers is
 * logged with the operator and the route.
 */
export function superadminOnly(app: FastifyInstance, deps: AuthDeps): void {
  const allowed = deps.config.auth.superadminAllowedIps;
  // Validated by loadConfig, so every entry parses; parsed once here rather than on every request.
  const ranges =
    allowed.length === 0 ? null : allowed.map((entry) => parseRange(entry)).filter((r): r is IpRange => !!r);
  // First of all, so that from elsewhere even a stolen operator's token is worth nothing and costs no token
  // check. `request.ip` is the socket's address unless TRUST_PROXY trusts it, so a client cannot get in by
  // sending its own X-Forwarded-For.
  app.addHook('onRequest', async (request) => {
    if (!allowedFrom(ranges, request.ip)) {
      request.log.warn(
        { ip: request.ip, action: request.routeOptions.url },
        'superadmin route refused by IP',
      );
      throw new AppError(authErrors.SUPERADMIN_IP_NOT_ALLOWED);
    }
  });
  app.addHook('onRequest', app.authenticate);
  app.addHook('preHandler', async (request) => {
    const caller = await getUser(deps, userOf(request).userId);
    if (caller.platform_role !== 'superadmin')
      throw new AppError(authErrors.FORBIDDEN, { detail: 'Only installation operators may do this.' });
    request.log.info(
      { adminId: caller.id, method: request.method, action: request.routeOptions.url },
      'superadmin action',
    );
  });
}

/** Installation operators' account actions: `/api/v1/admin/users/{userId}/…`, superadmin only. */
export const adminUserRoutes: FastifyPluginAsyncZod<{ deps: AuthDeps }> = async (app, { deps }) => {
  superadminOnly(app, deps);

  /**
   * One operator action on an account: a change in one transaction with its event on the installation's chain
   * (`admin.user_unlocked`, `admin.user_disabled`, `admin.user_enabled`: the account as target, the operator as
   * actor).
   */
  const action = (
    verb: keyof typeof ADMIN_ACTIONS,
    summary: string,
    description: string,
    run: (db: Kysely<Database>, user: Awaited<ReturnType<typeof getUser>>) => Promise<void>,
  ) =>
    app.post(
      `/admin/users/:userId/${verb}`,
      {
        schema: {
          ...adminRoute,
          summary,
          description,
          operationId: `${verb}User`,
          params: UserParams,
          response: { ...NoContent, ...problemResponses(400, 401, 403, 404) },
        },
      },
      async (request, reply) => {
        const user = await getUser(deps, request.params.userId);
        await auditAccount(deps, null, callerOf(request), async (db, record) => {
          await run(db, user);
          await record({ action: ADMIN_ACTIONS[verb], target: { type: 'user', id: user.id } });
        });
        return reply.status(204).send(undefined);
      },
    );

  action(
    'unlock',
    'Unlock an account',
    'Clears the failed sign-in counter and any lock of the account.',
    (db, user) => clearFailures(db, emailKey(user.email)),
  );
  action(
    'disable',
    'Disable an account',
    'The account can no longer sign in; its sessions end at once.',
    async (db, user) => {
      const now = deps.clock.now().toISOString();
      await db
        .updateTable('users')
        .set({ disabled_at: now, updated_at: now })
        .where('id', '=', user.id)
        .execute();
      await revokeUserSessions(deps, db, user.id, 'account_disabled');
    },
  );
  action('enable', 'Enable an account', 'Lets a disabled account sign in again.', async (db, user) => {
    const now = deps.clock.now().toISOString();
    await db
      .updateTable('users')
      .set({ disabled_at: null, updated_at: now })
      .where('id', '=', user.id)
      .execute();
  });
};
