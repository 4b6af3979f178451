import { randomUUID } from 'node:crypto';
import { Notification, NotificationPage } from '@plinth/shared';
import { describe, expect, it } from 'vitest';
import type { PlinthApp } from '../../app.ts';
import {
  bearer,
  cleanupAfterEach,
  createFakeClock,
  DAY,
  expectProblem,
  type FakeClock,
  MINUTE,
  startTestApp,
} from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { createApiKey, createOrg, signedInUser, type TestUser } from '../../test/org-helpers.ts';
import {
  connectRealtime,
  listen,
  type RealtimeClient,
  realtimeUrl,
  sleep,
} from '../../test/realtime-helpers.ts';

// In-app notifications: created by modules, listed and marked by their owner only, pushed live once committed.

const cleanups = cleanupAfterEach();

async function start(dialect: (typeof testDialects)[number]): Promise<{ app: PlinthApp; clock: FakeClock }> {
  const clock = createFakeClock();
  const app = await startTestApp(dialect, cleanups, { clock, env: { REQUIRE_EMAIL_VERIFICATION: 'false' } });
  return { app, clock };
}

const notify = (app: PlinthApp, user: TestUser, title: string, extra: Record<string, unknown> = {}) =>
  app.notifications.create(app.database.db, { userId: user.userId, type: 'test.note', title, ...extra });

async function list(app: PlinthApp, user: TestUser, query = '') {
  const res = await app.inject({
    method: 'GET',
    url: `/api/v1/me/notifications${query}`,
    headers: bearer(user.accessToken),
  });
  expect(res.statusCode).toBe(200);
  return NotificationPage.parse(res.json());
}

const patch = (app: PlinthApp, user: TestUser, url: string, payload: Record<string, unknown>) =>
  app.inject({
    method: 'PATCH',
    url: `/api/v1/me/notifications${url}`,
    headers: bearer(user.accessToken),
    payload,
  });

const listening = new WeakMap<PlinthApp, Promise<string>>();

async function liveClient(app: PlinthApp, user: TestUser): Promise<RealtimeClient> {
  let listened = listening.get(app);
  if (!listened) {
    listened = listen(app);
    listening.set(app, listened);
  }
  const base = await listened;
  const client = await connectRealtime(realtimeUrl(base), { headers: bearer(user.accessToken) });
  cleanups.push(() => client.close());
  expect(await client.subscribe(`user:${user.userId}`)).toMatchObject({ type: 'subscribed' });
  return client;
}

