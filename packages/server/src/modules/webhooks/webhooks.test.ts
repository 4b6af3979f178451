import {
  Page,
  WebhookDelivery,
  WebhookDeliveryDetail,
  WebhookEndpoint,
  WebhookEndpointWithSecret,
  WebhookPayload,
} from '@plinth/shared';
import { Webhook } from 'standardwebhooks';
import { afterEach, describe, expect, it } from 'vitest';
import type { PlinthApp } from '../../app.ts';
import {
  bearer,
  cleanupAfterEach,
  createFakeClock,
  DAY,
  expectProblem,
  type FakeClock,
  HOUR,
  latestOutboxMail,
  login,
  MINUTE,
  PASSWORD,
  SECOND,
  startTestApp,
} from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { addMember, createOrg, signedInUser, type TestUser } from '../../test/org-helpers.ts';
import { sequenceChain } from '../audit/sequencer.ts';
import { mailTemplates } from '../mail/index.ts';
import { RETRY_SCHEDULE_SECONDS } from './delivery.service.ts';
import { startReceiver, type TestReceiver } from './test-receiver.ts';

/** The subject of the mail that tells admins an endpoint was turned off, taken from the template itself. */
const DISABLED_SUBJECT = mailTemplates.webhookDisabled({
  name: '',
  orgName: '',
  endpoint: '',
  endpointId: '',
  reason: '',
}).subject;

// Webhooks end to end, on both dialects, against a real HTTP receiver on 127.0.0.1 (allowed with
// WEBHOOK_ALLOWED_HOSTS, as an operator with an internal receiver would): endpoint management and its audit
// events, Standard Webhooks signatures checked by the reference library (also both signatures during a secret
// rotation), retries on the schedule on a fake clock, Retry-After, 410 and sustained failure turning an endpoint
// off (and mailing its admins), no redirect followed, ping and redelivery, permissions, tenant isolation and
// hostile input.

const cleanups = cleanupAfterEach();
const receivers: TestReceiver[] = [];
afterEach(async () => {
  for (const receiver of receivers.splice(0)) await receiver.close();
});

const baseEnv = { REQUIRE_EMAIL_VERIFICATION: 'false', WEBHOOK_ALLOWED_HOSTS: '127.0.0.1' };
const webhooksUrl = (orgId: string) => `/api/v1/orgs/${orgId}/webhooks`;
const webhookUrl = (orgId: string, id: string) => `/api/v1/orgs/${orgId}/webhooks/${id}`;
/** Comfortably past the longest jittered delay of retry `n` (1-based): the schedule plus 10 %. */
const pastRetry = (n: number) => (RETRY_SCHEDULE_SECONDS[n - 1] ?? 0) * 1.1 * SECOND + SECOND;

interface Setup {
  app: PlinthApp;
  clock: FakeClock;
  owner: TestUser;
  orgId: string;
  receiver: TestReceiver;
  /** When the owner's access token was issued, on the fake clock. */
  tokenAt: number;
}

/** The owner's access token, signing in again once the fake clock has moved past its lifetime. */
async function ownerToken(s: Setup): Promise<string> {
  if (s.clock.now().getTime() - s.tokenAt > 10 * MINUTE) {
    s.owner = { ...s.owner, accessToken: (await login(s.app, s.owner.email, PASSWORD)).accessToken };
    s.tokenAt = s.clock.now().getTime();
  }
  return s.owner.accessToken;
}

async function setup(
  dialect: (typeof testDialects)[number],
  env: Record<string, string> = {},
  answer?: Parameters<typeof startReceiver>[0],
): Promise<Setup> {
  // Near the real time: the reference library refuses signatures whose timestamp is more than 5 minutes off.
  const clock = createFakeClock(new Date());
  const app = await startTestApp(dialect, cleanups, { clock, env: { ...baseEnv, ...env } });
  const owner = await signedInUser(app, 'owner@example.test', 'Olive Owner');
  const { id: orgId } = await createOrg(app, owner.accessToken);
  const receiver = await startReceiver(answer);
  receivers.push(receiver);
  return { app, clock, owner, orgId, receiver, tokenAt: clock.now().getTime() };
}

async function createWebhook(
  s: Setup,
  body: Record<string, unknown> = {},
): Promise<WebhookEndpointWithSecret> {
  const res = await s.app.inject({
    method: 'POST',
    url: webhooksUrl(s.orgId),
    headers: bearer(s.owner.accessToken),
    payload: { url: `${s.receiver.origin}/hooks`, events: ['*'], ...body },
  });
  expect(res.statusCode, res.body).toBe(201);
  return WebhookEndpointWithSecret.parse(res.json());
}

/** A change that publishes `org.updated`: renaming the organization. */
async function renameOrg(s: Setup, name: string): Promise<void> {
  const res = await s.app.inject({
    method: 'PATCH',
    url: `/api/v1/orgs/${s.orgId}`,
    headers: bearer(await ownerToken(s)),
    payload: { name },
  });
  expect(res.statusCode, res.body).toBe(200);
}

