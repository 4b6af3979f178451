import { AuditEvent, DataExport, DataExportAccepted, Page } from '@plinth/shared';
import { strFromU8, unzipSync } from 'fflate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PlinthApp } from '../../app.ts';
import {
  bearer,
  createFakeClock,
  DAY,
  expectProblem,
  findUser,
  latestOutboxMail,
  login,
  PASSWORD,
} from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { buildTestApp } from '../../test/harness.ts';
import { createApiKey, createOrg, invite, signedInUser, type TestUser } from '../../test/org-helpers.ts';
import { mailTemplates } from '../mail/index.ts';

// Data exports (GDPR art. 15 and 20): a request answered at once, an archive built by a background job from every
// module's declared personal data, a signed link that downloads it once until it expires, and every step on the
// person's audit chain.

const READY_SUBJECT = mailTemplates.dataExportReady({
  name: 'x',
  url: 'https://x.test/',
  expiresAt: new Date(0),
}).subject;

describe.each(testDialects)('data export (%s)', (dialect) => {
  let app: PlinthApp;
  const clock = createFakeClock('2030-05-01T10:00:00.000Z');

  beforeAll(async () => {
    // Webhooks may go to this machine: nothing answers there, which leaves the deliveries in the log.
    app = await buildTestApp(dialect, { clock, env: { WEBHOOK_ALLOWED_HOSTS: '127.0.0.1' } });
  });
  afterAll(async () => {
    await app?.close();
  });

  async function requestExport(user: Pick<TestUser, 'accessToken'>): Promise<string> {
    const res = await app.inject({
      method: 'POST',
      url: '/api/v1/me/export',
      headers: bearer(user.accessToken),
    });
    expect(res.statusCode).toBe(202);
    return DataExportAccepted.parse(res.json()).id;
  }

  async function exportStatus(user: Pick<TestUser, 'accessToken'>, id: string): Promise<DataExport> {
    const res = await app.inject({
      method: 'GET',
      url: `/api/v1/me/exports/${id}`,
      headers: bearer(user.accessToken),
    });
    expect(res.statusCode).toBe(200);
    return DataExport.parse(res.json());
  }

  /** The download link's path and query, as a browser following it would request. */
  const pathOf = (url: string) => {
    const parsed = new URL(url);
    return `${parsed.pathname}${parsed.search}`;
  };

  it('gathers every declared section about the person into a zip, and nothing secret', async () => {
    const user = await signedInUser(app, 'export-me@example.test', 'Ada Export');
    await login(app, user.email, PASSWORD);
    const { id: orgId } = await createOrg(app, user.accessToken, 'Export Org');
    await invite(app, user.accessToken, orgId, 'invitee@example.test', 'member');
    const key = await createApiKey(app, user.accessToken, orgId, {
      name: 'export key',
      scopes: ['members:read'],
    });
    const consent = await app.inject({
      method: 'PUT',
      url: '/api/v1/me/consents',
      headers: bearer(user.accessToken),
      payload: { purpose: 'marketing_email', granted: true, policyVersion: '2030-01' },
    });
    expect(consent.statusCode).toBe(201);
    // She joins a friend's organization, whose events go to a webhook: the events and their deliveries carry her
    // address, and the export lists them, naming the receiver's host but not its URL (often a secret itself).
    const friend = await signedInUser(app, 'export-friend@example.test', 'Friend of Ada');
    const { id: friendOrg } = await createOrg(app, friend.accessToken, 'Friend Org');
    const hook = await app.inject({
      method: 'POST',
      url: `/api/v1/orgs/${friendOrg}/webhooks`,
      headers: bearer(friend.accessToken),
      payload: { url: 'http://127.0.0.1:9/hooks/s3cr3t-path', events: ['*'] },
    });
    expect(hook.statusCode).toBe(201);
    const invitation = await invite(app, friend.accessToken, friendOrg, user.email, 'member');
    const accepted = await app.inject({
      method: 'POST',
      url: '/api/v1/invitations/accept',
      headers: bearer(user.accessToken),
      payload: { token: invitation },
    });
    expect(accepted.statusCode).toBe(200);
    await app.jobs.drain();

    const exportId = await requestExport(user);
    // Asking again while it is being built answers with the same export.
    expect(await requestExport(user)).toBe(exportId);
    expect(await exportStatus(user, exportId)).toMatchObject({ status: 'pending', downloadUrl: null });

    await app.jobs.drain();
    const ready = await exportStatus(user, exportId);
    expect(ready).toMatchObject({
      status: 'ready',
      expiresAt: new Date(clock.now().getTime() + 7 * DAY).toISOString(),
    });
    expect(ready.downloadUrl).toMatch(
      new RegExp(`/api/v1/me/exports/${exportId}/download\\?expires=\\d+&signature=[0-9a-f]{64}$`),
    );
    const mail = await latestOutboxMail(app, user.email, { subject: READY_SUBJECT });
    expect(mail.text_body).toContain(ready.downloadUrl);

    // The link alone downloads it: no Authorization header.
    const download = await app.inject({ method: 'GET', url: pathOf(ready.downloadUrl ?? '') });
    expect(download.statusCode).toBe(200);
    expect(download.headers['content-type']).toBe('application/zip');
    expect(download.headers['content-disposition']).toBe(
      `attachment; filename="plinth-export-${exportId}.zip"`,
    );
    expect(download.headers['cache-control']).toBe('no-store');
    const files = unzipSync(new Uint8Array(download.rawPayload));
    const read = (name: string): unknown => JSON.parse(strFromU8(files[name] ?? new Uint8Array()));

    const manifest = read('manifest.json') as { format: string; userId: string; sections: string[] };
    expect(manifest).toMatchObject({ format: 'plinth-data-export/1', userId: user.userId });
    // Every section a module declares is in the archive, as a file of its own.
    expect(manifest.sections).toEqual(app.personalData.list().map((source) => source.name));
    expect(Object.keys(files).sort()).toEqual(
      [...manifest.sections.map((name) => `${name}.json`), 'manifest.json'].sort(),
    );
    expect(read('profile.json')).toMatchObject({ id: user.userId, email: user.email, name: 'Ada Export' });
    expect(read('sessions.json')).toHaveLength(2);
    expect(read('memberships.json')).toEqual([
      expect.objectContaining({ orgId, orgName: 'Export Org', role: 'owner' }),
      expect.objectContaining({ orgId: friendOrg, orgName: 'Friend Org', role: 'member' }),
    ]);
    const friendEvents = ['invitation.created', 'member.added'];
    const domainEvents = read('domainEvents.json') as unknown[];
    expect(domainEvents).toHaveLength(friendEvents.length);
    expect(domainEvents).toEqual(
      expect.arrayContaining(friendEvents.map((type) => expect.objectContaining({ orgId: friendOrg, type }))),
    );
    const deliveries = read('webhookDeliveries.json') as unknown[];
    expect(deliveries).toHaveLength(friendEvents.length);
    expect(deliveries).toEqual(
      expect.arrayContaining(
        friendEvents.map((eventType) =>
          expect.objectContaining({ orgId: friendOrg, eventType, receiver: '127.0.0.1:9' }),
        ),
      ),
    );
    expect(JSON.stringify(read('webhookDeliveries.json'))).not.toContain('s3cr3t');
    expect(read('invitationsSent.json')).toEqual([expect.objectContaining({ orgId, role: 'member' })]);
    expect(read('apiKeysCreated.json')).toEqual([
      expect.objectContaining({ id: key.id, name: 'export key' }),
    ]);
    expect(read('consents.json')).toEqual([
      expect.objectContaining({ purpose: 'marketing_email', granted: true, policyVersion: '2030-01' }),
    ]);
    const events = Page(AuditEvent).shape.data.parse(read('auditEvents.json'));
    const actions = events.map((e) => e.action);
    for (const action of [
      'user.created',
      'user.signed_in',
      'org.created',
      'invitation.created',
      'apikey.created',
      'consent.granted',
      'user.export_requested',
    ]) {
      expect(actions).toContain(action);
    }

    // No secret and no one else's data: not the password hash, the key's secret, or the invitee's address.
    const everything = Object.values(files)
      .map((bytes) => strFromU8(bytes))
      .join('\n');
    const stored = await findUser(app, user.email);
    for (const secret of [stored?.password_hash ?? '', key.key, PASSWORD, 'invitee@example.test']) {
      expect(everything).not.toContain(secret);
    }
  });

  it('downloads once, refuses an altered or expired link, and records the download', async () => {
    const user = await signedInUser(app, 'once@example.test');
    const exportId = await requestExport(user);
    await app.jobs.drain();
    const url = pathOf((await exportStatus(user, exportId)).downloadUrl ?? '');

    const altered = url.replace(
      /signature=([0-9a-f])/,
      (_m, c: string) => `signature=${c === '0' ? '1' : '0'}`,
    );
    expectProblem(await app.inject({ method: 'GET', url: altered }), 403, 'INVALID_DOWNLOAD_LINK');
    const otherExpiry = url.replace(/expires=(\d+)/, (_m, n: string) => `expires=${Number(n) + 1}`);
    expectProblem(await app.inject({ method: 'GET', url: otherExpiry }), 403, 'INVALID_DOWNLOAD_LINK');

    expect((await app.inject({ method: 'GET', url })).statusCode).toBe(200);
    expectProblem(await app.inject({ method: 'GET', url }), 410, 'EXPORT_GONE');
    expect(await exportStatus(user, exportId)).toMatchObject({ status: 'downloaded', downloadUrl: null });

    const history = await app.inject({
      method: 'GET',
      url: '/api/v1/me/audit?limit=100',
      headers: bearer(user.accessToken),
    });
    const actions = Page(AuditEvent)
      .parse(history.json())
      .data.map((e) => e.action);
    expect(actions.slice(0, 2)).toEqual(['user.export_downloaded', 'user.export_requested']);

    const late = await signedInUser(app, 'late@example.test');
    const lateId = await requestExport(late);
    await app.jobs.drain();
    const lateUrl = pathOf((await exportStatus(late, lateId)).downloadUrl ?? '');
    clock.advance(7 * DAY);
    expectProblem(await app.inject({ method: 'GET', url: lateUrl }), 410, 'EXPORT_GONE');
  });

  it("keeps one person's exports from everyone else, and from API keys", async () => {
    const owner = await signedInUser(app, 'private@example.test');
    const other = await signedInUser(app, 'nosy@example.test');
    const exportId = await requestExport(owner);
    expectProblem(
      await app.inject({
        method: 'GET',
        url: `/api/v1/me/exports/${exportId}`,
        headers: bearer(other.accessToken),
      }),
      404,
      'EXPORT_NOT_FOUND',
    );
    expect((await app.inject({ method: 'POST', url: '/api/v1/me/export' })).statusCode).toBe(401);
    const { id: orgId } = await createOrg(app, owner.accessToken, 'Keys Org');
    const key = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
    const byKey = await app.inject({
      method: 'POST',
      url: '/api/v1/me/export',
      headers: { authorization: `Bearer ${key.key}` },
    });
    expect(byKey.statusCode).toBe(403);
    const malformed = await app.inject({
      method: 'GET',
      url: `/api/v1/me/exports/${exportId}/download?expires=soon&signature=x`,
    });
    expect(malformed.statusCode).toBe(400);
  });
});
