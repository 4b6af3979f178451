import { randomUUID } from 'node:crypto';
import { REALTIME_CLOSE, RealtimeTicket } from '@plinth/shared';
import { describe, expect, it } from 'vitest';
import type { PlinthApp } from '../../app.ts';
import {
  bearer,
  cleanupAfterEach,
  createFakeClock,
  expectProblem,
  type FakeClock,
  SECOND,
  startTestApp,
} from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { createApiKey, createOrg, signedInUser } from '../../test/org-helpers.ts';
import {
  connectRealtime,
  listen,
  openSse,
  realtimeUrl,
  type SseStream,
  sseUrl,
  UpgradeRefused,
} from '../../test/realtime-helpers.ts';

// Tickets (single use, short-lived, never logged) and the server-sent events fallback.

const cleanups = cleanupAfterEach();
const TTL_SECONDS = 900;

async function start(
  dialect: (typeof testDialects)[number],
  options: { env?: Record<string, string>; logStream?: { write(line: string): void } } = {},
): Promise<{ app: PlinthApp; base: string; clock: FakeClock }> {
  const clock = createFakeClock();
  const app = await startTestApp(dialect, cleanups, {
    clock,
    env: {
      REQUIRE_EMAIL_VERIFICATION: 'false',
      ACCESS_TOKEN_TTL_SECONDS: String(TTL_SECONDS),
      ...options.env,
    },
    ...(options.logStream ? { logStream: options.logStream } : {}),
  });
  return { app, base: await listen(app), clock };
}

async function ticketFor(app: PlinthApp, accessToken: string): Promise<RealtimeTicket> {
  const res = await app.inject({
    method: 'POST',
    url: '/api/v1/realtime/ticket',
    headers: bearer(accessToken),
  });
  expect(res.statusCode).toBe(201);
  expect(res.headers['cache-control']).toBe('no-store');
  return RealtimeTicket.parse(res.json());
}

async function refusal(promise: Promise<unknown>): Promise<UpgradeRefused> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(UpgradeRefused);
  return error as UpgradeRefused;
}

async function sse(url: string, headers: Record<string, string> = {}): Promise<SseStream> {
  const stream = await openSse(url, headers);
  cleanups.push(async () => stream.close());
  return stream;
}