async function deliveries(s: Setup, webhookId: string): Promise<WebhookDelivery[]> {
  const res = await s.app.inject({
    method: 'GET',
    url: `${webhookUrl(s.orgId, webhookId)}/deliveries`,
    headers: bearer(await ownerToken(s)),
  });
  expect(res.statusCode, res.body).toBe(200);
  return Page(WebhookDelivery).parse(res.json()).data;
}

async function deliveryDetail(s: Setup, webhookId: string, deliveryId: string) {
  const res = await s.app.inject({
    method: 'GET',
    url: `${webhookUrl(s.orgId, webhookId)}/deliveries/${deliveryId}`,
    headers: bearer(await ownerToken(s)),
  });
  expect(res.statusCode, res.body).toBe(200);
  return WebhookDeliveryDetail.parse(res.json());
}

async function endpoint(s: Setup, id: string): Promise<WebhookEndpoint> {
  const res = await s.app.inject({
    method: 'GET',
    url: webhookUrl(s.orgId, id),
    headers: bearer(await ownerToken(s)),
  });
  expect(res.statusCode, res.body).toBe(200);
  return WebhookEndpoint.parse(res.json());
}

/** The organization's audit events in chain order, sequenced first as every reader does. */
async function auditActions(s: Setup): Promise<{ action: string; changes: string | null }[]> {
  return s.app.database.withTenant(s.orgId, async (db) => {
    await sequenceChain(db, s.orgId);
    return db.selectFrom('audit_events').select(['action', 'changes']).orderBy('seq').execute();
  });
}

/** Verifies a received request with the Standard Webhooks reference library; returns the parsed payload. */
function verified(
  secret: string,
  request: { headers: Record<string, unknown>; body: string },
): WebhookPayload {
  const headers = {
    'webhook-id': String(request.headers['webhook-id']),
    'webhook-timestamp': String(request.headers['webhook-timestamp']),
    'webhook-signature': String(request.headers['webhook-signature']),
  };
  return WebhookPayload.parse(new Webhook(secret).verify(request.body, headers));
}

