import { describe, expect, it } from 'vitest';
import { createBroadcast } from '../../core/broadcast.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import { cleanupAfterEach, startTestApp } from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { addMember, createOrg, signedInUser } from '../../test/org-helpers.ts';
import { type AccessResolver, createAccessResolver } from './access.ts';

const cleanups = cleanupAfterEach();

describe.each(testDialects)('membership resolver (%s)', (dialect) => {
  it('does not cache a membership read just before a change, when the change is announced during the read', async () => {
    const app = await startTestApp(dialect, cleanups, { env: { REQUIRE_EMAIL_VERIFICATION: 'false' } });
    const owner = await signedInUser(app, 'ada@example.com');
    const org = await createOrg(app, owner.accessToken);
    const admin = await addMember(app, owner.accessToken, org.id, 'grace@example.com', 'admin');

    let demoteDuringNextRead = true;
    // The real database, with one interleaving forced: the first read of the membership returns the row as it
    // was, and before it is handed back the member is demoted and the change announced — as when an owner
    // demotes them at that very moment.
    const database: DatabaseHandle = {
      ...app.database,
      withTenant: async (orgId, work) => {
        const result = await app.database.withTenant(orgId, work);
        if (demoteDuringNextRead) {
          demoteDuringNextRead = false;
          await app.database.withTenant(org.id, (db) =>
            db
              .updateTable('memberships')
              .set({ role: 'viewer' })
              .where('user_id', '=', admin.userId)
              .execute(),
          );
          await resolver.memberChanged(org.id, admin.userId);
        }
        return result;
      },
    };
    const resolver: AccessResolver = await createAccessResolver({
      database,
      registry: app.accessRegistry,
      broadcast: createBroadcast(undefined, app.log),
      ttlSeconds: 60,
    });
    const principal = { type: 'user' as const, userId: admin.userId, sessionId: 'session' };

    // The request that raced the change may still act as an admin: it began before the demotion.
    expect((await resolver.resolve(org.id, principal))?.role).toBe('admin');
    // Every later one must not: the stale read was not cached.
    const after = await resolver.resolve(org.id, principal);
    expect(after?.role).toBe('viewer');
    expect(after?.permissions.has('members:update')).toBe(false);
  });
});