describe.each(testDialects)('realtime tickets (%s)', (dialect) => {
  it('opens a connection once with a ticket, whose session it stands for, and refuses it the second time', async () => {
    const { app, base, clock } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const { ticket, expiresAt } = await ticketFor(app, ada.accessToken);
    expect(ticket).toMatch(/^rtk_[A-Za-z0-9_-]{43}$/);
    expect(expiresAt).toBe(new Date(clock.now().getTime() + 30 * SECOND).toISOString());

    const client = await connectRealtime(realtimeUrl(base, `?ticket=${ticket}`));
    cleanups.push(() => client.close());
    expect(await client.next((m) => m.type === 'welcome')).toMatchObject({
      principal: { type: 'user', userId: ada.userId },
      // The connection lives as long as the access token the ticket was obtained with.
      expiresAt: new Date(clock.now().getTime() + TTL_SECONDS * SECOND).toISOString(),
    });
    expect(await client.subscribe(`user:${ada.userId}`)).toMatchObject({ type: 'subscribed' });

    const again = await refusal(connectRealtime(realtimeUrl(base, `?ticket=${ticket}`)));
    expect(again.status).toBe(401);
    expect(again.body.code).toBe('INVALID_REALTIME_TICKET');
    // Nothing is left of it in the database.
    expect(await app.database.db.selectFrom('realtime_tickets').selectAll().execute()).toEqual([]);
  });

  it('refuses an expired ticket, a made-up one, and a ticket sent with a header too', async () => {
    const { app, base, clock } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const expired = await ticketFor(app, ada.accessToken);
    clock.advance(31 * SECOND);
    for (const ticket of [expired.ticket, `rtk_${'A'.repeat(43)}`, 'rtk_short', 'anything']) {
      const refused = await refusal(
        connectRealtime(realtimeUrl(base, `?ticket=${encodeURIComponent(ticket)}`)),
      );
      expect(refused.status).toBe(401);
      expect(refused.body.code).toBe('INVALID_REALTIME_TICKET');
    }
    const fresh = await ticketFor(app, ada.accessToken);
    const both = await refusal(
      connectRealtime(realtimeUrl(base, `?ticket=${fresh.ticket}`), { headers: bearer(ada.accessToken) }),
    );
    expect(both.status).toBe(400);
    expect(both.body.code).toBe('REALTIME_AMBIGUOUS_CREDENTIAL');
  });

  it('closes a ticket-opened connection when the access token it came from expires', async () => {
    const { app, base, clock } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const { ticket } = await ticketFor(app, ada.accessToken);
    const client = await connectRealtime(realtimeUrl(base, `?ticket=${ticket}`));
    cleanups.push(() => client.close());
    clock.advance((TTL_SECONDS + 1) * SECOND);
    expect(await client.closed).toEqual(REALTIME_CLOSE.CREDENTIAL_EXPIRED);
  });

  it('refuses a ticket whose session was revoked in between', async () => {
    const { app, base } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const { ticket } = await ticketFor(app, ada.accessToken);
    await app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(ada.accessToken) });
    const refused = await refusal(connectRealtime(realtimeUrl(base, `?ticket=${ticket}`)));
    expect(refused.status).toBe(401);
  });

  it('gives tickets to people only: 401 without a token, 403 for an API key', async () => {
    const { app } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const org = await createOrg(app, ada.accessToken);
    const key = await createApiKey(app, ada.accessToken, org.id, { scopes: ['realtime:read'] });
    expectProblem(
      await app.inject({ method: 'POST', url: '/api/v1/realtime/ticket' }),
      401,
      'UNAUTHENTICATED',
    );
    expectProblem(
      await app.inject({ method: 'POST', url: '/api/v1/realtime/ticket', headers: bearer(key.key) }),
      403,
      'API_KEY_NOT_ALLOWED',
    );
  });

  it('never writes a ticket to the log, used or refused', async () => {
    const lines: string[] = [];
    const { app, base } = await start(dialect, {
      env: { LOG_LEVEL: 'trace' },
      logStream: { write: (line) => void lines.push(line) },
    });
    const ada = await signedInUser(app, 'ada@example.com');
    const { ticket } = await ticketFor(app, ada.accessToken);
    const client = await connectRealtime(realtimeUrl(base, `?ticket=${ticket}`));
    await client.close();
    await refusal(connectRealtime(realtimeUrl(base, `?ticket=${ticket}`)));
    const sseRefused = await openSse(sseUrl(base, [`user:${ada.userId}`], { ticket }));
    expect(sseRefused.status).toBe(401);
    expect(lines.length).toBeGreaterThan(0);
    const secret = ticket.slice('rtk_'.length);
    expect(lines.filter((line) => line.includes(secret))).toEqual([]);
  });
});

