import { describe, expect, it } from 'vitest';
import { createBroadcast } from '../../core/broadcast.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import { cleanupAfterEach, createFakeClock, startTestApp } from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { createApiKey, createOrg, signedInUser } from '../../test/org-helpers.ts';
import { createApiKeyStore } from './apikey.store.ts';

const cleanups = cleanupAfterEach();

describe.each(testDialects)('API key store (%s)', (dialect) => {
  it('does not cache a key read just before its revocation, when the revocation is announced during the read', async () => {
    const app = await startTestApp(dialect, cleanups, { env: { REQUIRE_EMAIL_VERIFICATION: 'false' } });
    const owner = await signedInUser(app, 'ada@example.com');
    const org = await createOrg(app, owner.accessToken);
    const key = await createApiKey(app, owner.accessToken, org.id, { scopes: ['members:read'] });

    const broadcast = createBroadcast(undefined, app.log);
    let revokeDuringNextRead = true;
    // The real database, with one interleaving forced: the first read of the key returns the row as it was, and
    // before it is handed back the key is revoked and the revocation announced — as when another request revokes
    // it at that very moment.
    const database: DatabaseHandle = {
      ...app.database,
      acrossTenants: async (work) => {
        const result = await app.database.acrossTenants(work);
        if (revokeDuringNextRead) {
          revokeDuringNextRead = false;
          await app.database.withTenant(org.id, (db) =>
            db
              .updateTable('api_keys')
              .set({ revoked_at: new Date().toISOString() })
              .where('id', '=', key.id)
              .execute(),
          );
          await store.keyChanged(key.id);
        }
        return result;
      },
    };
    const store = await createApiKeyStore({
      database,
      encryptionKey: app.config.encryptionKey,
      clock: createFakeClock(new Date()),
      log: app.log,
      broadcast,
      cacheTtlSeconds: 60,
    });
    cleanups.push(() => store.close());

    // The request that raced the revocation may pass: it began before the key was revoked.
    expect((await store.verify(key.key, '127.0.0.1')).keyId).toBe(key.id);
    // Every later one must not: the stale read was not cached.
    await expect(store.verify(key.key, '127.0.0.1')).rejects.toMatchObject({ code: 'INVALID_API_KEY' });
  });
});
