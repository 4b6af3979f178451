import { ConsentPurposeList, ConsentRecord, MyConsents } from '@plinth/shared';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PlinthApp } from '../../app.ts';
import { bearer, createFakeClock, expectProblem, MINUTE } from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { buildTestApp } from '../../test/harness.ts';
import { createApiKey, createOrg, signedInUser, type TestUser } from '../../test/org-helpers.ts';
import { consentsForExport } from './consent.service.ts';
import { defineConsentPurposes } from './index.ts';
import { createConsentPurposeRegistry } from './purposes.ts';

const CONSENTS = '/api/v1/me/consents';

/** An application module declaring a purpose of its own, as a domain module would at start-up. */
async function fleetPurposes(app: FastifyInstance): Promise<void> {
  app.consentPurposes.add(
    defineConsentPurposes({
      telematics_sharing: { description: 'Sharing vehicle telemetry with insurers.' },
    }),
  );
}

describe.each(testDialects)('consent records (%s)', (dialect) => {
  const clock = createFakeClock('2026-12-01T08:00:00.000Z');
  let app: PlinthApp;
  let emails = 0;
  const newUser = () => signedInUser(app, `consent-${++emails}@example.test`);

  beforeAll(async () => {
    app = await buildTestApp(dialect, { clock, modules: [fleetPurposes] });
  });
  afterAll(async () => {
    await app.close();
  });

  const record = (user: TestUser, payload: unknown, headers: Record<string, string> = {}) =>
    app.inject({
      method: 'PUT',
      url: CONSENTS,
      headers: { ...bearer(user.accessToken), ...headers },
      payload: payload as Record<string, unknown>,
    });
  const read = async (user: TestUser, query = '') => {
    const res = await app.inject({
      method: 'GET',
      url: `${CONSENTS}${query}`,
      headers: bearer(user.accessToken),
    });
    expect(res.statusCode).toBe(200);
    return MyConsents.parse(res.json());
  };
  const storedRows = (userId: string) =>
    app.database.db.selectFrom('consent_records').selectAll().where('user_id', '=', userId).execute();

  it('keeps grant, withdrawal and renewed grant in the history, and shows the latest as the current state', async () => {
    const user = await newUser();
    const granted = await record(
      user,
      { purpose: 'marketing_email', granted: true, policyVersion: '2026-11' },
      { 'user-agent': 'ConsentTest/1.0', 'x-request-id': 'grant-1' },
    );
    expect(granted.statusCode).toBe(201);
    expect(granted.headers['cache-control']).toBe('no-store');
    expect(ConsentRecord.parse(granted.json())).toMatchObject({
      purpose: 'marketing_email',
      granted: true,
      policyVersion: '2026-11',
      recordedAt: '2026-12-01T08:00:00.000Z',
      ip: '127.0.0.1',
      userAgent: 'ConsentTest/1.0',
      requestId: 'grant-1',
    });

    clock.advance(MINUTE);
    expect(
      (await record(user, { purpose: 'marketing_email', granted: false, policyVersion: '2026-11' }))
        .statusCode,
    ).toBe(201);
    clock.advance(MINUTE);
    expect(
      (await record(user, { purpose: 'marketing_email', granted: true, policyVersion: '2026-12' }))
        .statusCode,
    ).toBe(201);

    const consents = await read(user);
    expect(consents.history.data.map((r) => [r.granted, r.policyVersion, r.recordedAt])).toEqual([
      [true, '2026-12', '2026-12-01T08:02:00.000Z'],
      [false, '2026-11', '2026-12-01T08:01:00.000Z'],
      [true, '2026-11', '2026-12-01T08:00:00.000Z'],
    ]);
    expect(consents.history.nextCursor).toBeNull();
    const byPurpose = new Map(consents.current.map((c) => [c.purpose, c]));
    expect(byPurpose.get('marketing_email')).toMatchObject({
      status: 'granted',
      granted: true,
      policyVersion: '2026-12',
      at: '2026-12-01T08:02:00.000Z',
    });
    expect(byPurpose.get('analytics')).toMatchObject({
      status: 'never_asked',
      granted: false,
      policyVersion: null,
      at: null,
    });
  });

  it('lists every declared purpose in the current state, the platform’s and a module’s, in name order', async () => {
    const user = await newUser();
    await record(user, { purpose: 'analytics', granted: false, policyVersion: 'v1' });
    const { current } = await read(user);
    expect(current.map((c) => c.purpose)).toEqual([
      'analytics',
      'marketing_email',
      'privacy_policy',
      'telematics_sharing',
      'terms',
      'usage_report_email',
    ]);
    expect(current.find((c) => c.purpose === 'analytics')).toMatchObject({
      status: 'withdrawn',
      granted: false,
    });
    expect(current.every((c) => c.description.length > 0)).toBe(true);
    // A module's purpose is recordable like the platform's.
    expect(
      (await record(user, { purpose: 'telematics_sharing', granted: true, policyVersion: 'v1' })).statusCode,
    ).toBe(201);
  });

  it('appends a record when the same state and policy version is recorded again', async () => {
    const user = await newUser();
    const body = { purpose: 'terms', granted: true, policyVersion: '3.0' };
    expect((await record(user, body)).statusCode).toBe(201);
    clock.advance(MINUTE);
    expect((await record(user, body)).statusCode).toBe(201);
    const { history } = await read(user);
    expect(history.data).toHaveLength(2);
    expect(new Set(history.data.map((r) => r.recordedAt)).size).toBe(2);
  });

  it('pages through the history newest first with a cursor, without repeating or skipping', async () => {
    const user = await newUser();
    for (const version of ['a', 'b', 'c', 'd', 'e']) {
      clock.advance(MINUTE);
      await record(user, { purpose: 'analytics', granted: version !== 'c', policyVersion: version });
    }
    const first = await read(user, '?limit=2');
    expect(first.history.data.map((r) => r.policyVersion)).toEqual(['e', 'd']);
    expect(first.history.nextCursor).not.toBeNull();
    const second = await read(user, `?limit=2&cursor=${first.history.nextCursor}`);
    expect(second.history.data.map((r) => r.policyVersion)).toEqual(['c', 'b']);
    const third = await read(user, `?limit=2&cursor=${second.history.nextCursor}`);
    expect(third.history.data.map((r) => r.policyVersion)).toEqual(['a']);
    expect(third.history.nextCursor).toBeNull();
    // The current state does not depend on the page.
    expect(third.current.find((c) => c.purpose === 'analytics')?.policyVersion).toBe('e');
  });

  it('never shows one person another person’s consents', async () => {
    const alice = await newUser();
    const bob = await newUser();
    await record(alice, { purpose: 'marketing_email', granted: true, policyVersion: 'alice-v' });
    const bobs = await read(bob);
    expect(bobs.history.data).toEqual([]);
    expect(bobs.current.every((c) => c.status === 'never_asked')).toBe(true);
    await record(bob, { purpose: 'marketing_email', granted: false, policyVersion: 'bob-v' });
    const alices = await read(alice);
    expect(alices.history.data.map((r) => r.policyVersion)).toEqual(['alice-v']);
    expect(alices.current.find((c) => c.purpose === 'marketing_email')?.granted).toBe(true);
  });

  it('refuses an undeclared purpose with 400 UNKNOWN_CONSENT_PURPOSE and records nothing', async () => {
    const user = await newUser();
    const res = await record(user, { purpose: 'sell_my_data', granted: true, policyVersion: 'v1' });
    expectProblem(res, 400, 'UNKNOWN_CONSENT_PURPOSE');
    expect(await storedRows(user.userId)).toEqual([]);
  });

  it('refuses missing and invalid fields with 400 VALIDATION_FAILED and records nothing', async () => {
    const user = await newUser();
    const invalid: unknown[] = [
      {},
      { granted: true, policyVersion: 'v1' },
      { purpose: 'terms', policyVersion: 'v1' },
      { purpose: 'terms', granted: true },
      { purpose: 'terms', granted: 'true', policyVersion: 'v1' },
      { purpose: 'terms', granted: 1, policyVersion: 'v1' },
      { purpose: 'Terms!', granted: true, policyVersion: 'v1' },
      { purpose: 'terms', granted: true, policyVersion: '   ' },
      { purpose: 'terms', granted: true, policyVersion: 'x'.repeat(65) },
      { purpose: 'terms', granted: true, policyVersion: 'v1', userId: user.userId },
      { purpose: 'terms', granted: true, policyVersion: 'v1', recordedAt: '2020-01-01T00:00:00.000Z' },
    ];
    for (const payload of invalid) {
      const res = await record(user, payload);
      expectProblem(res, 400, 'VALIDATION_FAILED');
    }
    const badQuery = await app.inject({
      method: 'GET',
      url: `${CONSENTS}?limit=0`,
      headers: bearer(user.accessToken),
    });
    expectProblem(badQuery, 400, 'VALIDATION_FAILED');
    expectProblem(
      await app.inject({
        method: 'GET',
        url: `${CONSENTS}?cursor=nonsense`,
        headers: bearer(user.accessToken),
      }),
      400,
      'INVALID_CURSOR',
    );
    expect(await storedRows(user.userId)).toEqual([]);
  });

  it('answers 401 to an anonymous caller, before looking at the body', async () => {
    expectProblem(await app.inject({ method: 'GET', url: CONSENTS }), 401, 'UNAUTHENTICATED');
    const put = await app.inject({ method: 'PUT', url: CONSENTS, payload: { purpose: 'nope' } });
    expectProblem(put, 401, 'UNAUTHENTICATED');
    expect(put.headers['www-authenticate']).toBe('Bearer');
  });

  it('refuses an API key with 403 API_KEY_NOT_ALLOWED: consent is a person’s own act', async () => {
    const owner = await newUser();
    const org = await createOrg(app, owner.accessToken, 'Consent Co');
    const key = await createApiKey(app, owner.accessToken, org.id, { scopes: ['members:read'] });
    expectProblem(
      await app.inject({ method: 'GET', url: CONSENTS, headers: bearer(key.key) }),
      403,
      'API_KEY_NOT_ALLOWED',
    );
    const put = await app.inject({
      method: 'PUT',
      url: CONSENTS,
      headers: { 'x-api-key': key.key },
      payload: { purpose: 'terms', granted: true, policyVersion: 'v1' },
    });
    expectProblem(put, 403, 'API_KEY_NOT_ALLOWED');
    expect(await storedRows(owner.userId)).toEqual([]);
  });

  it('marks the answers Cache-Control: no-store', async () => {
    const user = await newUser();
    const res = await app.inject({ method: 'GET', url: CONSENTS, headers: bearer(user.accessToken) });
    expect(res.headers['cache-control']).toBe('no-store');
  });

  it('refuses an UPDATE of a record in the database itself', async () => {
    const user = await newUser();
    await record(user, { purpose: 'terms', granted: false, policyVersion: 'v1' });
    await expect(
      app.database.db
        .updateTable('consent_records')
        .set({ granted: 1 })
        .where('user_id', '=', user.userId)
        .execute(),
    ).rejects.toThrow(/append-only/);
    const rows = await storedRows(user.userId);
    expect(rows.map((r) => [r.granted, r.policy_version])).toEqual([[0, 'v1']]);
  });

  it('deletes a person’s records with their account', async () => {
    const user = await newUser();
    const other = await newUser();
    await record(user, { purpose: 'terms', granted: true, policyVersion: 'v1' });
    await record(user, { purpose: 'analytics', granted: false, policyVersion: 'v1' });
    await record(other, { purpose: 'terms', granted: true, policyVersion: 'v1' });
    expect(await storedRows(user.userId)).toHaveLength(2);
    await app.database.db.deleteFrom('users').where('id', '=', user.userId).execute();
    expect(await storedRows(user.userId)).toEqual([]);
    expect(await storedRows(other.userId)).toHaveLength(1);
  });

  it('exports every record of one person, oldest first, for a data export', async () => {
    const user = await newUser();
    const other = await newUser();
    await record(user, { purpose: 'terms', granted: true, policyVersion: 'v1' });
    clock.advance(MINUTE);
    await record(user, { purpose: 'terms', granted: false, policyVersion: 'v2' });
    await record(other, { purpose: 'terms', granted: true, policyVersion: 'other' });
    const exported = await consentsForExport(app.database.db, user.userId);
    expect(exported.map((r) => [r.purpose, r.granted, r.policyVersion])).toEqual([
      ['terms', true, 'v1'],
      ['terms', false, 'v2'],
    ]);
    expect(exported.every((r) => ConsentRecord.safeParse(r).success)).toBe(true);
  });

  it('lists the declared purposes publicly', async () => {
    const res = await app.inject({ method: 'GET', url: '/api/v1/consent-purposes' });
    expect(res.statusCode).toBe(200);
    const names = ConsentPurposeList.parse(res.json()).data.map((p) => p.name);
    expect(names).toEqual([
      'analytics',
      'marketing_email',
      'privacy_policy',
      'telematics_sharing',
      'terms',
      'usage_report_email',
    ]);
  });
});

describe('consent purposes', () => {
  it('refuses a purpose name the API could never accept', () => {
    expect(() => defineConsentPurposes({ 'Marketing-Email': { description: 'x' } })).toThrow(/not a valid/);
  });

  it('refuses a purpose declared twice', () => {
    const registry = createConsentPurposeRegistry();
    expect(() => registry.add(defineConsentPurposes({ terms: { description: 'again' } }))).toThrow(/twice/);
  });
});
