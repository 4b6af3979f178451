import { Page, UsageReport } from '@plinth/shared';
import { afterEach, describe, expect, it } from 'vitest';
import type { PlinthApp } from '../../app.ts';
import {
  bearer,
  createFakeClock,
  DAY,
  expectProblem,
  type FakeClock,
  login,
  loginResponse,
  outboxMails,
  PASSWORD,
} from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { buildTestApp } from '../../test/harness.ts';
import { addMember, createApiKey, createOrg, signedInUser, type TestUser } from '../../test/org-helpers.ts';
import { escapeHtml, usageReport } from '../mail/templates.ts';

// Daily usage reports: the 01:00 UTC schedule stores each organization's figures for the previous UTC day —
// exactly what was recorded that day, nothing from the days around it — mails them to the members who may read
// them (unless they withdrew the consent), serves them to those members only, and never doubles on a rerun.

const REPORT_SUBJECT = usageReport({
  name: '',
  orgName: '',
  orgId: '',
  day: '',
  figures: [],
  categories: [],
}).subject;

describe.each(testDialects)('usage reports (%s)', (dialect) => {
  const apps: PlinthApp[] = [];
  afterEach(async () => {
    for (const app of apps.splice(0)) await app.close();
  });

  async function start(): Promise<{ app: PlinthApp; clock: FakeClock }> {
    // The evening before the reported day: what happens now must not count in it.
    const clock = createFakeClock('2030-06-30T23:30:00.000Z');
    const app = await buildTestApp(dialect, { clock });
    apps.push(app);
    return { app, clock };
  }

  const get = (app: PlinthApp, user: TestUser, url: string) =>
    app.inject({ method: 'GET', url, headers: bearer(user.accessToken) });

  const reportMails = async (app: PlinthApp, email: string) =>
    (await outboxMails(app, email)).filter((m) => m.subject === REPORT_SUBJECT);

  /** Org A with an owner, an admin and a member, and a day (2030-07-01) of known activity; org B beside it. */
  async function scenario() {
    const { app, clock } = await start();
    const owner = await signedInUser(app, 'owner@example.test', 'Olive Owner');
    const { id: orgId } = await createOrg(app, owner.accessToken, 'Acme <Reports>');
    // The worker's first look sets the schedule's first due time: 01:00 UTC on 2030-07-01.
    await app.jobs.drain();

    clock.set('2030-07-01T12:00:00.000Z');
    const ownerAgain = await login(app, owner.email, PASSWORD);
    owner.accessToken = ownerAgain.accessToken;
    const admin = await addMember(app, owner.accessToken, orgId, 'admin@example.test', 'admin');
    const member = await addMember(app, owner.accessToken, orgId, 'member@example.test', 'member');
    expect((await loginResponse(app, member.email, 'not the password at all')).statusCode).toBe(401);
    await login(app, member.email, PASSWORD);
    const renaming = await createApiKey(app, owner.accessToken, orgId, { scopes: ['org:update'] });
    const doomed = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
    const patched = await app.inject({
      method: 'PATCH',
      url: `/api/v1/orgs/${orgId}`,
      headers: { authorization: `Bearer ${renaming.key}` },
      payload: { name: 'Acme <Reports> Ltd' },
    });
    expect(patched.statusCode).toBe(200);
    const rotated = await app.inject({
      method: 'POST',
      url: `/api/v1/orgs/${orgId}/apikeys/${renaming.id}/rotate`,
      headers: bearer(owner.accessToken),
      payload: {},
    });
    expect(rotated.statusCode).toBe(200);
    const revoked = await app.inject({
      method: 'DELETE',
      url: `/api/v1/orgs/${orgId}/apikeys/${doomed.id}`,
      headers: bearer(owner.accessToken),
    });
    expect(revoked.statusCode).toBe(204);

    // Another organization, busy the same day: none of it belongs in A's report.
    const outsider = await signedInUser(app, 'outsider@example.test');
    const { id: otherOrgId } = await createOrg(app, outsider.accessToken, 'Other Org');
    await createApiKey(app, outsider.accessToken, otherOrgId, { scopes: ['members:read'] });

    // Just after midnight: the next day's activity.
    clock.set('2030-07-02T00:30:00.000Z');
    owner.accessToken = (await login(app, owner.email, PASSWORD)).accessToken;
    await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'], name: 'next day' });
    await login(app, admin.email, PASSWORD);

    clock.set('2030-07-02T01:00:30.000Z');
    await app.jobs.drain();
    // Fresh access tokens for the assertions (also sign-ins of 2030-07-02).
    for (const user of [owner, admin, member, outsider]) {
      user.accessToken = (await login(app, user.email, PASSWORD)).accessToken;
    }
    return { app, clock, owner, admin, member, outsider, orgId, otherOrgId };
  }

  it("stores each organization's exact figures for the previous UTC day and mails them to its admins", async () => {
    const { app, owner, admin, member, outsider, orgId, otherOrgId } = await scenario();

    const res = await get(app, owner, `/api/v1/orgs/${orgId}/reports/usage/2030-07-01`);
    expect(res.statusCode).toBe(200);
    const report = UsageReport.parse(res.json());
    expect(report).toMatchObject({ orgId, day: '2030-07-01', computedAt: '2030-07-02T01:00:30.000Z' });
    expect(report.activity).toEqual({
      // 2 invitations created + 2 accepted, 2 members added, 2 keys created, 1 rotated, 1 revoked, 1 org update.
      auditEvents: 11,
      failedEvents: 0,
      // The owner (invitations, keys), the admin and the member (each accepted an invitation).
      activeMembers: 3,
      // The key that renamed the organization.
      activeApiKeys: 1,
      byCategory: { apikey: 4, invitation: 4, member: 2, org: 1 },
    });
    expect(report.members).toEqual({ added: 2, removed: 0, roleChanged: 0, total: 3 });
    expect(report.invitations).toEqual({ created: 2, accepted: 2, revoked: 0 });
    // The key created after midnight counts as active now, but not as created that day.
    expect(report.apiKeys).toEqual({ created: 2, rotated: 1, revoked: 1, active: 2 });
    // Owner once, admin once, member twice (the admin's sign-in after midnight is the next day's); one failure.
    expect(report.signIns).toEqual({ total: 4, members: 3, failed: 1 });
    // org.created the evening before, and the 11 of the day.
    expect(report.auditLog).toEqual({ eventsTotal: 12 });

    const other = UsageReport.parse(
      (await get(app, outsider, `/api/v1/orgs/${otherOrgId}/reports/usage/2030-07-01`)).json(),
    );
    expect(other.activity).toMatchObject({ auditEvents: 2, activeMembers: 1, activeApiKeys: 0 });
    expect(other.apiKeys).toEqual({ created: 1, rotated: 0, revoked: 0, active: 1 });
    expect(other.signIns).toEqual({ total: 1, members: 1, failed: 0 });

    // The owner and the admin hold reports:read and got the mail; the member did not.
    for (const recipient of [owner, admin]) {
      const mails = await reportMails(app, recipient.email);
      expect(mails).toHaveLength(1);
      expect(mails[0]?.text_body).toContain(
        'Here is what happened in Acme <Reports> Ltd on 2030-07-01 (UTC):',
      );
      expect(mails[0]?.text_body).toContain('Sign-ins by members: 4');
      expect(mails[0]?.html_body).toContain(escapeHtml('Acme <Reports> Ltd'));
      expect(mails[0]?.html_body).not.toContain('Acme <Reports>');
    }
    expect(await reportMails(app, 'member@example.test')).toEqual([]);
    expect(await reportMails(app, outsider.email)).toHaveLength(1);
    void member;
  });

  it('never doubles a report or its mail when the day is run again', async () => {
    const { app, owner, orgId } = await scenario();
    const reports = () =>
      app.database.withTenant(orgId, (db) => db.selectFrom('org_usage_reports').selectAll().execute());
    const first = await reports();
    expect(first).toHaveLength(1);

    const reportJobs = async () =>
      (await app.database.db.selectFrom('jobs').select('name').where('name', 'like', 'reports.%').execute())
        .length;
    const jobsBefore = await reportJobs();
    // reports.daily, one reports.usage per organization, one reports.mail per recipient (owner, admin, outsider).
    expect(jobsBefore).toBe(1 + 2 + 3);
    // The worker looking again, and the job enqueued again by hand under another key, change nothing.
    await app.jobs.drain();
    expect(await reportJobs()).toBe(jobsBefore);
    await app.jobs.enqueue('reports.usage', { orgId, day: '2030-07-01' }, { idempotencyKey: 'by hand' });
    await app.jobs.drain();
    expect(await reportJobs()).toBe(jobsBefore + 1);
    expect(await reports()).toEqual(first);
    expect(await reportMails(app, owner.email)).toHaveLength(1);
  });

  it('lists reports by day with cursor pagination, and mails only those who did not opt out', async () => {
    const { app, clock, owner, admin, orgId } = await scenario();
    const optOut = await app.inject({
      method: 'PUT',
      url: '/api/v1/me/consents',
      headers: bearer(admin.accessToken),
      payload: { purpose: 'usage_report_email', granted: false, policyVersion: '2030-07' },
    });
    expect(optOut.statusCode).toBe(201);
    clock.set('2030-07-03T01:00:10.000Z');
    await app.jobs.drain();
    admin.accessToken = (await login(app, admin.email, PASSWORD)).accessToken;
    expect(await reportMails(app, owner.email)).toHaveLength(2);
    expect(await reportMails(app, admin.email)).toHaveLength(1);

    const url = `/api/v1/orgs/${orgId}/reports/usage`;
    const firstPage = Page(UsageReport).parse((await get(app, admin, `${url}?limit=1`)).json());
    expect(firstPage.data.map((r) => r.day)).toEqual(['2030-07-02']);
    expect(firstPage.data[0]?.apiKeys.created).toBe(1);
    // The owner and the admin after midnight, then the owner, admin and member after the report ran.
    expect(firstPage.data[0]?.signIns).toEqual({ total: 5, members: 3, failed: 0 });
    expect(firstPage.nextCursor).not.toBeNull();
    const secondPage = Page(UsageReport).parse(
      (await get(app, admin, `${url}?limit=1&cursor=${firstPage.nextCursor}`)).json(),
    );
    expect(secondPage.data.map((r) => r.day)).toEqual(['2030-07-01']);
    expect(secondPage.nextCursor).toBeNull();

    const ranged = Page(UsageReport).parse(
      (await get(app, admin, `${url}?from=2030-07-02&to=2030-07-31&sort=day`)).json(),
    );
    expect(ranged.data.map((r) => r.day)).toEqual(['2030-07-02']);
    const none = Page(UsageReport).parse((await get(app, admin, `${url}?to=2030-06-30`)).json());
    expect(none.data).toEqual([]);
  });

  it('refuses members without reports:read (403), other organizations (404) and hostile dates (400)', async () => {
    const { app, owner, member, outsider, orgId } = await scenario();
    const base = `/api/v1/orgs/${orgId}/reports/usage`;

    expectProblem(await get(app, member, base), 403, 'PERMISSION_DENIED');
    expectProblem(await get(app, member, `${base}/2030-07-01`), 403, 'PERMISSION_DENIED');
    expectProblem(await get(app, outsider, base), 404, 'ORG_NOT_FOUND');
    expectProblem(await get(app, outsider, `${base}/2030-07-01`), 404, 'ORG_NOT_FOUND');
    expect((await app.inject({ method: 'GET', url: base })).statusCode).toBe(401);
    // A key of the organization needs the scope too.
    const narrow = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
    const broad = await createApiKey(app, owner.accessToken, orgId, { scopes: ['reports:read'] });
    const withKey = (key: string, url: string) =>
      app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${key}` } });
    expectProblem(await withKey(narrow.key, base), 403, 'PERMISSION_DENIED');
    expect((await withKey(broad.key, `${base}/2030-07-01`)).statusCode).toBe(200);

    expectProblem(await get(app, owner, `${base}/2030-07-05`), 404, 'USAGE_REPORT_NOT_FOUND');
    for (const day of [
      '2030-02-30',
      '2030-13-01',
      '30-07-01',
      'yesterday',
      '2030-07-01T00:00',
      "2030-07-01'--",
    ]) {
      const byDay = await get(app, owner, `${base}/${encodeURIComponent(day)}`);
      expect(byDay.statusCode, `${day}: ${byDay.body}`).toBe(400);
      expectProblem(byDay, 400, 'VALIDATION_FAILED');
      const ranged = await get(app, owner, `${base}?from=${encodeURIComponent(day)}`);
      expect(ranged.statusCode, `${day}: ${ranged.body}`).toBe(400);
      expectProblem(ranged, 400, 'VALIDATION_FAILED');
    }
    expectProblem(
      await get(app, owner, `${base}?from=2030-07-02&to=2030-07-01`),
      400,
      'REPORT_RANGE_INVALID',
    );
    expectProblem(
      await get(app, owner, `${base}?from=2029-06-01&to=2030-07-06`),
      400,
      'REPORT_RANGE_INVALID',
    );
    expect((await get(app, owner, `${base}?from=2029-06-01&to=2030-07-05`)).statusCode).toBe(200);
    expectProblem(await get(app, owner, `${base}?limit=1000`), 400, 'VALIDATION_FAILED');
    expectProblem(await get(app, owner, `${base}?cursor=garbage`), 400, 'INVALID_CURSOR');
  });

  it('deletes reports 400 days after they were computed', async () => {
    const { app, clock, orgId } = await scenario();
    const days = () =>
      app.database.withTenant(orgId, async (db) =>
        (await db.selectFrom('org_usage_reports').select('day').orderBy('day').execute()).map((r) => r.day),
      );
    expect(await days()).toEqual(['2030-07-01']);
    clock.advance(399 * DAY);
    await app.jobs.drain();
    expect((await days())[0]).toBe('2030-07-01');
    clock.advance(2 * DAY);
    await app.jobs.drain();
    expect((await days())[0]).not.toBe('2030-07-01');
  });
});

describe('the usage report mail', () => {
  it('escapes the organization and reader names, and keeps them out of the subject', () => {
    const hostile = '<img src=x onerror=alert(1)> & "Co"';
    const mail = usageReport({
      name: hostile,
      orgName: `${hostile}\r\nBcc: victim@example.test`,
      orgId: '0190a0b0-0000-7000-8000-000000000000',
      day: '2030-07-01',
      figures: [['Audit log events', 3]],
      categories: [['member', 2]],
    });
    expect(mail.subject).toBe(REPORT_SUBJECT);
    expect(mail.html).not.toContain('<img');
    expect(mail.html).toContain(escapeHtml(hostile));
    expect(mail.text.split('\n').some((line) => line.startsWith('Bcc:'))).toBe(false);
    expect(mail.text).toContain('Audit log events: 3');
    expect(mail.text).toContain('member: 2');
  });
});
