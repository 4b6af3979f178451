import { REALTIME_CLOSE, RealtimeTicket } from '@plinth/shared';
import { describe, expect, it } from 'vitest';
import { buildApp, type PlinthApp } from '../../app.ts';
import { bearer, cleanupAfterEach } from '../../test/auth-helpers.ts';
import { testDialects, testRedisUrl } from '../../test/dialects.ts';
import { createTestDatabase, installationSecrets, testConfig } from '../../test/harness.ts';
import { createOrg, signedInUser } from '../../test/org-helpers.ts';
import { connectRealtime, listen, realtimeUrl, UpgradeRefused } from '../../test/realtime-helpers.ts';

// Two server instances of one installation — one database, one Redis — as behind a load balancer with no sticky
// sessions: what happens on one reaches the clients connected to the other.

const cleanups = cleanupAfterEach();

async function twoReplicas(
  dialect: (typeof testDialects)[number],
): Promise<[PlinthApp, PlinthApp, string, string]> {
  const database = await createTestDatabase(dialect);
  cleanups.push(() => database.drop());
  const env = {
    REQUIRE_EMAIL_VERIFICATION: 'false',
    REDIS_URL: testRedisUrl as string,
    ...installationSecrets(),
  };
  const apps: PlinthApp[] = [];
  for (let i = 0; i < 2; i++) {
    const app = await buildApp(testConfig(database, env));
    cleanups.push(() => app.close());
    apps.push(app);
  }
  const [a, b] = apps as [PlinthApp, PlinthApp];
  return [a, b, await listen(a), await listen(b)];
}

describe.skipIf(!testRedisUrl).each(testDialects)('realtime across replicas (%s, Redis)', (dialect) => {
  it('delivers an event published on one instance to a client connected to the other, and only there', async () => {
    const [a, , , baseB] = await twoReplicas(dialect);
    const ada = await signedInUser(a, 'ada@example.com');
    const bob = await signedInUser(a, 'bob@example.com');
    const orgA = await createOrg(a, ada.accessToken, 'Org A');
    const orgB = await createOrg(a, bob.accessToken, 'Org B');
    const adaOnB = await connectRealtime(realtimeUrl(baseB), { headers: bearer(ada.accessToken) });
    const bobOnB = await connectRealtime(realtimeUrl(baseB), { headers: bearer(bob.accessToken) });
    cleanups.push(
      () => adaOnB.close(),
      () => bobOnB.close(),
    );
    await adaOnB.subscribe(`org:${orgA.id}`);
    await bobOnB.subscribe(`org:${orgB.id}`);

    await a.realtime.publish(`org:${orgA.id}`, { type: 'thing.happened', data: { from: 'a' } });
    expect(await adaOnB.next((m) => m.type === 'event')).toMatchObject({
      channel: `org:${orgA.id}`,
      event: { type: 'thing.happened', data: { from: 'a' } },
    });
    // A notification created through the other instance's API arrives too.
    await adaOnB.subscribe(`user:${ada.userId}`);
    await a.notifications.create(a.database.db, { userId: ada.userId, type: 'test.hello', title: 'Hello' });
    expect(await adaOnB.next((m) => m.type === 'event')).toMatchObject({
      channel: `user:${ada.userId}`,
      event: { type: 'notification.created', data: { title: 'Hello' } },
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(bobOnB.pending().filter((m) => m.type === 'event')).toEqual([]);
  });

  it('spends a ticket once across instances', async () => {
    const [a, , baseA, baseB] = await twoReplicas(dialect);
    const ada = await signedInUser(a, 'ada@example.com');
    const res = await a.inject({
      method: 'POST',
      url: '/api/v1/realtime/ticket',
      headers: bearer(ada.accessToken),
    });
    const { ticket } = RealtimeTicket.parse(res.json());
    const onB = await connectRealtime(realtimeUrl(baseB, `?ticket=${ticket}`));
    cleanups.push(() => onB.close());
    expect(await onB.next((m) => m.type === 'welcome')).toMatchObject({ principal: { userId: ada.userId } });
    const onA = await connectRealtime(realtimeUrl(baseA, `?ticket=${ticket}`)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(onA).toBeInstanceOf(UpgradeRefused);
    expect((onA as UpgradeRefused).status).toBe(401);
  });

  it("closes a client's socket on one instance when its session is revoked on the other", async () => {
    const [a, , , baseB] = await twoReplicas(dialect);
    const ada = await signedInUser(a, 'ada@example.com');
    const onB = await connectRealtime(realtimeUrl(baseB), { headers: bearer(ada.accessToken) });
    cleanups.push(() => onB.close());
    const logout = await a.inject({
      method: 'POST',
      url: '/api/v1/auth/logout',
      headers: bearer(ada.accessToken),
    });
    expect(logout.statusCode).toBe(204);
    expect(await onB.closed).toEqual(REALTIME_CLOSE.CREDENTIAL_REVOKED);
  });

  it('delivers once to a client on the publishing instance', async () => {
    const [a, , baseA] = await twoReplicas(dialect);
    const ada = await signedInUser(a, 'ada@example.com');
    const onA = await connectRealtime(realtimeUrl(baseA), { headers: bearer(ada.accessToken) });
    cleanups.push(() => onA.close());
    await onA.subscribe(`user:${ada.userId}`);
    await a.realtime.publish(`user:${ada.userId}`, { type: 'thing.happened', id: 'only-once' });
    expect(await onA.next((m) => m.type === 'event')).toMatchObject({ event: { id: 'only-once' } });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(onA.pending().filter((m) => m.type === 'event')).toEqual([]);
  });
});
