import { AuditEvent, AuditVerifyResult, Page, TotpEnrollment } from '@plinth/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PlinthApp } from '../../app.ts';
import {
  bearer,
  createFakeClock,
  createOperator,
  login,
  loginResponse,
  PASSWORD,
  SECOND,
  totp,
} from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { buildTestApp } from '../../test/harness.ts';
import { signedInUser, type TestUser } from '../../test/org-helpers.ts';

// The audit trail of identity: every change to an account, a session or a sign-in counter lands on the account's
// own chain (or the installation's, when no account is involved) in the transaction that makes it.

const EventPage = Page(AuditEvent);
const NEW_PASSWORD = 'copper lantern drifting past nine harbours';
const OPERATOR = { email: 'operator@example.test', password: 'granite moss picnic tulip voyage' };

describe.each(testDialects)('account audit trail (%s)', (dialect) => {
  let app: PlinthApp;
  const clock = createFakeClock('2030-03-04T09:00:10.000Z');

  beforeAll(async () => {
    app = await buildTestApp(dialect, { clock, env: { LOCKOUT_THRESHOLD: '3' } });
    await createOperator(app, OPERATOR);
  });
  afterAll(async () => {
    await app?.close();
  });

  async function myEvents(user: Pick<TestUser, 'accessToken'>): Promise<AuditEvent[]> {
    const res = await app.inject({
      method: 'GET',
      url: '/api/v1/me/audit?limit=100&sort=seq',
      headers: bearer(user.accessToken),
    });
    expect(res.statusCode).toBe(200);
    return EventPage.parse(res.json()).data;
  }

  /** A fresh operator's token: the tests move the clock past an access token's lifetime. */
  async function operatorToken(): Promise<string> {
    return (await login(app, OPERATOR.email, OPERATOR.password)).accessToken;
  }

  async function adminGet(url: string) {
    const res = await app.inject({ method: 'GET', url, headers: bearer(await operatorToken()) });
    expect(res.statusCode).toBe(200);
    return res.json();
  }

  it('records sign-up, verification and sign-in on the account, with the request that made them', async () => {
    const user = await signedInUser(app, 'trail@example.test');
    const events = await myEvents(user);
    expect(events.map((e) => e.action)).toEqual(['user.created', 'user.email_verified', 'user.signed_in']);
    expect(events.map((e) => e.seq)).toEqual([1, 2, 3]);
    const signIn = events[2];
    expect(signIn).toMatchObject({
      orgId: null,
      actor: { type: 'user', id: user.userId },
      target: { type: 'session' },
      ip: '127.0.0.1',
      outcome: 'success',
    });
    expect(signIn?.actor.via).toBe(signIn?.target?.id);
    expect(signIn?.requestId).toEqual(expect.any(String));
  });

  it('records failures, the lock they cause, and sign-outs; the chain verifies', async () => {
    const user = await signedInUser(app, 'locked@example.test');
    for (let i = 0; i < 3; i++) {
      expect((await loginResponse(app, user.email, 'not the password at all')).statusCode).toBe(401);
    }
    clock.advance(3600 * SECOND);
    const second = await login(app, user.email, PASSWORD);
    expect(
      (await app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(second.accessToken) }))
        .statusCode,
    ).toBe(204);

    const third = await login(app, user.email, PASSWORD);
    const actions = (await myEvents(third)).map((e) => [e.action, e.outcome]);
    expect(actions.slice(3)).toEqual([
      ['user.sign_in_failed', 'failure'],
      ['user.sign_in_failed', 'failure'],
      ['user.sign_in_failed', 'failure'],
      ['user.locked', 'success'],
      ['user.signed_in', 'success'],
      ['session.revoked', 'success'],
      ['user.signed_in', 'success'],
    ]);
    const verified = AuditVerifyResult.parse(
      await adminGet(`/api/v1/admin/users/${user.userId}/audit/verify`),
    );
    expect(verified).toEqual({ ok: true, checked: 10 });
  });

  it('records a failed sign-in for an address with no account on the installation chain, without the address', async () => {
    const address = 'nobody-here@example.test';
    expect((await loginResponse(app, address, 'whatever it is you try')).statusCode).toBe(401);
    const events = EventPage.parse(await adminGet('/api/v1/admin/audit?limit=100')).data;
    const failure = events.find((e) => e.action === 'user.sign_in_failed');
    expect(failure).toMatchObject({ orgId: null, actor: { type: 'user', id: 'anonymous' }, target: null });
    expect(JSON.stringify(events)).not.toContain(address);
  });

  it('records password, profile and two-factor changes, secrets never included', async () => {
    const user = await signedInUser(app, 'changes@example.test');
    const patch = await app.inject({
      method: 'PATCH',
      url: '/api/v1/me',
      headers: bearer(user.accessToken),
      payload: { name: 'Grace B. Hopper' },
    });
    expect(patch.statusCode).toBe(200);
    const enrol = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/mfa/totp/enroll',
      headers: bearer(user.accessToken),
      payload: { password: PASSWORD },
    });
    const { secret } = TotpEnrollment.parse(enrol.json());
    const confirm = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/mfa/totp/confirm',
      headers: bearer(user.accessToken),
      payload: { code: totp(secret, clock.now()) },
    });
    expect(confirm.statusCode).toBe(200);
    const change = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/password/change',
      headers: bearer(user.accessToken),
      payload: { currentPassword: PASSWORD, newPassword: NEW_PASSWORD },
    });
    expect(change.statusCode).toBe(204);

    const events = await myEvents(user);
    expect(events.slice(3).map((e) => e.action)).toEqual([
      'user.updated',
      'user.mfa_enrolment_started',
      'user.mfa_enabled',
      'user.password_changed',
    ]);
    expect(events[3]?.changes).toEqual({ name: { before: 'Grace Hopper', after: 'Grace B. Hopper' } });
    const stored = JSON.stringify(events);
    for (const secretValue of [
      PASSWORD,
      NEW_PASSWORD,
      secret,
      ...confirm.json<{ recoveryCodes: string[] }>().recoveryCodes,
    ]) {
      expect(stored).not.toContain(secretValue);
    }
  });

  it("records an operator's action on the installation chain, and the operator's reading of an account's log", async () => {
    const user = await signedInUser(app, 'disabled@example.test');
    const disable = await app.inject({
      method: 'POST',
      url: `/api/v1/admin/users/${user.userId}/disable`,
      headers: bearer(await operatorToken()),
    });
    expect(disable.statusCode).toBe(204);
    await adminGet(`/api/v1/admin/users/${user.userId}/audit`);
    const events = EventPage.parse(await adminGet('/api/v1/admin/audit?limit=100')).data;
    const [read, disabled] = events;
    expect(disabled).toMatchObject({
      action: 'admin.user_disabled',
      target: { type: 'user', id: user.userId },
    });
    expect(read).toMatchObject({
      action: 'audit.viewed',
      target: { type: 'audit_chain', id: `user:${user.userId}` },
    });
    expect(events.find((e) => e.action === 'user.superadmin_created')).toMatchObject({
      actor: { type: 'system', id: 'cli' },
    });
    expect(AuditVerifyResult.parse(await adminGet('/api/v1/admin/audit/verify'))).toMatchObject({ ok: true });
  });

  it('keeps the account and installation logs from anyone but operators', async () => {
    const user = await signedInUser(app, 'curious@example.test');
    for (const url of ['/api/v1/admin/audit', `/api/v1/admin/users/${user.userId}/audit`]) {
      const res = await app.inject({ method: 'GET', url, headers: bearer(user.accessToken) });
      expect(res.statusCode).toBe(403);
    }
    expect((await app.inject({ method: 'GET', url: '/api/v1/me/audit' })).statusCode).toBe(401);
  });
});
