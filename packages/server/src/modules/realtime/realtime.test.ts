import { randomUUID } from 'node:crypto';
import { REALTIME_CLOSE, type RealtimeServerMessage } from '@plinth/shared';
import { describe, expect, it } from 'vitest';
import type { PlinthApp } from '../../app.ts';
import {
  bearer,
  cleanupAfterEach,
  createFakeClock,
  type FakeClock,
  SECOND,
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
  UpgradeRefused,
} from '../../test/realtime-helpers.ts';

// The realtime WebSocket against a listening app, with the `ws` client a program would use: who may connect,
// who may follow which channel, what reaches whom, and what ends a connection.

const cleanups = cleanupAfterEach();
const TTL_SECONDS = 900;
const isEvent = (m: RealtimeServerMessage) => m.type === 'event';
const isError = (m: RealtimeServerMessage) => m.type === 'error';

interface Setup {
  app: PlinthApp;
  base: string;
  clock: FakeClock;
}

/** Ada owning organization A and Bob owning B, each signed in with a connected client. */
async function twoOrganizations(dialect: (typeof testDialects)[number]) {
  const { app, base } = await start(dialect);
  const ada = await signedInUser(app, 'ada@example.com');
  const bob = await signedInUser(app, 'bob@example.com');
  const orgA = await createOrg(app, ada.accessToken, 'Org A');
  const orgB = await createOrg(app, bob.accessToken, 'Org B');
  return { app, bob, orgA, orgB, adaClient: await connect(base, ada), bobClient: await connect(base, bob) };
}

async function start(
  dialect: (typeof testDialects)[number],
  env: Record<string, string> = {},
): Promise<Setup> {
  const clock = createFakeClock();
  const app = await startTestApp(dialect, cleanups, {
    clock,
    env: { REQUIRE_EMAIL_VERIFICATION: 'false', ACCESS_TOKEN_TTL_SECONDS: String(TTL_SECONDS), ...env },
  });
  const base = await listen(app);
  return { app, base, clock };
}

async function connect(
  base: string,
  user: Pick<TestUser, 'accessToken'>,
  query = '',
): Promise<RealtimeClient> {
  const client = await connectRealtime(realtimeUrl(base, query), { headers: bearer(user.accessToken) });
  cleanups.push(() => client.close());
  return client;
}

/** Expects the upgrade to be refused with this status and problem code. */
async function expectRefused(promise: Promise<unknown>, status: number, code: string): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(UpgradeRefused);
  expect((error as UpgradeRefused).status).toBe(status);
  expect((error as UpgradeRefused).body.code).toBe(code);
}

async function expectNoMessage(
  client: RealtimeClient,
  match: (m: RealtimeServerMessage) => boolean,
  ms = 300,
) {
  await sleep(ms);
  expect(client.pending().filter(match)).toEqual([]);
}