describe.each(testDialects)('notifications (%s)', (dialect) => {
  it('lists the caller’s notifications newest first, a page at a time, with the unread count and filter', async () => {
    const { app, clock } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const bob = await signedInUser(app, 'bob@example.com');
    const made: Notification[] = [];
    for (let i = 0; i < 5; i++) {
      made.push(await notify(app, ada, `note ${i}`, { body: `body ${i}`, data: { n: i } }));
      clock.advance(MINUTE);
    }
    await notify(app, bob, 'for bob');
    expect((await patch(app, ada, `/${made[0]?.id}`, { read: true })).statusCode).toBe(200);

    const first = await list(app, ada, '?limit=2');
    expect(first.data.map((n) => n.title)).toEqual(['note 4', 'note 3']);
    expect(first.data[0]).toMatchObject({ type: 'test.note', body: 'body 4', data: { n: 4 }, readAt: null });
    expect(first.unreadCount).toBe(4);
    const second = await list(app, ada, `?limit=2&cursor=${first.nextCursor}`);
    expect(second.data.map((n) => n.title)).toEqual(['note 2', 'note 1']);
    const last = await list(app, ada, `?limit=2&cursor=${second.nextCursor}`);
    expect(last.data.map((n) => n.title)).toEqual(['note 0']);
    expect(last.nextCursor).toBeNull();

    expect((await list(app, ada, '?unread=true')).data.map((n) => n.title)).toEqual([
      'note 4',
      'note 3',
      'note 2',
      'note 1',
    ]);
    expect((await list(app, ada, '?unread=false')).data.map((n) => n.title)).toEqual(['note 0']);
    expect((await list(app, ada, '?sort=createdAt&limit=1')).data.map((n) => n.title)).toEqual(['note 0']);
    // Bob's is not Ada's.
    expect((await list(app, ada)).data.map((n) => n.title)).not.toContain('for bob');
    expect((await list(app, bob)).data.map((n) => n.title)).toEqual(['for bob']);
  });

  it('marks one read and unread again, keeping the first read time', async () => {
    const { app, clock } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const note = await notify(app, ada, 'hello');
    const readAt = clock.now().toISOString();
    const read = await patch(app, ada, `/${note.id}`, { read: true });
    expect(read.statusCode).toBe(200);
    expect(Notification.parse(read.json()).readAt).toBe(readAt);
    clock.advance(MINUTE);
    expect(Notification.parse((await patch(app, ada, `/${note.id}`, { read: true })).json()).readAt).toBe(
      readAt,
    );
    expect(
      Notification.parse((await patch(app, ada, `/${note.id}`, { read: false })).json()).readAt,
    ).toBeNull();
    expect((await list(app, ada)).unreadCount).toBe(1);
  });

  it('marks all read, or only those up to `before`', async () => {
    const { app, clock } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const bob = await signedInUser(app, 'bob@example.com');
    await notify(app, ada, 'old');
    const cutoff = clock.now().toISOString();
    clock.advance(MINUTE);
    await notify(app, ada, 'new');
    await notify(app, bob, 'bob’s');
    const some = await patch(app, ada, '', { read: true, before: cutoff });
    expect(some.json()).toEqual({ updated: 1 });
    expect((await list(app, ada, '?unread=true')).data.map((n) => n.title)).toEqual(['new']);
    expect((await patch(app, ada, '', { read: true })).json()).toEqual({ updated: 1 });
    expect((await list(app, ada)).unreadCount).toBe(0);
    expect((await list(app, bob)).unreadCount).toBe(1);
    expectProblem(await patch(app, ada, '', { read: false }), 400, 'VALIDATION_FAILED');
  });

  it("answers 404 for another user's notification and changes nothing", async () => {
    const { app } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const bob = await signedInUser(app, 'bob@example.com');
    const adas = await notify(app, ada, 'private');
    expectProblem(await patch(app, bob, `/${adas.id}`, { read: true }), 404, 'NOTIFICATION_NOT_FOUND');
    expectProblem(await patch(app, bob, `/${randomUUID()}`, { read: true }), 404, 'NOTIFICATION_NOT_FOUND');
    expect((await list(app, ada)).data[0]?.readAt).toBeNull();
    expect((await list(app, bob)).data).toEqual([]);
  });

  it('refuses bad input with 400, no token with 401 and an API key with 403', async () => {
    const { app } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const org = await createOrg(app, ada.accessToken);
    const key = await createApiKey(app, ada.accessToken, org.id, { scopes: ['realtime:read'] });
    const note = await notify(app, ada, 'x');
    expectProblem(await patch(app, ada, '/not-an-id', { read: true }), 400, 'VALIDATION_FAILED');
    expectProblem(await patch(app, ada, `/${note.id}`, { read: 'yes' }), 400, 'VALIDATION_FAILED');
    expectProblem(
      await patch(app, ada, `/${note.id}`, { read: true, title: 'hacked' }),
      400,
      'VALIDATION_FAILED',
    );
    expectProblem(
      await app.inject({
        method: 'GET',
        url: '/api/v1/me/notifications?unread=maybe',
        headers: bearer(ada.accessToken),
      }),
      400,
      'VALIDATION_FAILED',
    );
    expectProblem(
      await app.inject({ method: 'GET', url: '/api/v1/me/notifications' }),
      401,
      'UNAUTHENTICATED',
    );
    expectProblem(
      await app.inject({ method: 'GET', url: '/api/v1/me/notifications', headers: bearer(key.key) }),
      403,
      'API_KEY_NOT_ALLOWED',
    );
  });

  it('pushes a new notification live to its owner only, and changes to it', async () => {
    const { app } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const bob = await signedInUser(app, 'bob@example.com');
    const adaLive = await liveClient(app, ada);
    const bobLive = await liveClient(app, bob);
    const note = await notify(app, ada, 'live', { data: { orderId: 'o-1' } });
    expect(await adaLive.next((m) => m.type === 'event')).toEqual({
      type: 'event',
      channel: `user:${ada.userId}`,
      event: { id: note.id, type: 'notification.created', occurredAt: note.createdAt, data: note },
    });
    await patch(app, ada, `/${note.id}`, { read: true });
    expect(await adaLive.next((m) => m.type === 'event')).toMatchObject({
      event: { type: 'notification.updated', data: { id: note.id } },
    });
    await sleep(200);
    expect(bobLive.pending().filter((m) => m.type === 'event')).toEqual([]);
  });

  it('pushes a notification made in a transaction only once it commits, and never one rolled back', async () => {
    const { app } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const live = await liveClient(app, ada);
    await app.database.db
      .transaction()
      .execute(async (trx) => {
        await app.notifications.create(trx, { userId: ada.userId, type: 'test.note', title: 'rolled back' });
        throw new Error('the change failed');
      })
      .catch(() => undefined);
    let created: Notification | undefined;
    await app.database.db.transaction().execute(async (trx) => {
      created = await app.notifications.create(trx, { userId: ada.userId, type: 'test.note', title: 'kept' });
      await sleep(150);
      // Not yet committed: nothing has been pushed.
      expect(live.pending().filter((m) => m.type === 'event')).toEqual([]);
    });
    expect(await live.next((m) => m.type === 'event')).toMatchObject({
      event: { id: created?.id, data: { title: 'kept' } },
    });
    await sleep(300);
    expect(live.pending().filter((m) => m.type === 'event')).toEqual([]);
    expect((await list(app, ada)).data.map((n) => n.title)).toEqual(['kept']);
  });

  it('refuses a malformed notification from a module', async () => {
    const { app } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    await expect(notify(app, ada, '')).rejects.toThrow();
    await expect(
      app.notifications.create(app.database.db, { userId: ada.userId, type: 'NotAType', title: 'x' }),
    ).rejects.toThrow();
    await expect(notify(app, ada, 'big', { data: { blob: 'x'.repeat(20_000) } })).rejects.toThrow();
    expect((await list(app, ada)).data).toEqual([]);
  });

  it('tells the person, in a notification, when their data export is ready — without the link', async () => {
    const { app } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const res = await app.inject({
      method: 'POST',
      url: '/api/v1/me/export',
      headers: bearer(ada.accessToken),
    });
    expect(res.statusCode).toBe(202);
    const { id } = res.json<{ id: string }>();
    await app.jobs.drain();
    const [notification, ...others] = (await list(app, ada)).data;
    expect(others).toEqual([]);
    expect(notification).toMatchObject({
      type: 'privacy.export_ready',
      data: { exportId: id },
      readAt: null,
    });
    expect(JSON.stringify(notification)).not.toContain('signature=');
  });

  it('includes the notifications in the data export and applies its retention policies', async () => {
    const { app, clock } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const old = await notify(app, ada, 'read long ago');
    await patch(app, ada, `/${old.id}`, { read: true });
    const unread = await notify(app, ada, 'still unread');
    const source = app.personalData.list().find((s) => s.name === 'notifications');
    if (!source) throw new Error('no notifications section');
    const exported = await app.database.acrossTenants((trx) => source.export(trx, ada.userId));
    expect((exported as Notification[]).map((n) => n.title)).toEqual(['read long ago', 'still unread']);

    clock.advance(91 * DAY);
    const policy = (name: string) => app.retention.list().find((p) => p.name === name);
    const cutoff = (days: number) => new Date(clock.now().getTime() - days * DAY).toISOString();
    // The access token has long expired: the rows are read directly.
    const remaining = async () =>
      (await app.database.db.selectFrom('notifications').select('id').execute()).map((r) => r.id);
    expect(await policy('notifications_read')?.apply(app.database, cutoff(90))).toBe(1);
    expect(await remaining()).toEqual([unread.id]);
    clock.advance(300 * DAY);
    expect(await policy('notifications')?.apply(app.database, cutoff(365))).toBe(1);
    expect(await remaining()).toEqual([]);
  });
});
