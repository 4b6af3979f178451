import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { AuditEvent, ErasureScheduled, Page, TotpEnrollment } from '@plinth/shared';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PlinthApp } from '../../app.ts';
import {
  bearer,
  createFakeClock,
  createOperator,
  DAY,
  expectProblem,
  findUser,
  login,
  loginResponse,
  PASSWORD,
  totp,
} from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { buildTestApp } from '../../test/harness.ts';
import { createApiKey, createOrg, invite, signedInUser } from '../../test/org-helpers.ts';
import { auditChains, sequenceAllChains, verifyAuditChain } from '../audit/index.ts';

// Account erasure (GDPR art. 17): re-authenticated, refused while the person alone owns an organization others
// belong to, cancelled by signing in during the grace period, and then complete — no column of any table still
// holds the person's address, name or IP — while every audit chain still verifies.

const OPERATOR = { email: 'operator@example.test', password: 'granite moss picnic tulip voyage' };

describe.each(testDialects)('account erasure (%s)', (dialect) => {
  let app: PlinthApp;
  const clock = createFakeClock('2030-06-01T08:00:00.000Z');
  // A webhook receiver on this machine that fails every delivery, quoting it back: the delivery log then keeps
  // the payload (for the retry) and the receiver's answer, both holding whatever the event said about a person.
  const receiver = createServer((request, response) => {
    const body: Buffer[] = [];
    request.on('data', (chunk: Buffer) => body.push(chunk));
    request.on('end', () => response.writeHead(500).end(`cannot take ${Buffer.concat(body).toString()}`));
  });

  beforeAll(async () => {
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    app = await buildTestApp(dialect, {
      clock,
      env: { REQUIRE_EMAIL_VERIFICATION: 'false', WEBHOOK_ALLOWED_HOSTS: '127.0.0.1' },
    });
    await createOperator(app, OPERATOR);
  });
  afterAll(async () => {
    await app?.close();
    receiver.close();
  });

  /** A person who signs up and signs in from an address of their own, with a name no one else has. */
  async function person(email: string, name: string, ip: string) {
    const signup = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/signup',
      payload: { email, password: PASSWORD, name },
      remoteAddress: ip,
    });
    expect(signup.statusCode).toBe(201);
    const res = await loginResponse(app, email, PASSWORD, { remoteAddress: ip, userAgent: `agent-of-${ip}` });
    expect(res.statusCode).toBe(200);
    const { accessToken } = res.json<{ accessToken: string }>();
    const user = await findUser(app, email);
    return { userId: user?.id ?? '', email, name, ip, accessToken };
  }

  const eraseMe = (token: string, payload: Record<string, unknown>, ip = '127.0.0.1') =>
    app.inject({ method: 'DELETE', url: '/api/v1/me', headers: bearer(token), payload, remoteAddress: ip });

  /** Every row of every table, as text: what an erasure must leave no trace of the person in. */
  async function everyRowAsText(): Promise<Record<string, string>> {
    const tables =
      dialect === 'postgres'
        ? await sql<{ name: string }>`select table_name as name from information_schema.tables
            where table_schema = current_schema() and table_type = 'BASE TABLE'`.execute(app.database.db)
        : await sql<{ name: string }>`select name from sqlite_master
            where type = 'table' and name not like 'sqlite_%'`.execute(app.database.db);
    const contents: Record<string, string> = {};
    await app.database.acrossTenants(async (db) => {
      for (const { name } of tables.rows) {
        const rows = await sql`select * from ${sql.table(name)}`.execute(db);
        contents[name] = JSON.stringify(rows.rows, (_key, value: unknown) =>
          Buffer.isBuffer(value) ? value.toString('latin1') : value,
        );
      }
    });
    return contents;
  }

  it('erases every trace of the person after the grace period, and every chain still verifies', async () => {
    const victim = await person('zelda.erase-me@example.test', 'Zelda Quixotic-Erasure', '203.0.113.77');
    const friend = await signedInUser(app, 'friend@example.test', 'Friendly Owner');
    // Her own organization (she alone is in it), and a friend's she joined as an admin.
    await createOrg(app, victim.accessToken, 'Solo Workshop');
    const { id: friendOrg } = await createOrg(app, friend.accessToken, 'Friends Org');
    const token = await invite(app, friend.accessToken, friendOrg, victim.email, 'admin');
    const accept = await app.inject({
      method: 'POST',
      url: '/api/v1/invitations/accept',
      headers: bearer(victim.accessToken),
      payload: { token },
      remoteAddress: victim.ip,
    });
    expect(accept.statusCode).toBe(200);
    // The friend's organization sends every event to a webhook.
    const hook = await app.inject({
      method: 'POST',
      url: `/api/v1/orgs/${friendOrg}/webhooks`,
      headers: bearer(friend.accessToken),
      payload: { url: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`, events: ['*'] },
    });
    expect(hook.statusCode).toBe(201);
    // Things she did there, and things others did about her.
    await invite(app, victim.accessToken, friendOrg, 'someone-else@example.test', 'member');
    await createApiKey(app, victim.accessToken, friendOrg, { name: 'zelda key', scopes: ['members:read'] });
    const { id: otherOrg } = await createOrg(app, friend.accessToken, 'Pending Org');
    await invite(app, friend.accessToken, otherOrg, victim.email, 'member');
    const withVictim = (method: 'PUT' | 'PATCH' | 'POST', url: string, payload?: object) =>
      app.inject({ method, url, headers: bearer(victim.accessToken), payload, remoteAddress: victim.ip });
    expect(
      (
        await withVictim('PUT', '/api/v1/me/consents', {
          purpose: 'analytics',
          granted: true,
          policyVersion: 'v1',
        })
      ).statusCode,
    ).toBe(201);
    expect((await withVictim('POST', '/api/v1/me/export')).statusCode).toBe(202);
    await app.jobs.drain();
    expect(
      (await loginResponse(app, victim.email, 'not her password at all', { remoteAddress: victim.ip }))
        .statusCode,
    ).toBe(401);

    const before = await everyRowAsText();
    expect(Object.values(before).join('\n')).toContain(victim.email);

    const requested = await eraseMe(victim.accessToken, { password: PASSWORD }, victim.ip);
    expect(requested.statusCode).toBe(202);
    const { scheduledFor } = ErasureScheduled.parse(requested.json());
    expect(scheduledFor).toBe(new Date(clock.now().getTime() + 14 * DAY).toISOString());
    // Every session ended at once.
    expect(
      (await app.inject({ method: 'GET', url: '/api/v1/me', headers: bearer(victim.accessToken) }))
        .statusCode,
    ).toBe(401);

    clock.advance(14 * DAY - 1000);
    await app.jobs.drain();
    expect(await findUser(app, victim.email)).toBeDefined();
    // Just before the erasure, the friend changes her role: the event, its webhook delivery and the copies of her
    // address and name they carry are recent enough that no retention policy has removed them.
    const changed = await app.inject({
      method: 'PATCH',
      url: `/api/v1/orgs/${friendOrg}/members/${victim.userId}`,
      headers: bearer((await login(app, friend.email, PASSWORD)).accessToken),
      payload: { role: 'member' },
    });
    expect(changed.statusCode).toBe(200);
    await app.jobs.drain();
    const copies = await everyRowAsText();
    for (const table of ['domain_events', 'webhook_deliveries', 'webhook_delivery_attempts']) {
      expect(copies[table]).toContain(victim.email);
    }
    clock.advance(1000);
    await app.jobs.drain();
    expect(await findUser(app, victim.email)).toBeUndefined();

    const after = await everyRowAsText();
    for (const [table, text] of Object.entries(after)) {
      for (const trace of [victim.email, victim.name, victim.ip, `agent-of-${victim.ip}`]) {
        expect(text.includes(trace), `${table} still holds ${trace}`).toBe(false);
      }
    }
    // Her id survives only as the target of events; as an actor she is a pseudonym now.
    const events = await app.database.acrossTenants(async (db) => {
      await sequenceAllChains(db);
      return db.selectFrom('audit_events').select(['actor_id', 'action', 'org_id']).execute();
    });
    expect(events.some((e) => e.actor_id === victim.userId)).toBe(false);
    expect(events.some((e) => e.actor_id.startsWith('erased-'))).toBe(true);
    expect(events.some((e) => e.action === 'user.erased')).toBe(true);
    for (const chain of await auditChains(app.database)) {
      expect(await verifyAuditChain(app.database, chain), chain).toMatchObject({ ok: true });
    }
    // The friend's organization and its other members are untouched; her solo one is gone.
    const orgs = await app.database.db.selectFrom('organizations').select('name').execute();
    expect(orgs.map((o) => o.name)).toEqual(expect.arrayContaining(['Friends Org', 'Pending Org']));
    expect(orgs.map((o) => o.name)).not.toContain('Solo Workshop');
  });

  it('is cancelled by signing in during the grace period', async () => {
    const user = await signedInUser(app, 'changed-mind@example.test', 'Changed Mind');
    expect((await eraseMe(user.accessToken, { password: PASSWORD })).statusCode).toBe(202);
    clock.advance(3 * DAY);
    await login(app, user.email, PASSWORD);
    clock.advance(14 * DAY);
    await app.jobs.drain();
    expect(await findUser(app, user.email)).toMatchObject({ erasure_scheduled_for: null });
    const back = await login(app, user.email, PASSWORD);
    const history = await app.inject({
      method: 'GET',
      url: '/api/v1/me/audit?limit=100',
      headers: bearer(back.accessToken),
    });
    const actions = Page(AuditEvent)
      .parse(history.json())
      .data.map((e) => e.action);
    expect(actions).toEqual(expect.arrayContaining(['user.erasure_requested', 'user.erasure_cancelled']));
  });

  it('refuses the only owner of an organization with other members, and a wrong password or missing code', async () => {
    const owner = await signedInUser(app, 'sole-owner@example.test', 'Sole Owner');
    const { id: orgId } = await createOrg(app, owner.accessToken, 'Owned Alone');
    const member = await signedInUser(app, 'a-member@example.test');
    const token = await invite(app, owner.accessToken, orgId, member.email, 'member');
    await app.inject({
      method: 'POST',
      url: '/api/v1/invitations/accept',
      headers: bearer(member.accessToken),
      payload: { token },
    });
    const refused = await eraseMe(owner.accessToken, { password: PASSWORD });
    expectProblem(refused, 409, 'ERASURE_BLOCKED');
    expect(refused.json<{ detail: string }>().detail).toContain('Owned Alone');
    expect(await findUser(app, owner.email)).toMatchObject({ erasure_scheduled_for: null });

    expectProblem(
      await eraseMe(member.accessToken, { password: 'not the password at all' }),
      403,
      'WRONG_PASSWORD',
    );
    expectProblem(await eraseMe(member.accessToken, {}), 400, 'VALIDATION_FAILED');
    expectProblem(
      await eraseMe(member.accessToken, { password: PASSWORD, extra: 1 }),
      400,
      'VALIDATION_FAILED',
    );

    const enrol = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/mfa/totp/enroll',
      headers: bearer(member.accessToken),
      payload: { password: PASSWORD },
    });
    const { secret } = TotpEnrollment.parse(enrol.json());
    await app.inject({
      method: 'POST',
      url: '/api/v1/auth/mfa/totp/confirm',
      headers: bearer(member.accessToken),
      payload: { code: totp(secret, clock.now()) },
    });
    expectProblem(await eraseMe(member.accessToken, { password: PASSWORD }), 401, 'INVALID_MFA_CODE');
    clock.advance(30_000);
    const withCode = await eraseMe(member.accessToken, {
      password: PASSWORD,
      code: totp(secret, clock.now()),
    });
    expect(withCode.statusCode).toBe(202);
    expect((await findUser(app, member.email))?.erasure_scheduled_for).not.toBeNull();
  });

  it("lets an operator schedule someone's erasure, recorded on the installation chain", async () => {
    const user = await signedInUser(app, 'by-operator@example.test', 'Operator Target');
    const operator = await login(app, OPERATOR.email, OPERATOR.password);
    const res = await app.inject({
      method: 'DELETE',
      url: `/api/v1/admin/users/${user.userId}`,
      headers: bearer(operator.accessToken),
    });
    expect(res.statusCode).toBe(202);
    expectProblem(
      await app.inject({
        method: 'DELETE',
        url: `/api/v1/admin/users/${user.userId}`,
        headers: bearer(user.accessToken),
      }),
      401,
      'SESSION_REVOKED',
    );
    const platform = await app.inject({
      method: 'GET',
      url: '/api/v1/admin/audit?limit=100',
      headers: bearer(operator.accessToken),
    });
    const scheduled = Page(AuditEvent)
      .parse(platform.json())
      .data.find((e) => e.action === 'admin.user_erasure_scheduled');
    expect(scheduled).toMatchObject({ target: { type: 'user', id: user.userId } });
    clock.advance(14 * DAY);
    await app.jobs.drain();
    expect(await findUser(app, user.email)).toBeUndefined();
  });
});