describe.each(testDialects)('realtime WebSocket (%s)', (dialect) => {
  it('refuses an upgrade without credentials, or with a bad token, with 401 before any socket opens', async () => {
    const { base } = await start(dialect);
    await expectRefused(connectRealtime(realtimeUrl(base)), 401, 'UNAUTHENTICATED');
    await expectRefused(
      connectRealtime(realtimeUrl(base), { headers: { authorization: 'Bearer not.a.token' } }),
      401,
      'INVALID_TOKEN',
    );
  });

  it('welcomes the caller with who they are, when the connection ends and the limits', async () => {
    const { app, base, clock } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const client = await connect(base, ada);
    const welcome = await client.next((m) => m.type === 'welcome');
    expect(welcome).toMatchObject({
      type: 'welcome',
      principal: { type: 'user', userId: ada.userId },
      expiresAt: new Date(clock.now().getTime() + TTL_SECONDS * SECOND).toISOString(),
      limits: { maxSubscriptions: 100, maxMessageBytes: 4096 },
    });
  });

  it("never hands a client of organization A organization B's events, and refuses B's channel to A", async () => {
    const { adaClient, bobClient, orgA, orgB, app } = await twoOrganizations(dialect);

    expect(await adaClient.subscribe(`org:${orgA.id}`)).toEqual({
      type: 'subscribed',
      channel: `org:${orgA.id}`,
    });
    expect(await bobClient.subscribe(`org:${orgB.id}`)).toEqual({
      type: 'subscribed',
      channel: `org:${orgB.id}`,
    });
    // Another organization's channel, and one of no organization at all, answer the same.
    for (const channel of [`org:${orgB.id}`, `org:${randomUUID()}`]) {
      expect(await adaClient.subscribe(channel)).toMatchObject({
        type: 'error',
        code: 'CHANNEL_FORBIDDEN',
        channel,
      });
    }

    await app.realtime.publish(`org:${orgB.id}`, { type: 'thing.happened', data: { secret: 'of B' } });
    await app.realtime.publish(`org:${orgA.id}`, { type: 'thing.happened', data: { n: 1 } });
    const event = await adaClient.next(isEvent);
    expect(event).toMatchObject({
      channel: `org:${orgA.id}`,
      event: { type: 'thing.happened', data: { n: 1 } },
    });
    const bobs = await bobClient.next(isEvent);
    expect(bobs).toMatchObject({ channel: `org:${orgB.id}`, event: { data: { secret: 'of B' } } });
    await expectNoMessage(adaClient, isEvent);
    await expectNoMessage(bobClient, isEvent);
  });

  it("delivers an organization's committed domain events on its channel only", async () => {
    const { adaClient, bobClient, orgA, orgB, app, bob } = await twoOrganizations(dialect);
    await adaClient.subscribe(`org:${orgA.id}`);
    await bobClient.subscribe(`org:${orgB.id}`);

    const key = await createApiKey(app, bob.accessToken, orgB.id, { scopes: ['members:read'] });
    await app.jobs.drain();
    const event = await bobClient.next(isEvent);
    expect(event).toMatchObject({
      channel: `org:${orgB.id}`,
      event: { type: 'apikey.created', data: { id: key.id } },
    });
    expect(JSON.stringify(event)).not.toContain(key.key);
    await expectNoMessage(adaClient, isEvent);
  });

  it("refuses another user's notification channel; the caller's own is theirs", async () => {
    const { app, base } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const bob = await signedInUser(app, 'bob@example.com');
    const client = await connect(base, ada);
    expect(await client.subscribe(`user:${bob.userId}`)).toMatchObject({
      type: 'error',
      code: 'CHANNEL_FORBIDDEN',
    });
    expect(await client.subscribe(`user:${ada.userId}`)).toMatchObject({ type: 'subscribed' });
    await app.realtime.publish(`user:${bob.userId}`, { type: 'notification.created', data: { for: 'bob' } });
    await app.realtime.publish(`user:${ada.userId}`, { type: 'notification.created', data: { for: 'ada' } });
    expect(await client.next(isEvent)).toMatchObject({ event: { data: { for: 'ada' } } });
    await expectNoMessage(client, isEvent);
  });

  it('lets an API key follow its own organization with realtime:read, and nothing else', async () => {
    const { app, base } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const orgA = await createOrg(app, ada.accessToken, 'Org A');
    const orgB = await createOrg(app, ada.accessToken, 'Org B');
    const subscriber = await createApiKey(app, ada.accessToken, orgA.id, { scopes: ['realtime:read'] });
    const reader = await createApiKey(app, ada.accessToken, orgA.id, { scopes: ['members:read'] });

    const client = await connect(base, { accessToken: subscriber.key });
    expect(await client.next((m) => m.type === 'welcome')).toMatchObject({
      principal: { type: 'apikey', keyId: subscriber.id, orgId: orgA.id },
      expiresAt: null,
    });
    expect(await client.subscribe(`org:${orgA.id}`)).toMatchObject({ type: 'subscribed' });
    expect(await client.subscribe(`org:${orgB.id}`)).toMatchObject({ code: 'CHANNEL_FORBIDDEN' });
    expect(await client.subscribe(`user:${ada.userId}`)).toMatchObject({ code: 'CHANNEL_FORBIDDEN' });
    const readerClient = await connect(base, { accessToken: reader.key });
    expect(await readerClient.subscribe(`org:${orgA.id}`)).toMatchObject({ code: 'CHANNEL_FORBIDDEN' });
  });

  it('closes the connection of an API key as soon as the key is revoked', async () => {
    const { app, base } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const org = await createOrg(app, ada.accessToken);
    const key = await createApiKey(app, ada.accessToken, org.id, { scopes: ['realtime:read'] });
    const client = await connect(base, { accessToken: key.key });
    const revoke = await app.inject({
      method: 'DELETE',
      url: `/api/v1/orgs/${org.id}/apikeys/${key.id}`,
      headers: bearer(ada.accessToken),
    });
    expect(revoke.statusCode).toBe(204);
    expect(await client.closed).toEqual(REALTIME_CLOSE.CREDENTIAL_REVOKED);
  });

  it('closes the socket with 4001 when the access token it was opened with expires', async () => {
    const { app, base, clock } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const client = await connect(base, ada);
    clock.advance((TTL_SECONDS - 10) * SECOND);
    await sleep(1200);
    expect(client.socket.readyState).toBe(client.socket.OPEN);
    clock.advance(11 * SECOND);
    expect(await client.closed).toEqual(REALTIME_CLOSE.CREDENTIAL_EXPIRED);
  });

  it('closes the socket with 4002 as soon as its session is revoked (sign-out)', async () => {
    const { app, base } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const client = await connect(base, ada);
    const logout = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/logout',
      headers: bearer(ada.accessToken),
    });
    expect(logout.statusCode).toBe(204);
    expect(await client.closed).toEqual(REALTIME_CLOSE.CREDENTIAL_REVOKED);
  });

  it('answers hostile messages with errors and keeps serving the connection', async () => {
    const { app, base } = await start(dialect, { REALTIME_MAX_SUBSCRIPTIONS: '2' });
    const ada = await signedInUser(app, 'ada@example.com');
    const org = await createOrg(app, ada.accessToken);
    const client = await connect(base, ada);
    const cases: [unknown, string][] = [
      ['not json at all', 'INVALID_MESSAGE'],
      ['[1,2,3]', 'INVALID_MESSAGE'],
      [{ type: 'launch', channel: 'x' }, 'INVALID_MESSAGE'],
      [{ type: 'subscribe' }, 'INVALID_MESSAGE'],
      [{ type: 'subscribe', channel: 'org:1', extra: true }, 'INVALID_MESSAGE'],
      ['{"__proto__":{"polluted":1},"type":"subscribe","channel":"x"}', 'INVALID_MESSAGE'],
      [{ type: 'subscribe', channel: 'org:NOT-A-UUID' }, 'INVALID_CHANNEL'],
      [{ type: 'subscribe', channel: `team:${org.id}` }, 'INVALID_CHANNEL'],
      [{ type: 'subscribe', channel: `org:${org.id.toUpperCase()}` }, 'INVALID_CHANNEL'],
      ['x'.repeat(5000), 'MESSAGE_TOO_LARGE'],
    ];
    for (const [message, code] of cases) {
      client.send(message);
      expect(await client.next(isError), JSON.stringify(message).slice(0, 80)).toMatchObject({ code });
    }
    client.socket.send(Buffer.from([1, 2, 3]), { binary: true });
    expect(await client.next(isError)).toMatchObject({ code: 'INVALID_MESSAGE' });
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();

    // The limit on subscriptions per connection.
    expect(await client.subscribe(`org:${org.id}`)).toMatchObject({ type: 'subscribed' });
    expect(await client.subscribe(`user:${ada.userId}`)).toMatchObject({ type: 'subscribed' });
    expect(await client.subscribe(`org:${randomUUID()}`)).toMatchObject({ code: 'TOO_MANY_SUBSCRIPTIONS' });
    client.send({ type: 'unsubscribe', channel: `org:${org.id}` });
    expect(await client.next((m) => m.type === 'unsubscribed')).toEqual({
      type: 'unsubscribed',
      channel: `org:${org.id}`,
    });
    await app.realtime.publish(`org:${org.id}`, { type: 'thing.happened' });
    await expectNoMessage(client, isEvent);

    // Still serving.
    client.send({ type: 'ping', id: 'p1' });
    expect(await client.next((m) => m.type === 'pong')).toEqual({ type: 'pong', id: 'p1' });
  });

  it('refuses a flood of messages beyond the per-connection rate', async () => {
    const { app, base } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const client = await connect(base, ada);
    for (let i = 0; i < 40; i++) client.send({ type: 'ping' });
    const limited = await client.next((m) => m.type === 'error' && m.code === 'RATE_LIMITED');
    expect(limited).toMatchObject({ code: 'RATE_LIMITED' });
    const pongs = client.pending().filter((m) => m.type === 'pong').length;
    expect(pongs).toBeLessThanOrEqual(21);
  });

  it('closes the connection with 1009 for a frame over the hard limit, without harming the server', async () => {
    const { app, base } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const client = await connect(base, ada);
    client.send('x'.repeat(100 * 1024));
    expect((await client.closed).code).toBe(1009);
    const again = await connect(base, ada);
    again.send({ type: 'ping' });
    expect(await again.next((m) => m.type === 'pong')).toEqual({ type: 'pong' });
  });

  it('checks the Origin of browser connections against CORS_ORIGINS and the public URL', async () => {
    const { app, base } = await start(dialect, {
      CORS_ORIGINS: 'https://app.example.com',
      PUBLIC_URL: 'https://plinth.example.com',
    });
    const ada = await signedInUser(app, 'ada@example.com');
    const url = realtimeUrl(base);
    await expectRefused(
      connectRealtime(url, { headers: bearer(ada.accessToken), origin: 'https://evil.example' }),
      403,
      'REALTIME_ORIGIN_NOT_ALLOWED',
    );
    for (const origin of ['https://app.example.com', 'https://plinth.example.com']) {
      const client = await connectRealtime(url, { headers: bearer(ada.accessToken), origin });
      cleanups.push(() => client.close());
      expect(await client.next((m) => m.type === 'welcome')).toMatchObject({ type: 'welcome' });
    }
  });

  it('closes a connection over the per-user limit with 4029, and counts a closed one out', async () => {
    const { app, base } = await start(dialect, { REALTIME_MAX_CONNECTIONS_PER_USER: '2' });
    const ada = await signedInUser(app, 'ada@example.com');
    const bob = await signedInUser(app, 'bob@example.com');
    const first = await connect(base, ada);
    await connect(base, ada);
    const third = await connect(base, ada);
    expect(await third.closed).toEqual(REALTIME_CLOSE.TOO_MANY_CONNECTIONS);
    // Someone else is not affected, and closing one makes room.
    const bobs = await connect(base, bob);
    expect(bobs.socket.readyState).toBe(bobs.socket.OPEN);
    await first.close();
    await sleep(100);
    const fourth = await connect(base, ada);
    expect(await fourth.next((m) => m.type === 'welcome')).toMatchObject({ type: 'welcome' });
  });

  it('drops a client that does not read its messages with 4009', async () => {
    const { app, base } = await start(dialect, { REALTIME_MAX_BUFFERED_BYTES: String(16 * 1024) });
    const ada = await signedInUser(app, 'ada@example.com');
    const client = await connect(base, ada);
    await client.subscribe(`user:${ada.userId}`);
    // The client stops reading; the kernel's buffers fill, then the server's.
    const raw = (client.socket as unknown as { _socket: { pause(): void; resume(): void } })._socket;
    raw.pause();
    const blob = 'x'.repeat(30 * 1024);
    for (let i = 0; i < 2000; i++) {
      await app.realtime.publish(`user:${ada.userId}`, { type: 'thing.happened', data: { blob } });
      if (i % 50 === 0) await sleep(1);
    }
    raw.resume();
    expect(await client.closed).toEqual(REALTIME_CLOSE.SLOW_CONSUMER);
  });

  it('closes every connection with 1001 when the server shuts down', async () => {
    const { app, base } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const client = await connect(base, ada);
    await app.close();
    expect(await client.closed).toEqual(REALTIME_CLOSE.GOING_AWAY);
  });
});