describe.each(testDialects)('webhooks (%s)', (dialect) => {
  it('shows the signing secret once, stores it encrypted, and never puts it in the audit log', async () => {
    const s = await setup(dialect);
    const created = await createWebhook(s, {
      events: ['member.added', 'org.updated'],
      description: 'CRM sync',
    });
    expect(created.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(Buffer.from(created.secret.slice(6), 'base64')).toHaveLength(32);
    expect(created).toMatchObject({
      url: `${s.receiver.origin}/hooks`,
      events: ['member.added', 'org.updated'],
      description: 'CRM sync',
      active: true,
      createdBy: s.owner.userId,
    });
    const shown = await endpoint(s, created.id);
    expect(JSON.stringify(shown)).not.toContain(created.secret.slice(6));
    const list = await s.app.inject({
      method: 'GET',
      url: webhooksUrl(s.orgId),
      headers: bearer(s.owner.accessToken),
    });
    expect(
      Page(WebhookEndpoint)
        .parse(list.json())
        .data.map((w) => w.id),
    ).toEqual([created.id]);
    expect(list.body).not.toContain(created.secret.slice(6));

    const row = await s.app.database.withTenant(s.orgId, (db) =>
      db.selectFrom('webhook_endpoints').selectAll().executeTakeFirstOrThrow(),
    );
    expect(row.secret.startsWith('v1.')).toBe(true);
    expect(row.secret).not.toContain(created.secret.slice(6));
    const audit = await auditActions(s);
    expect(audit.map((a) => a.action)).toContain('webhook.created');
    expect(JSON.stringify(audit)).not.toContain(created.secret.slice(6));
  });

  it('delivers a domain event signed per Standard Webhooks, verified by the reference library', async () => {
    const s = await setup(dialect, {}, () => ({ status: 200, body: 'thanks' }));
    const hook = await createWebhook(s, { events: ['org.updated'] });
    await renameOrg(s, 'Acme Renamed');
    expect(s.receiver.received).toHaveLength(0);
    await s.app.jobs.drain();

    expect(s.receiver.received).toHaveLength(1);
    const request = s.receiver.received[0];
    if (!request) throw new Error('no request');
    expect(request.method).toBe('POST');
    expect(request.path).toBe('/hooks');
    expect(request.headers['content-type']).toBe('application/json');
    expect(request.headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    expect(Number(request.headers['webhook-timestamp'])).toBe(Math.floor(s.clock.now().getTime() / 1000));
    const payload = verified(hook.secret, request);
    expect(payload).toMatchObject({
      type: 'org.updated',
      orgId: s.orgId,
      data: { id: s.orgId, name: 'Acme Renamed' },
    });
    expect(request.headers['webhook-id']).toBe(payload.id);
    // A wrong secret does not verify: the check is real.
    const other = `whsec_${Buffer.alloc(32, 9).toString('base64')}`;
    expect(() => verified(other, request)).toThrow();

    const [delivery] = await deliveries(s, hook.id);
    expect(delivery).toMatchObject({
      status: 'succeeded',
      attempt: 1,
      statusCode: 200,
      responseBody: 'thanks',
      error: null,
      eventType: 'org.updated',
      eventId: payload.id,
      messageId: payload.id,
    });
    expect(delivery?.latencyMs).toBeGreaterThanOrEqual(0);
  });

  it('fans an event out to each subscribed active endpoint, once, and to nothing else', async () => {
    const s = await setup(dialect);
    const all = await createWebhook(s, { events: ['*'] });
    const members = await createWebhook(s, { events: ['member.added'] });
    const off = await createWebhook(s, { events: ['*'], active: false });
    await renameOrg(s, 'Acme Fan-out');
    await s.app.jobs.drain();
    await s.app.jobs.drain();
    expect(s.receiver.received).toHaveLength(1);
    expect(await deliveries(s, all.id)).toHaveLength(1);
    expect(await deliveries(s, members.id)).toHaveLength(0);
    expect(await deliveries(s, off.id)).toHaveLength(0);
  });

  it('signs with both secrets during a rotation’s overlap, each verifying, then with the new one only', async () => {
    const s = await setup(dialect);
    const hook = await createWebhook(s);
    const res = await s.app.inject({
      method: 'POST',
      url: `${webhookUrl(s.orgId, hook.id)}/rotate-secret`,
      headers: bearer(s.owner.accessToken),
      payload: { gracePeriodSeconds: 60 },
    });
    expect(res.statusCode, res.body).toBe(200);
    const rotated = WebhookEndpointWithSecret.parse(res.json());
    expect(rotated.secret).not.toBe(hook.secret);
    expect(rotated.previousSecretExpiresAt).toBe(new Date(s.clock.now().getTime() + 60_000).toISOString());

    await renameOrg(s, 'Acme Rotated');
    await s.app.jobs.drain();
    const during = s.receiver.received[0];
    if (!during) throw new Error('no request');
    const signatures = String(during.headers['webhook-signature']).split(' ');
    expect(signatures).toHaveLength(2);
    expect(verified(rotated.secret, during).type).toBe('org.updated');
    expect(verified(hook.secret, during).type).toBe('org.updated');
    // Each signature on its own is the one of its secret.
    expect(() =>
      verified(rotated.secret, {
        ...during,
        headers: { ...during.headers, 'webhook-signature': signatures[1] },
      }),
    ).toThrow();
    expect(
      verified(hook.secret, {
        ...during,
        headers: { ...during.headers, 'webhook-signature': signatures[1] },
      }),
    ).toBeTruthy();

    s.clock.advance(61 * SECOND);
    await renameOrg(s, 'Acme After');
    await s.app.jobs.drain();
    const after = s.receiver.received[1];
    if (!after) throw new Error('no request');
    expect(String(after.headers['webhook-signature']).split(' ')).toHaveLength(1);
    expect(() => verified(hook.secret, after)).toThrow();
    // The fake clock moved past the library's tolerance of real time only by a minute: still verifiable.
    expect(verified(rotated.secret, after).data).toMatchObject({ name: 'Acme After' });
    const audit = await auditActions(s);
    expect(audit.map((a) => a.action)).toContain('webhook.secret_rotated');
    expect(JSON.stringify(audit)).not.toContain(rotated.secret.slice(6));
  });

  it('retries a failing receiver on the schedule until it recovers, logging every attempt', async () => {
    const s = await setup(dialect, {}, (_request, n) =>
      n <= 2 ? { status: 503, body: `down ${n}` } : { status: 200, body: 'ok' },
    );
    const hook = await createWebhook(s);
    await renameOrg(s, 'Acme Retry');
    await s.app.jobs.drain();
    expect(s.receiver.received).toHaveLength(1);
    let [delivery] = await deliveries(s, hook.id);
    expect(delivery).toMatchObject({
      status: 'pending',
      attempt: 1,
      statusCode: 503,
      responseBody: 'down 1',
    });
    const firstDelay = new Date(delivery?.nextAttemptAt ?? 0).getTime() - s.clock.now().getTime();
    expect(firstDelay).toBeGreaterThanOrEqual(4.5 * SECOND);
    expect(firstDelay).toBeLessThanOrEqual(5.5 * SECOND);

    // Not before its time.
    s.clock.advance(4 * SECOND);
    await s.app.jobs.drain();
    expect(s.receiver.received).toHaveLength(1);
    s.clock.advance(pastRetry(1));
    await s.app.jobs.drain();
    expect(s.receiver.received).toHaveLength(2);
    [delivery] = await deliveries(s, hook.id);
    const secondDelay = new Date(delivery?.nextAttemptAt ?? 0).getTime() - s.clock.now().getTime();
    expect(secondDelay).toBeGreaterThanOrEqual(270 * SECOND);
    expect(secondDelay).toBeLessThanOrEqual(330 * SECOND);
    s.clock.advance(pastRetry(2));
    await s.app.jobs.drain();
    expect(s.receiver.received).toHaveLength(3);

    [delivery] = await deliveries(s, hook.id);
    expect(delivery).toMatchObject({ status: 'succeeded', attempt: 3, statusCode: 200, nextAttemptAt: null });
    const detail = await deliveryDetail(s, hook.id, delivery?.id ?? '');
    expect(detail.attempts.map((a) => [a.attempt, a.statusCode, a.responseBody])).toEqual([
      [1, 503, 'down 1'],
      [2, 503, 'down 2'],
      [3, 200, 'ok'],
    ]);
    // Every attempt carries the same webhook-id.
    expect(new Set(s.receiver.received.map((r) => r.headers['webhook-id'])).size).toBe(1);
    expect((await endpoint(s, hook.id)).active).toBe(true);
  });

  it('makes at most ten attempts, then marks the delivery failed', async () => {
    const s = await setup(dialect, { WEBHOOK_AUTO_DISABLE_DAYS: '0' }, () => ({ status: 500 }));
    const hook = await createWebhook(s);
    await renameOrg(s, 'Acme Exhausted');
    await s.app.jobs.drain();
    for (let n = 1; n <= RETRY_SCHEDULE_SECONDS.length; n++) {
      s.clock.advance(pastRetry(n));
      await s.app.jobs.drain();
    }
    s.clock.advance(2 * DAY);
    await s.app.jobs.drain();
    expect(s.receiver.received).toHaveLength(10);
    const [delivery] = await deliveries(s, hook.id);
    expect(delivery).toMatchObject({ status: 'failed', attempt: 10, statusCode: 500, nextAttemptAt: null });
    expect(delivery?.finishedAt).not.toBeNull();
    expect((await endpoint(s, hook.id)).active).toBe(true);
  });

  it('honours Retry-After: the next attempt waits as long as the receiver asked', async () => {
    const s = await setup(dialect, {}, (_request, n) =>
      n === 1 ? { status: 429, headers: { 'retry-after': '120' } } : { status: 204 },
    );
    const hook = await createWebhook(s);
    await renameOrg(s, 'Acme Later');
    await s.app.jobs.drain();
    const [delivery] = await deliveries(s, hook.id);
    expect(new Date(delivery?.nextAttemptAt ?? 0).getTime() - s.clock.now().getTime()).toBe(120 * SECOND);
    s.clock.advance(pastRetry(1));
    await s.app.jobs.drain();
    expect(s.receiver.received).toHaveLength(1);
    s.clock.advance(120 * SECOND);
    await s.app.jobs.drain();
    expect(s.receiver.received).toHaveLength(2);
    expect((await deliveries(s, hook.id))[0]?.status).toBe('succeeded');
  });

  it('turns an endpoint off when it answers 410 Gone, records why and mails the admins', async () => {
    const s = await setup(dialect, {}, () => ({ status: 410 }));
    const admin = await addMember(s.app, s.owner.accessToken, s.orgId, 'admin@example.test', 'admin');
    const member = await addMember(s.app, s.owner.accessToken, s.orgId, 'member@example.test', 'member');
    // Their joining published events of its own; relay them before the endpoint exists.
    await s.app.jobs.drain();
    const hook = await createWebhook(s);
    await renameOrg(s, 'Acme Gone');
    await s.app.jobs.drain();
    expect(s.receiver.received).toHaveLength(1);
    expect(await endpoint(s, hook.id)).toMatchObject({ active: false, disabledReason: 'gone' });
    expect((await deliveries(s, hook.id))[0]).toMatchObject({
      status: 'failed',
      statusCode: 410,
      nextAttemptAt: null,
    });
    const audit = await auditActions(s);
    const disabled = audit.find((a) => a.action === 'webhook.disabled');
    expect(JSON.parse(disabled?.changes ?? '{}')).toMatchObject({ disabledReason: { after: 'gone' } });

    for (const to of [s.owner.email, admin.email]) {
      const mail = await latestOutboxMail(s.app, to, { subject: DISABLED_SUBJECT });
      expect(mail.text_body).toContain('410 Gone');
      expect(mail.text_body).toContain(hook.id);
      // Only the scheme and host: a URL's path may carry a receiver's token.
      expect(mail.text_body).not.toContain('/hooks');
    }
    const memberMails = await s.app.database.db
      .selectFrom('mail_outbox')
      .select('id')
      .where('recipient', '=', member.email)
      .where('subject', '=', DISABLED_SUBJECT)
      .execute();
    expect(memberMails).toHaveLength(0);

    // Off means off: nothing more is sent, a ping is refused.
    await renameOrg(s, 'Acme Still Gone');
    await s.app.jobs.drain();
    expect(s.receiver.received).toHaveLength(1);
    const ping = await s.app.inject({
      method: 'POST',
      url: `${webhookUrl(s.orgId, hook.id)}/ping`,
      headers: bearer(s.owner.accessToken),
    });
    expectProblem(ping, 409, 'WEBHOOK_INACTIVE');
    // Turning it on again clears the reason.
    const on = await s.app.inject({
      method: 'PATCH',
      url: webhookUrl(s.orgId, hook.id),
      headers: bearer(s.owner.accessToken),
      payload: { active: true },
    });
    expect(on.statusCode).toBe(200);
    expect(WebhookEndpoint.parse(on.json())).toMatchObject({ active: true, disabledReason: null });
  });

  it('turns off an endpoint whose every attempt failed for WEBHOOK_AUTO_DISABLE_DAYS', async () => {
    const s = await setup(dialect, { WEBHOOK_AUTO_DISABLE_DAYS: '1' }, () => ({ status: 500 }));
    const hook = await createWebhook(s);
    await renameOrg(s, 'Acme Failing');
    await s.app.jobs.drain();
    let n = 1;
    while ((await endpoint(s, hook.id)).active && n <= RETRY_SCHEDULE_SECONDS.length) {
      s.clock.advance(pastRetry(n++));
      await s.app.jobs.drain();
    }
    const off = await endpoint(s, hook.id);
    expect(off).toMatchObject({ active: false, disabledReason: 'failing' });
    // Attempts at about 0 s, 5 s, 5 min, 35 min, 2.6 h, 7.6 h, 17.6 h and 31.6 h: the one past a day turns it off.
    expect(s.receiver.received).toHaveLength(8);
    const mail = await latestOutboxMail(s.app, s.owner.email, { subject: DISABLED_SUBJECT });
    expect(mail.text_body).toContain('every delivery attempt to it failed for 1 day.');
    expect((await auditActions(s)).filter((a) => a.action === 'webhook.disabled')).toHaveLength(1);
    // The pending attempt is not made.
    s.clock.advance(2 * DAY);
    await s.app.jobs.drain();
    expect(s.receiver.received).toHaveLength(8);
    expect((await deliveries(s, hook.id))[0]?.status).toBe('failed');
  });

  it('a success clears the failure streak, so an endpoint that recovers stays on', async () => {
    let failing = true;
    const s = await setup(dialect, { WEBHOOK_AUTO_DISABLE_DAYS: '1' }, () => ({
      status: failing ? 500 : 200,
    }));
    const hook = await createWebhook(s);
    await renameOrg(s, 'Acme Flaky');
    await s.app.jobs.drain();
    failing = false;
    s.clock.advance(pastRetry(1));
    await s.app.jobs.drain();
    failing = true;
    s.clock.advance(20 * HOUR);
    await renameOrg(s, 'Acme Flaky Again');
    await s.app.jobs.drain();
    s.clock.advance(pastRetry(1));
    await s.app.jobs.drain();
    // The streak began at this event's first attempt, not at the first event's.
    expect((await endpoint(s, hook.id)).active).toBe(true);
  });

  it('never follows a redirect: a 3xx is a failed attempt and the target is not contacted', async () => {
    const elsewhere = await startReceiver();
    receivers.push(elsewhere);
    const s = await setup(dialect, {}, () => ({
      status: 302,
      headers: { location: `${elsewhere.origin}/stolen` },
    }));
    const hook = await createWebhook(s);
    await renameOrg(s, 'Acme Redirect');
    await s.app.jobs.drain();
    expect(s.receiver.received).toHaveLength(1);
    expect(elsewhere.received).toHaveLength(0);
    expect((await deliveries(s, hook.id))[0]).toMatchObject({
      status: 'pending',
      statusCode: 302,
      error: 'Answered 302: redirects are not followed.',
    });
  });

  it('records an unreachable receiver as a failed attempt with the reason', async () => {
    const s = await setup(dialect);
    const closed = await startReceiver();
    await closed.close();
    const hook = await createWebhook(s, { url: `${closed.origin}/gone` });
    await renameOrg(s, 'Acme Unreachable');
    await s.app.jobs.drain();
    const [delivery] = await deliveries(s, hook.id);
    expect(delivery).toMatchObject({ status: 'pending', statusCode: null, attempt: 1 });
    expect(delivery?.error).toMatch(/ECONNREFUSED/);
  });

  it('cuts off a receiver that answers too slowly (WEBHOOK_TIMEOUT_MS)', async () => {
    const s = await setup(dialect, { WEBHOOK_TIMEOUT_MS: '1000' });
    const { createServer } = await import('node:http');
    const slow = createServer(() => {
      // Never answers.
    });
    await new Promise<void>((resolve) => slow.listen(0, '127.0.0.1', resolve));
    cleanups.push(async () => {
      slow.closeAllConnections();
      await new Promise((resolve) => slow.close(resolve));
    });
    const port = (slow.address() as { port: number }).port;
    const hook = await createWebhook(s, { url: `http://127.0.0.1:${port}/slow` });
    await renameOrg(s, 'Acme Slow');
    const started = Date.now();
    await s.app.jobs.drain();
    expect(Date.now() - started).toBeLessThan(5000);
    const [delivery] = await deliveries(s, hook.id);
    expect(delivery).toMatchObject({ status: 'pending', statusCode: null });
    expect(delivery?.error).toMatch(/Timed out|timeout/i);
    expect(delivery?.latencyMs).toBeGreaterThanOrEqual(900);
  });

  it('keeps only the start of a large response body, and no NUL characters', async () => {
    const s = await setup(dialect, {}, () => ({ status: 200, body: `a\u0000b${'x'.repeat(100_000)}` }));
    const hook = await createWebhook(s);
    await renameOrg(s, 'Acme Large');
    await s.app.jobs.drain();
    const [delivery] = await deliveries(s, hook.id);
    expect(delivery?.responseBody).toHaveLength(2048);
    expect(delivery?.responseBody?.startsWith('a\uFFFDbxxx')).toBe(true);
  });

  it('sends a ping on request, and redelivers a message with the same webhook-id and body', async () => {
    const s = await setup(dialect);
    const hook = await createWebhook(s, { events: ['member.added'] });
    const ping = await s.app.inject({
      method: 'POST',
      url: `${webhookUrl(s.orgId, hook.id)}/ping`,
      headers: bearer(s.owner.accessToken),
    });
    expect(ping.statusCode, ping.body).toBe(202);
    const queued = WebhookDelivery.parse(ping.json());
    expect(queued).toMatchObject({ status: 'pending', eventType: 'webhook.ping', attempt: 0, eventId: null });
    await s.app.jobs.drain();
    const first = s.receiver.received[0];
    if (!first) throw new Error('no ping');
    expect(verified(hook.secret, first)).toMatchObject({
      type: 'webhook.ping',
      data: { webhookId: hook.id },
    });

    s.clock.advance(MINUTE);
    const again = await s.app.inject({
      method: 'POST',
      url: `${webhookUrl(s.orgId, hook.id)}/deliveries/${queued.id}/redeliver`,
      headers: bearer(s.owner.accessToken),
    });
    expect(again.statusCode, again.body).toBe(202);
    const redelivery = WebhookDelivery.parse(again.json());
    expect(redelivery).toMatchObject({
      redeliveryOf: queued.id,
      messageId: queued.messageId,
      status: 'pending',
    });
    await s.app.jobs.drain();
    const second = s.receiver.received[1];
    if (!second) throw new Error('no redelivery');
    expect(second.headers['webhook-id']).toBe(first.headers['webhook-id']);
    expect(second.body).toBe(first.body);
    expect(Number(second.headers['webhook-timestamp'])).toBe(Number(first.headers['webhook-timestamp']) + 60);
    expect(verified(hook.secret, second).type).toBe('webhook.ping');
    const actions = (await auditActions(s)).map((a) => a.action);
    expect(actions).toEqual(expect.arrayContaining(['webhook.ping_sent', 'webhook.redelivery_requested']));
    const missing = await s.app.inject({
      method: 'POST',
      url: `${webhookUrl(s.orgId, hook.id)}/deliveries/0190a0a0-0000-7000-8000-000000000000/redeliver`,
      headers: bearer(s.owner.accessToken),
    });
    expectProblem(missing, 404, 'WEBHOOK_DELIVERY_NOT_FOUND');
  });

  it('pages the delivery log with a cursor and filters it by status', async () => {
    const s = await setup(dialect);
    const hook = await createWebhook(s);
    for (let i = 0; i < 5; i++) await renameOrg(s, `Acme ${i}`);
    await s.app.jobs.drain();
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const res = await s.app.inject({
        method: 'GET',
        url: `${webhookUrl(s.orgId, hook.id)}/deliveries?limit=2${cursor ? `&cursor=${cursor}` : ''}`,
        headers: bearer(s.owner.accessToken),
      });
      expect(res.statusCode).toBe(200);
      const page = Page(WebhookDelivery).parse(res.json());
      expect(page.data.length).toBeLessThanOrEqual(2);
      seen.push(...page.data.map((d) => d.id));
      cursor = page.nextCursor;
    } while (cursor);
    expect(new Set(seen).size).toBe(5);
    const failed = await s.app.inject({
      method: 'GET',
      url: `${webhookUrl(s.orgId, hook.id)}/deliveries?status=failed`,
      headers: bearer(s.owner.accessToken),
    });
    expect(Page(WebhookDelivery).parse(failed.json()).data).toEqual([]);
    const bad = await s.app.inject({
      method: 'GET',
      url: `${webhookUrl(s.orgId, hook.id)}/deliveries?status=exploded`,
      headers: bearer(s.owner.accessToken),
    });
    expectProblem(bad, 400, 'VALIDATION_FAILED');
  });

  it('changes and deletes an endpoint with audit events; a deleted endpoint gets no pending attempt', async () => {
    const s = await setup(dialect, {}, () => ({ status: 500 }));
    const hook = await createWebhook(s, { events: ['org.updated'] });
    const patched = await s.app.inject({
      method: 'PATCH',
      url: webhookUrl(s.orgId, hook.id),
      headers: bearer(s.owner.accessToken),
      payload: { events: ['member.added', 'org.updated'], description: 'changed', active: false },
    });
    expect(patched.statusCode, patched.body).toBe(200);
    expect(WebhookEndpoint.parse(patched.json())).toMatchObject({
      events: ['member.added', 'org.updated'],
      description: 'changed',
      active: false,
      disabledReason: 'manual',
    });
    const updated = (await auditActions(s)).find((a) => a.action === 'webhook.updated');
    expect(JSON.parse(updated?.changes ?? '{}')).toMatchObject({
      active: { before: true, after: false },
      description: { before: '', after: 'changed' },
    });
    await s.app.inject({
      method: 'PATCH',
      url: webhookUrl(s.orgId, hook.id),
      headers: bearer(s.owner.accessToken),
      payload: { active: true },
    });
    await renameOrg(s, 'Acme Doomed');
    await s.app.jobs.drain();
    expect(s.receiver.received).toHaveLength(1);
    const deleted = await s.app.inject({
      method: 'DELETE',
      url: webhookUrl(s.orgId, hook.id),
      headers: bearer(s.owner.accessToken),
    });
    expect(deleted.statusCode).toBe(204);
    s.clock.advance(pastRetry(1));
    await s.app.jobs.drain();
    expect(s.receiver.received).toHaveLength(1);
    expect((await auditActions(s)).map((a) => a.action)).toContain('webhook.deleted');
    const gone = await s.app.inject({
      method: 'GET',
      url: webhookUrl(s.orgId, hook.id),
      headers: bearer(s.owner.accessToken),
    });
    expectProblem(gone, 404, 'WEBHOOK_NOT_FOUND');
  });

  it('requires webhooks:manage: a member gets 403, an admin may, an API key with the scope may', async () => {
    const s = await setup(dialect);
    const member = await addMember(s.app, s.owner.accessToken, s.orgId, 'member@example.test', 'member');
    const admin = await addMember(s.app, s.owner.accessToken, s.orgId, 'admin@example.test', 'admin');
    const body = { url: `${s.receiver.origin}/hooks`, events: ['*'] };
    const denied = await s.app.inject({
      method: 'POST',
      url: webhooksUrl(s.orgId),
      headers: bearer(member.accessToken),
      payload: body,
    });
    expectProblem(denied, 403, 'PERMISSION_DENIED');
    expect(denied.json()).toMatchObject({ permission: 'webhooks:manage' });
    const listDenied = await s.app.inject({
      method: 'GET',
      url: webhooksUrl(s.orgId),
      headers: bearer(member.accessToken),
    });
    expectProblem(listDenied, 403, 'PERMISSION_DENIED');
    const byAdmin = await s.app.inject({
      method: 'POST',
      url: webhooksUrl(s.orgId),
      headers: bearer(admin.accessToken),
      payload: body,
    });
    expect(byAdmin.statusCode).toBe(201);
    const anonymous = await s.app.inject({ method: 'GET', url: webhooksUrl(s.orgId) });
    expect(anonymous.statusCode).toBe(401);
    const count = await s.app.database.withTenant(s.orgId, (db) =>
      db.selectFrom('webhook_endpoints').select('id').execute(),
    );
    expect(count).toHaveLength(1);
  });

  it('keeps organizations apart: another organization sees none of the endpoints or deliveries', async () => {
    const s = await setup(dialect);
    const hook = await createWebhook(s);
    await renameOrg(s, 'Acme Private');
    await s.app.jobs.drain();
    const [delivery] = await deliveries(s, hook.id);
    const intruder = await signedInUser(s.app, 'intruder@example.test');
    const { id: otherOrg } = await createOrg(s.app, intruder.accessToken, 'Other Org');
    const asIntruder = (method: 'GET' | 'PATCH' | 'DELETE' | 'POST', url: string, payload?: object) =>
      s.app.inject({ method, url, headers: bearer(intruder.accessToken), ...(payload ? { payload } : {}) });

    // Through the victim's organization: not a member, so the organization does not exist for them.
    expectProblem(await asIntruder('GET', webhooksUrl(s.orgId)), 404, 'ORG_NOT_FOUND');
    expectProblem(await asIntruder('GET', webhookUrl(s.orgId, hook.id)), 404, 'ORG_NOT_FOUND');
    // Through their own organization, with the victim's ids: no such endpoint.
    for (const [method, url, payload] of [
      ['GET', webhookUrl(otherOrg, hook.id)],
      ['PATCH', webhookUrl(otherOrg, hook.id), { active: false }],
      ['DELETE', webhookUrl(otherOrg, hook.id)],
      ['POST', `${webhookUrl(otherOrg, hook.id)}/rotate-secret`, {}],
      ['POST', `${webhookUrl(otherOrg, hook.id)}/ping`],
      ['GET', `${webhookUrl(otherOrg, hook.id)}/deliveries`],
      ['GET', `${webhookUrl(otherOrg, hook.id)}/deliveries/${delivery?.id}`],
      ['POST', `${webhookUrl(otherOrg, hook.id)}/deliveries/${delivery?.id}/redeliver`],
    ] as const) {
      expectProblem(await asIntruder(method, url, payload), 404, 'WEBHOOK_NOT_FOUND');
    }
    const list = await asIntruder('GET', webhooksUrl(otherOrg));
    expect(Page(WebhookEndpoint).parse(list.json()).data).toEqual([]);
    // The victim's endpoint is untouched and still on.
    expect(await endpoint(s, hook.id)).toMatchObject({ active: true, updatedAt: hook.updatedAt });
    // Their own org's events never reach the victim's endpoint.
    await asIntruder('PATCH', `/api/v1/orgs/${otherOrg}`, { name: 'Other Renamed' });
    await s.app.jobs.drain();
    expect(s.receiver.received).toHaveLength(1);
  });

  it('refuses hostile input with problem+json and stores nothing', async () => {
    const s = await setup(dialect);
    const url = `${s.receiver.origin}/hooks`;
    const cases: [Record<string, unknown>, number, string][] = [
      [{ url: 'not a url', events: ['*'] }, 400, 'WEBHOOK_URL_NOT_ALLOWED'],
      [{ url: 'ftp://127.0.0.1/x', events: ['*'] }, 400, 'WEBHOOK_URL_NOT_ALLOWED'],
      [{ url: 'javascript:alert(1)', events: ['*'] }, 400, 'WEBHOOK_URL_NOT_ALLOWED'],
      [{ url: `http://user:pass@127.0.0.1:1/x`, events: ['*'] }, 400, 'WEBHOOK_URL_NOT_ALLOWED'],
      [{ url: `http://${'a'.repeat(2100)}.example/`, events: ['*'] }, 400, 'VALIDATION_FAILED'],
      [{ url, events: ['booking.exploded'] }, 400, 'UNKNOWN_EVENT_TYPE'],
      [{ url, events: ['Not An Event'] }, 400, 'VALIDATION_FAILED'],
      [{ url, events: [] }, 400, 'VALIDATION_FAILED'],
      [{ url, events: ['*'], description: 'x'.repeat(501) }, 400, 'VALIDATION_FAILED'],
      [{ url, events: ['*'], secret: 'whsec_mine' }, 400, 'VALIDATION_FAILED'],
      [{ url, events: ['*'], active: 'yes' }, 400, 'VALIDATION_FAILED'],
      [{ url, events: ['*'], description: 'nul \u0000 here' }, 400, 'BAD_REQUEST'],
      [{ url }, 400, 'VALIDATION_FAILED'],
    ];
    for (const [payload, status, code] of cases) {
      const res = await s.app.inject({
        method: 'POST',
        url: webhooksUrl(s.orgId),
        headers: bearer(s.owner.accessToken),
        payload,
      });
      expect(res.statusCode, JSON.stringify(payload).slice(0, 80)).toBe(status);
      expectProblem(res, status, code);
    }
    const rows = await s.app.database.withTenant(s.orgId, (db) =>
      db.selectFrom('webhook_endpoints').select('id').execute(),
    );
    expect(rows).toEqual([]);
    expect((await auditActions(s)).some((a) => a.action.startsWith('webhook.'))).toBe(false);

    const hook = await createWebhook(s);
    const badPatch = await s.app.inject({
      method: 'PATCH',
      url: webhookUrl(s.orgId, hook.id),
      headers: bearer(s.owner.accessToken),
      payload: { url: 'http://10.0.0.1/x', events: ['*'] },
    });
    expectProblem(badPatch, 400, 'WEBHOOK_URL_NOT_ALLOWED');
    expect(await endpoint(s, hook.id)).toMatchObject({ url, updatedAt: hook.updatedAt });
    const badId = await s.app.inject({
      method: 'GET',
      url: webhookUrl(s.orgId, 'not-an-id'),
      headers: bearer(s.owner.accessToken),
    });
    expect(badId.statusCode).toBe(400);
  });

  it('lists the event catalogue publicly', async () => {
    const s = await setup(dialect);
    const res = await s.app.inject({ method: 'GET', url: '/api/v1/event-types' });
    expect(res.statusCode).toBe(200);
    const types = (res.json() as { data: { type: string }[] }).data.map((t) => t.type);
    for (const type of [
      'member.added',
      'member.removed',
      'member.role_changed',
      'invitation.created',
      'apikey.created',
      'apikey.rotated',
      'apikey.revoked',
      'org.updated',
    ]) {
      expect(types).toContain(type);
    }
  });
});