describe.each(testDialects)('realtime server-sent events (%s)', (dialect) => {
  it('streams the events of the channels named in the query, with a header or a ticket', async () => {
    const { app, base } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const org = await createOrg(app, ada.accessToken);
    const channels = [`org:${org.id}`, `user:${ada.userId}`];
    const stream = await sse(sseUrl(base, channels), bearer(ada.accessToken));
    expect(stream.status).toBe(200);
    expect(stream.headers['content-type']).toMatch(/^text\/event-stream/);
    expect(stream.headers['cache-control']).toBe('no-store');
    expect(stream.headers['x-request-id']).toBeTruthy();
    expect((await stream.next((e) => e.event === 'welcome')).data).toMatchObject({
      principal: { type: 'user', userId: ada.userId },
    });
    for (const channel of channels) {
      expect(
        (
          await stream.next(
            (e) => e.event === 'subscribed' && 'channel' in e.data && e.data.channel === channel,
          )
        ).data,
      ).toEqual({
        type: 'subscribed',
        channel,
      });
    }
    await app.realtime.publish(`org:${org.id}`, { type: 'thing.happened', data: { n: 1 } });
    await app.realtime.publish(`user:${ada.userId}`, { type: 'notification.created', data: { n: 2 } });
    expect((await stream.next((e) => e.event === 'event')).data).toMatchObject({
      channel: `org:${org.id}`,
      event: { type: 'thing.happened', data: { n: 1 } },
    });
    expect((await stream.next((e) => e.event === 'event')).data).toMatchObject({
      channel: `user:${ada.userId}`,
      event: { data: { n: 2 } },
    });

    const { ticket } = await ticketFor(app, ada.accessToken);
    const withTicket = await sse(sseUrl(base, [`user:${ada.userId}`], { ticket }));
    expect(withTicket.status).toBe(200);
    await withTicket.next((e) => e.event === 'subscribed');
    await app.realtime.publish(`user:${ada.userId}`, { type: 'notification.created', data: { n: 3 } });
    expect((await withTicket.next((e) => e.event === 'event')).data).toMatchObject({
      event: { data: { n: 3 } },
    });
  });

  it('refuses the whole stream for a channel the caller may not see, or one that is not a channel', async () => {
    const { app, base } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const bob = await signedInUser(app, 'bob@example.com');
    const orgB = await createOrg(app, bob.accessToken);
    const headers = bearer(ada.accessToken);
    const refusedChannels: [string[], number, string][] = [
      [[`user:${ada.userId}`, `org:${orgB.id}`], 403, 'REALTIME_CHANNEL_FORBIDDEN'],
      [[`user:${bob.userId}`], 403, 'REALTIME_CHANNEL_FORBIDDEN'],
      [[`org:${randomUUID()}`], 403, 'REALTIME_CHANNEL_FORBIDDEN'],
      [['org:nope'], 400, 'INVALID_REALTIME_CHANNEL'],
      [[], 400, 'VALIDATION_FAILED'],
    ];
    for (const [channels, status, code] of refusedChannels) {
      const stream = await openSse(sseUrl(base, channels), headers);
      expect(stream.status, channels.join(',')).toBe(status);
      expect(stream.problem?.code).toBe(code);
    }
    const anonymous = await openSse(sseUrl(base, [`user:${ada.userId}`]));
    expect(anonymous.status).toBe(401);
  });

  it('ends the stream with a close event when the access token expires', async () => {
    const { app, base, clock } = await start(dialect);
    const ada = await signedInUser(app, 'ada@example.com');
    const stream = await sse(sseUrl(base, [`user:${ada.userId}`]), bearer(ada.accessToken));
    await stream.next((e) => e.event === 'subscribed');
    clock.advance((TTL_SECONDS + 1) * SECOND);
    expect((await stream.next((e) => e.event === 'close')).data).toEqual({
      type: 'close',
      ...REALTIME_CLOSE.CREDENTIAL_EXPIRED,
    });
    await stream.ended;
  });

  it('counts SSE streams toward the per-user connection limit (429)', async () => {
    const { app, base } = await start(dialect, { env: { REALTIME_MAX_CONNECTIONS_PER_USER: '1' } });
    const ada = await signedInUser(app, 'ada@example.com');
    const url = sseUrl(base, [`user:${ada.userId}`]);
    const first = await sse(url, bearer(ada.accessToken));
    expect(first.status).toBe(200);
    const second = await openSse(url, bearer(ada.accessToken));
    expect(second.status).toBe(429);
    expect(second.problem?.code).toBe('REALTIME_TOO_MANY_CONNECTIONS');
  });
});
