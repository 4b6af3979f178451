import { randomBytes } from 'node:crypto';
import { ApiKey, ApiKeyWithSecret, Member, Page, Problem } from '@plinth/shared';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import type { Selectable } from 'kysely';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildApp, type PlinthApp } from '../../app.ts';
import { sha256Hex } from '../../core/crypto.ts';
import { newId } from '../../core/ids.ts';
import type { ApiKeysTable } from '../../db/schema.ts';
import {
  bearer,
  cleanupAfterEach,
  createFakeClock,
  expectProblem,
  type FakeClock,
  HOUR,
  login,
  MINUTE,
  PASSWORD,
  SECOND,
  startTestApp,
} from '../../test/auth-helpers.ts';
import { testDialects, testRedisUrl } from '../../test/dialects.ts';
import { buildTestApp, createTestDatabase, type TestDatabase, testConfig } from '../../test/harness.ts';
import { addMember, createApiKey, createOrg, signedInUser, type TestUser } from '../../test/org-helpers.ts';

// API keys let programs act in one organization with a fixed set of scopes. These tests drive the management
// endpoints and then use the keys as a client would, on both dialects: the key is shown once and stored only as
// a keyed hash, it grants exactly its scopes in exactly its organization, and expiry, revocation, rotation and the
// IP allowlist take effect when they should — on this replica at once, and on the others through Redis.

const START = '2030-03-04T09:00:00.000Z';
type Dialect = (typeof testDialects)[number];

const cleanups = cleanupAfterEach();

/** Sign-up without the verification mail round trip: these tests are about keys, not addresses. */
const baseEnv = { REQUIRE_EMAIL_VERIFICATION: 'false' };

const keysUrl = (orgId: string) => `/api/v1/orgs/${orgId}/apikeys`;
const keyUrl = (orgId: string, keyId: string) => `/api/v1/orgs/${orgId}/apikeys/${keyId}`;
const membersUrl = (orgId: string) => `/api/v1/orgs/${orgId}/members`;

/** The secret part of a key: what follows its public prefix and the separating `_`. */
const secretOf = (key: ApiKeyWithSecret) => key.key.slice(key.prefix.length + 1);

/** A random secret of the right shape (32 bytes in base64url), written independently of the server's code. */
const randomSecret = () => randomBytes(32).toString('base64url');

/** Extra inject options for a request made with a key: where it comes from. */
interface KeyRequestOptions {
  /** How the key is sent: `Authorization: Bearer` (default) or `X-API-Key`. */
  via?: 'bearer' | 'x-api-key';
  remoteAddress?: string;
  method?: InjectOptions['method'];
  payload?: InjectOptions['payload'];
}

/** A request to `url` authenticated by the API key `key`. */
function withKey(app: PlinthApp, key: string, url: string, options: KeyRequestOptions = {}) {
  const { via = 'bearer', remoteAddress, method = 'GET', payload } = options;
  return app.inject({
    method,
    url,
    headers: via === 'bearer' ? { authorization: `Bearer ${key}` } : { 'x-api-key': key },
    ...(remoteAddress === undefined ? {} : { remoteAddress }),
    ...(payload === undefined ? {} : { payload }),
  });
}

/** `GET /orgs/{orgId}/members` with the key: the probe of whether a `members:read` key still works. */
const listMembersWithKey = (app: PlinthApp, orgId: string, key: string, options: KeyRequestOptions = {}) =>
  withKey(app, key, membersUrl(orgId), options);

/** Asserts a 401 INVALID_API_KEY that says how to authenticate, as RFC 6750 asks. */
function expectInvalidKey(res: LightMyRequestResponse): void {
  expectProblem(res, 401, 'INVALID_API_KEY');
  expect(res.headers['www-authenticate']).toMatch(/^Bearer\b/);
}

/** Asserts a 403 PERMISSION_DENIED naming the missing permission. */
function expectDenied(res: LightMyRequestResponse, permission: string): void {
  expectProblem(res, 403, 'PERMISSION_DENIED');
  expect(Problem.parse(res.json()).permission).toBe(permission);
}

/** `GET /orgs/{orgId}/apikeys/{keyId}` as `accessToken`, expecting 200. */
async function getKey(app: PlinthApp, accessToken: string, orgId: string, keyId: string): Promise<ApiKey> {
  const res = await app.inject({ method: 'GET', url: keyUrl(orgId, keyId), headers: bearer(accessToken) });
  expect(res.statusCode).toBe(200);
  return ApiKey.parse(res.json());
}

/** The ids of an organization's keys, as the list endpoint shows them to `accessToken`. */
async function listedKeyIds(app: PlinthApp, accessToken: string, orgId: string): Promise<string[]> {
  const res = await app.inject({ method: 'GET', url: keysUrl(orgId), headers: bearer(accessToken) });
  expect(res.statusCode).toBe(200);
  return Page(ApiKey)
    .parse(res.json())
    .data.map((k) => k.id);
}

/** `POST …/apikeys/{keyId}/rotate` as `accessToken`, returning the raw response. */
function rotate(app: PlinthApp, accessToken: string, orgId: string, keyId: string, payload: object = {}) {
  return app.inject({
    method: 'POST',
    url: `${keyUrl(orgId, keyId)}/rotate`,
    headers: bearer(accessToken),
    payload,
  });
}

/** `DELETE …/apikeys/{keyId}` as `accessToken`, returning the raw response. */
function revoke(app: PlinthApp, accessToken: string, orgId: string, keyId: string) {
  return app.inject({ method: 'DELETE', url: keyUrl(orgId, keyId), headers: bearer(accessToken) });
}

/** `POST /orgs/{orgId}/apikeys` as `accessToken` with any body, returning the raw response. */
function postKey(app: PlinthApp, accessToken: string, orgId: string, payload: object) {
  return app.inject({ method: 'POST', url: keysUrl(orgId), headers: bearer(accessToken), payload });
}

/** The stored row of a key, read across organizations (only to observe). */
function storedKey(app: PlinthApp, keyId: string): Promise<Selectable<ApiKeysTable> | undefined> {
  return app.database.acrossTenants((db) =>
    db.selectFrom('api_keys').selectAll().where('id', '=', keyId).executeTakeFirst(),
  );
}

/** How many keys an organization has in the database (only to observe that nothing was created). */
async function storedKeyCount(app: PlinthApp, orgId: string): Promise<number> {
  const rows = await app.database.acrossTenants((db) =>
    db.selectFrom('api_keys').select('id').where('org_id', '=', orgId).execute(),
  );
  return rows.length;
}

/**
 * Asks `probe` again every 25 ms until it holds or `timeoutMs` has passed (real time: Redis delivery and the
 * background flush are asynchronous). Returns whether it held; the bound only keeps a failing test from hanging.
 */
async function eventually(probe: () => Promise<boolean>, timeoutMs = 3000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

describe.each(testDialects)('API keys (%s)', (dialect) => {
  // One installation for the tests that do not move the clock: each makes its own keys, so they do not
  // interfere. Tests that need time to pass build their own app below.
  let app: PlinthApp;
  let owner: TestUser;
  let admin: TestUser;
  let member: TestUser;
  let viewer: TestUser;
  let orgId: string;
  /** Another organization, also owned by `owner`: a key of `orgId` must not reach it all the same. */
  let siblingOrgId: string;
  /** An organization of someone else. */
  let strangerOrgId: string;
  let stranger: TestUser;

  beforeAll(async () => {
    app = await buildTestApp(dialect, { env: baseEnv, clock: createFakeClock(START) });
    owner = await signedInUser(app, 'owner@example.com');
    orgId = (await createOrg(app, owner.accessToken, 'Acme Logistics')).id;
    siblingOrgId = (await createOrg(app, owner.accessToken, 'Acme Rentals')).id;
    admin = await addMember(app, owner.accessToken, orgId, 'admin@example.com', 'admin');
    member = await addMember(app, owner.accessToken, orgId, 'member@example.com', 'member');
    viewer = await addMember(app, owner.accessToken, orgId, 'viewer@example.com', 'viewer');
    stranger = await signedInUser(app, 'stranger@example.com');
    strangerOrgId = (await createOrg(app, stranger.accessToken, 'Other Fleet')).id;
  });
  afterAll(async () => {
    await app?.close();
  });

  describe('creating and showing keys', () => {
    it('shows the full key once, at creation, in the plk_live_<id>_<secret> format', async () => {
      const res = await postKey(app, admin.accessToken, orgId, {
        name: 'CI deploy',
        scopes: ['members:read', 'invitations:read', 'members:read'],
      });
      expect(res.statusCode).toBe(201);
      const created = ApiKeyWithSecret.parse(res.json());
      expect(created.key).toMatch(/^plk_live_[0-9a-f]{32}_[A-Za-z0-9_-]{43}$/);
      expect(created.prefix).toBe(`plk_live_${created.id.replaceAll('-', '')}`);
      expect(created.key.startsWith(`${created.prefix}_`)).toBe(true);
      expect(created).toMatchObject({
        name: 'CI deploy',
        scopes: ['invitations:read', 'members:read'],
        status: 'active',
        allowedIps: null,
        expiresAt: null,
        createdBy: admin.userId,
        createdAt: START,
        usageCount: 0,
        lastUsedAt: null,
        revokedAt: null,
      });
    });

    it('never shows the key or any secret material again, in the key itself or in the list', async () => {
      const created = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
      const stored = await storedKey(app, created.id);
      if (!stored) throw new Error('the key has no row');

      const one = await app.inject({
        method: 'GET',
        url: keyUrl(orgId, created.id),
        headers: bearer(owner.accessToken),
      });
      const list = await app.inject({
        method: 'GET',
        url: keysUrl(orgId),
        headers: bearer(owner.accessToken),
      });
      expect(one.statusCode).toBe(200);
      expect(list.statusCode).toBe(200);
      expect(
        Page(ApiKey)
          .parse(list.json())
          .data.map((k) => k.id),
      ).toContain(created.id);
      for (const body of [one.body, list.body]) {
        expect(body).not.toContain(secretOf(created));
        expect(body).not.toContain(stored.secret_hash);
        expect(body).not.toMatch(/"key"\s*:/);
        expect(body).not.toMatch(/secret_?hash/i);
      }
      expect(ApiKey.parse(one.json())).toMatchObject({ id: created.id, prefix: created.prefix });
    });

    it('stores only a keyed hash of the secret, never the secret or its plain SHA-256', async () => {
      const created = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
      const secret = secretOf(created);
      const stored = await storedKey(app, created.id);
      if (!stored) throw new Error('the key has no row');
      expect(stored.secret_hash).not.toBe(secret);
      expect(stored.secret_hash).not.toContain(secret);
      expect(stored.secret_hash).not.toBe(sha256Hex(secret));
      expect(stored.secret_hash).not.toBe(sha256Hex(created.key));
      // No column of the row holds the secret in any form a copy of the database would reveal.
      expect(JSON.stringify(stored)).not.toContain(secret);
      expect(stored.org_id).toBe(orgId);
    });

    it('refuses anonymous callers of every management route with 401', async () => {
      const keyId = newId();
      const requests: InjectOptions[] = [
        { method: 'GET', url: keysUrl(orgId) },
        { method: 'POST', url: keysUrl(orgId), payload: { name: 'x', scopes: ['members:read'] } },
        { method: 'GET', url: keyUrl(orgId, keyId) },
        { method: 'POST', url: `${keyUrl(orgId, keyId)}/rotate`, payload: {} },
        { method: 'DELETE', url: keyUrl(orgId, keyId) },
      ];
      for (const request of requests) {
        const res = await app.inject(request);
        expectProblem(res, 401, 'UNAUTHENTICATED');
        expect(res.headers['www-authenticate']).toMatch(/^Bearer\b/);
      }
    });

    it('lets neither a member nor a viewer create, list, rotate or revoke keys', async () => {
      const existing = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
      const before = await storedKeyCount(app, orgId);
      for (const user of [member, viewer]) {
        expectDenied(
          await postKey(app, user.accessToken, orgId, { name: 'x', scopes: ['members:read'] }),
          'apikeys:create',
        );
        expectDenied(
          await app.inject({ method: 'GET', url: keysUrl(orgId), headers: bearer(user.accessToken) }),
          'apikeys:read',
        );
        expectDenied(await revoke(app, user.accessToken, orgId, existing.id), 'apikeys:revoke');
        expectDenied(await rotate(app, user.accessToken, orgId, existing.id), 'apikeys:rotate');
      }
      expect(await storedKeyCount(app, orgId)).toBe(before);
      expect((await listMembersWithKey(app, orgId, existing.key)).statusCode).toBe(200);
    });

    it("hides another organization's keys: its id in the path is 404, and a key id of another org is 404", async () => {
      const theirs = await createApiKey(app, stranger.accessToken, strangerOrgId, {
        scopes: ['members:read'],
      });
      expectProblem(
        await app.inject({ method: 'GET', url: keysUrl(strangerOrgId), headers: bearer(owner.accessToken) }),
        404,
        'ORG_NOT_FOUND',
      );
      expectProblem(await getKeyResponse(app, owner.accessToken, orgId, theirs.id), 404, 'API_KEY_NOT_FOUND');
      expectProblem(await revoke(app, owner.accessToken, orgId, theirs.id), 404, 'API_KEY_NOT_FOUND');
      expectProblem(await rotate(app, owner.accessToken, orgId, theirs.id), 404, 'API_KEY_NOT_FOUND');
      // Nothing happened to it.
      expect((await listMembersWithKey(app, strangerOrgId, theirs.key)).statusCode).toBe(200);
      expect((await storedKey(app, theirs.id))?.revoked_at).toBeNull();
      expect((await storedKey(app, theirs.id))?.rotated_at).toBeNull();
    });
  });

  describe('authenticating with a key', () => {
    it('authenticates by Authorization: Bearer and by X-API-Key alike', async () => {
      const created = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
      for (const via of ['bearer', 'x-api-key'] as const) {
        const res = await listMembersWithKey(app, orgId, created.key, { via });
        expect(res.statusCode).toBe(200);
        expect(res.headers['cache-control']).toBe('no-store');
        const userIds = Page(Member)
          .parse(res.json())
          .data.map((m) => m.userId);
        expect(userIds).toEqual(expect.arrayContaining([owner.userId, admin.userId, member.userId]));
      }
    });

    it('acts with exactly its scopes: members:read lists members but may not read keys, the org or invite', async () => {
      const created = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
      expect((await listMembersWithKey(app, orgId, created.key)).statusCode).toBe(200);
      expectDenied(await withKey(app, created.key, keysUrl(orgId)), 'apikeys:read');
      expectDenied(await withKey(app, created.key, `/api/v1/orgs/${orgId}`), 'org:read');
      expectDenied(
        await withKey(app, created.key, `/api/v1/orgs/${orgId}/invitations`, {
          method: 'POST',
          payload: { email: 'new@example.com', role: 'viewer' },
        }),
        'invitations:create',
      );
    });

    it("acts only in its own organization, even one its creator also owns: another org's id is 404", async () => {
      const created = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
      for (const other of [siblingOrgId, strangerOrgId, newId()]) {
        expectProblem(await listMembersWithKey(app, other, created.key), 404, 'ORG_NOT_FOUND');
      }
    });

    it('is refused by routes for signed-in people only, with 403 API_KEY_NOT_ALLOWED', async () => {
      const created = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
      expectProblem(await withKey(app, created.key, '/api/v1/me'), 403, 'API_KEY_NOT_ALLOWED');
      expectProblem(await withKey(app, created.key, '/api/v1/orgs'), 403, 'API_KEY_NOT_ALLOWED');
    });

    it('refuses a request that carries both an Authorization header and X-API-Key', async () => {
      const created = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
      for (const authorization of [`Bearer ${owner.accessToken}`, `Bearer ${created.key}`]) {
        const res = await app.inject({
          method: 'GET',
          url: membersUrl(orgId),
          headers: { authorization, 'x-api-key': created.key },
        });
        expectProblem(res, 400, 'BAD_REQUEST');
      }
    });

    it('refuses a key in the query string, even a valid one and even on public routes', async () => {
      const created = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
      const encoded = created.key.replaceAll('_', '%5F');
      const urls = [
        `/health/live?api_key=${created.key}`,
        `/health/live?api_key=${encoded}`,
        `/health/live?api_key=${created.key.replaceAll('_', '%5f')}`,
        `/health/live?x=1&token=${created.key}`,
        // Any letter may be percent-encoded, once or more, and a malformed escape elsewhere must not hide it.
        `/health/live?api_key=%70${created.key.slice(1)}`,
        `/health/live?api_key=%2570${created.key.slice(1)}`,
        `/health/live?bad=%zz&api_key=%70${created.key.slice(1)}`,
        `${membersUrl(orgId)}?api_key=${created.key}`,
        `${membersUrl(orgId)}?api_key=${encoded}`,
        '/api/v1/auth/login?api_key=plk_live_whatever',
      ];
      for (const url of urls) expectProblem(await app.inject({ method: 'GET', url }), 400, 'API_KEY_IN_URL');
      // Sending it properly as well does not make the leaked copy acceptable.
      expectProblem(
        await withKey(app, created.key, `${membersUrl(orgId)}?api_key=${created.key}`),
        400,
        'API_KEY_IN_URL',
      );
      // The same routes answer normally without the key in the URL.
      expect((await app.inject({ method: 'GET', url: '/health/live' })).statusCode).toBe(200);
    });

    it('refuses garbage, a foreign prefix, an unknown id and a wrong secret with 401 INVALID_API_KEY', async () => {
      const created = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
      const other = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
      // Used once first, so the key is cached: a wrong secret must be refused from the cache too.
      expect((await listMembersWithKey(app, orgId, created.key)).statusCode).toBe(200);
      const hex = created.id.replaceAll('-', '');
      const candidates = [
        'garbage',
        'plk_live_',
        'plk_live_garbage',
        `plk_test_${hex}_${secretOf(created)}`,
        `sk_live_${hex}_${secretOf(created)}`,
        `${created.key}x`,
        created.key.slice(1),
        `plk_live_${newId().replaceAll('-', '')}_${randomSecret()}`,
        `${created.prefix}_${randomSecret()}`,
        `${created.prefix}_${secretOf(other)}`,
      ];
      for (const candidate of candidates) {
        expectInvalidKey(await listMembersWithKey(app, orgId, candidate, { via: 'x-api-key' }));
        if (candidate.startsWith('plk_live_'))
          expectInvalidKey(await listMembersWithKey(app, orgId, candidate));
      }
      // Neither the key nor its sibling was harmed by the attempts.
      expect((await listMembersWithKey(app, orgId, created.key)).statusCode).toBe(200);
      expect((await listMembersWithKey(app, orgId, other.key)).statusCode).toBe(200);
    });

    it('treats a bearer credential with a foreign prefix as an access token, and refuses it with 401', async () => {
      const created = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
      const res = await listMembersWithKey(app, orgId, `plk_test_${created.key.slice('plk_live_'.length)}`);
      expectProblem(res, 401, 'INVALID_TOKEN');
      expect(res.headers['www-authenticate']).toMatch(/^Bearer\b/);
    });
  });

  describe('scopes', () => {
    it('refuses an unknown permission with 400 UNKNOWN_PERMISSION and creates nothing', async () => {
      const before = await storedKeyCount(app, orgId);
      const res = await postKey(app, owner.accessToken, orgId, {
        name: 'x',
        scopes: ['members:read', 'rockets:launch'],
      });
      expectProblem(res, 400, 'UNKNOWN_PERMISSION');
      expect(Problem.parse(res.json()).detail).toContain('rockets:launch');
      expect(await storedKeyCount(app, orgId)).toBe(before);
    });

    it('refuses malformed or missing scopes with 400 naming the field', async () => {
      const malformed = await postKey(app, owner.accessToken, orgId, { name: 'x', scopes: ['everything'] });
      expectProblem(malformed, 400, 'VALIDATION_FAILED');
      expect(Problem.parse(malformed.json()).errors?.map((e) => e.path)).toContain('body.scopes.0');
      expectProblem(
        await postKey(app, owner.accessToken, orgId, { name: 'x', scopes: [] }),
        400,
        'VALIDATION_FAILED',
      );
      expectProblem(await postKey(app, owner.accessToken, orgId, { name: 'x' }), 400, 'VALIDATION_FAILED');
    });

    it('refuses scopes beyond what the creator holds with 403 SCOPE_NOT_HELD (an admin cannot grant org:delete)', async () => {
      const before = await storedKeyCount(app, orgId);
      const res = await postKey(app, admin.accessToken, orgId, {
        name: 'x',
        scopes: ['members:read', 'org:delete'],
      });
      expectProblem(res, 403, 'SCOPE_NOT_HELD');
      expect(Problem.parse(res.json()).detail).toContain('org:delete');
      expect(await storedKeyCount(app, orgId)).toBe(before);
      // The owner holds it, so may.
      expect(
        (await postKey(app, owner.accessToken, orgId, { name: 'x', scopes: ['org:delete'] })).statusCode,
      ).toBe(201);
    });

    it('lets a custom role with apikeys:create make keys only with the permissions that role holds', async () => {
      const role = await app.inject({
        method: 'POST',
        url: `/api/v1/orgs/${orgId}/roles`,
        headers: bearer(owner.accessToken),
        payload: { name: 'keymaker', permissions: ['apikeys:create', 'members:read'] },
      });
      expect(role.statusCode).toBe(201);
      const keymaker = await addMember(app, owner.accessToken, orgId, 'keymaker@example.com', 'keymaker');

      const allowed = await postKey(app, keymaker.accessToken, orgId, {
        name: 'reader',
        scopes: ['members:read'],
      });
      expect(allowed.statusCode).toBe(201);
      const key = ApiKeyWithSecret.parse(allowed.json());
      expect(key.createdBy).toBe(keymaker.userId);
      expect((await listMembersWithKey(app, orgId, key.key)).statusCode).toBe(200);

      const before = await storedKeyCount(app, orgId);
      const beyond = await postKey(app, keymaker.accessToken, orgId, {
        name: 'too much',
        scopes: ['members:read', 'invitations:read'],
      });
      expectProblem(beyond, 403, 'SCOPE_NOT_HELD');
      expect(Problem.parse(beyond.json()).detail).toContain('invitations:read');
      expect(await storedKeyCount(app, orgId)).toBe(before);
    });

    it('refuses to let an API key create keys, even one with the apikeys:create scope', async () => {
      const minting = await createApiKey(app, owner.accessToken, orgId, {
        scopes: ['apikeys:create', 'members:read'],
      });
      const before = await storedKeyCount(app, orgId);
      for (const via of ['bearer', 'x-api-key'] as const) {
        const res = await withKey(app, minting.key, keysUrl(orgId), {
          via,
          method: 'POST',
          payload: { name: 'child', scopes: ['members:read'] },
        });
        expectProblem(res, 403, 'API_KEY_NOT_ALLOWED');
      }
      expect(await storedKeyCount(app, orgId)).toBe(before);
    });

    it("refuses to let an API key rotate keys, which would hand it another key's secret and scopes", async () => {
      const rotating = await createApiKey(app, owner.accessToken, orgId, { scopes: ['apikeys:rotate'] });
      const broad = await createApiKey(app, owner.accessToken, orgId, {
        scopes: ['apikeys:read', 'invitations:create', 'members:read', 'members:update'],
      });
      const res = await withKey(app, rotating.key, `${keyUrl(orgId, broad.id)}/rotate`, {
        method: 'POST',
        payload: {},
      });
      expectProblem(res, 403, 'API_KEY_NOT_ALLOWED');
      expect((await storedKey(app, broad.id))?.rotated_at).toBeNull();
    });

    it('refuses to let a member rotate a key whose scopes they do not hold themselves', async () => {
      // Rotation hands the caller the key's new secret: it must not become a way to obtain scopes one could
      // not have put on a key of one's own.
      const role = await app.inject({
        method: 'POST',
        url: `/api/v1/orgs/${orgId}/roles`,
        headers: bearer(owner.accessToken),
        payload: { name: 'rotator', permissions: ['apikeys:rotate', 'members:read'] },
      });
      expect(role.statusCode).toBe(201);
      const rotator = await addMember(app, owner.accessToken, orgId, 'rotator@example.com', 'rotator');
      const broad = await createApiKey(app, owner.accessToken, orgId, {
        scopes: ['invitations:create', 'members:read'],
      });
      const res = await rotate(app, rotator.accessToken, orgId, broad.id);
      expectProblem(res, 403, 'SCOPE_NOT_HELD');
      expect((await storedKey(app, broad.id))?.rotated_at).toBeNull();
    });
  });

  describe('expiry', () => {
    it('refuses an expiry in the past, or now, with 400 naming body.expiresAt, and creates nothing', async () => {
      const before = await storedKeyCount(app, orgId);
      for (const expiresAt of ['2030-03-04T08:59:59.000Z', START, '2030-03-04T10:00:00.000+02:00']) {
        const res = await postKey(app, owner.accessToken, orgId, {
          name: 'x',
          scopes: ['members:read'],
          expiresAt,
        });
        expectProblem(res, 400, 'VALIDATION_FAILED');
        expect(Problem.parse(res.json()).errors?.map((e) => e.path)).toEqual(['body.expiresAt']);
      }
      expectProblem(
        await postKey(app, owner.accessToken, orgId, {
          name: 'x',
          scopes: ['members:read'],
          expiresAt: 'tomorrow',
        }),
        400,
        'VALIDATION_FAILED',
      );
      expect(await storedKeyCount(app, orgId)).toBe(before);
    });

    it('stores a future expiry given with an offset as the same instant in UTC', async () => {
      const created = await createApiKey(app, owner.accessToken, orgId, {
        scopes: ['members:read'],
        expiresAt: '2030-03-05T11:30:00+02:00',
      });
      expect(created.expiresAt).toBe('2030-03-05T09:30:00.000Z');
      expect(created.status).toBe('active');
    });
  });

  describe('revocation', () => {
    it('stops the key on the very next request, shows it revoked, and answers 204 to a second revocation', async () => {
      const created = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
      const kept = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
      // Used first, so that the verification is cached: revocation must reach the cache, not wait for it.
      expect((await listMembersWithKey(app, orgId, created.key)).statusCode).toBe(200);

      expect((await revoke(app, admin.accessToken, orgId, created.id)).statusCode).toBe(204);
      expectInvalidKey(await listMembersWithKey(app, orgId, created.key));
      expectInvalidKey(await listMembersWithKey(app, orgId, created.key, { via: 'x-api-key' }));

      const shown = await getKey(app, owner.accessToken, orgId, created.id);
      expect(shown.status).toBe('revoked');
      expect(shown.revokedAt).toBe(START);
      expect(await listedKeyIds(app, owner.accessToken, orgId)).toContain(created.id);

      expect((await revoke(app, admin.accessToken, orgId, created.id)).statusCode).toBe(204);
      expect((await getKey(app, owner.accessToken, orgId, created.id)).revokedAt).toBe(START);
      expectInvalidKey(await listMembersWithKey(app, orgId, created.key));
      // Only that key.
      expect((await listMembersWithKey(app, orgId, kept.key)).statusCode).toBe(200);
    });

    it('answers 404 for a key id that does not exist, and 400 for one that is not an id', async () => {
      expectProblem(await revoke(app, owner.accessToken, orgId, newId()), 404, 'API_KEY_NOT_FOUND');
      expectProblem(await getKeyResponse(app, owner.accessToken, orgId, newId()), 404, 'API_KEY_NOT_FOUND');
      expectProblem(await revoke(app, owner.accessToken, orgId, 'not-an-id'), 400, 'VALIDATION_FAILED');
    });

    it('refuses an upper-case spelling of a key id, which would revoke the key without forgetting it', async () => {
      // PostgreSQL compares UUIDs case-insensitively while the cache is keyed by the canonical id: accepting
      // another spelling would revoke the row and leave the cached key working until its entry expired.
      const created = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
      expect((await listMembersWithKey(app, orgId, created.key)).statusCode).toBe(200);
      expectProblem(
        await revoke(app, owner.accessToken, orgId, created.id.toUpperCase()),
        400,
        'VALIDATION_FAILED',
      );
      expect((await storedKey(app, created.id))?.revoked_at).toBeNull();
      expect((await revoke(app, owner.accessToken, orgId, created.id)).statusCode).toBe(204);
      expectInvalidKey(await listMembersWithKey(app, orgId, created.key));
    });

    it('makes every key of a deleted organization fail at once', async () => {
      const doomed = await createOrg(app, owner.accessToken, 'Short Lived');
      const created = await createApiKey(app, owner.accessToken, doomed.id, { scopes: ['members:read'] });
      expect((await listMembersWithKey(app, doomed.id, created.key)).statusCode).toBe(200);

      const del = await app.inject({
        method: 'DELETE',
        url: `/api/v1/orgs/${doomed.id}`,
        headers: bearer(owner.accessToken),
      });
      expect(del.statusCode).toBe(204);
      expectInvalidKey(await listMembersWithKey(app, doomed.id, created.key));
      expect(await storedKey(app, created.id)).toBeUndefined();
    });
  });

  describe('rotation', () => {
    it('issues a new secret for the same key id, the old one stopping at once when the grace period is 0', async () => {
      const created = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
      expect((await listMembersWithKey(app, orgId, created.key)).statusCode).toBe(200);

      const res = await rotate(app, admin.accessToken, orgId, created.id, { gracePeriodSeconds: 0 });
      expect(res.statusCode).toBe(200);
      const rotated = ApiKeyWithSecret.parse(res.json());
      expect(rotated.id).toBe(created.id);
      expect(rotated.prefix).toBe(created.prefix);
      expect(rotated.key).not.toBe(created.key);
      expect(rotated.key).toMatch(/^plk_live_[0-9a-f]{32}_[A-Za-z0-9_-]{43}$/);
      expect(rotated.rotatedAt).toBe(START);
      expect(rotated.previousSecretExpiresAt).toBeNull();
      expect(rotated.scopes).toEqual(created.scopes);

      expectInvalidKey(await listMembersWithKey(app, orgId, created.key));
      expect((await listMembersWithKey(app, orgId, rotated.key)).statusCode).toBe(200);
      // The new secret is shown once as well.
      const shown = await app.inject({
        method: 'GET',
        url: keyUrl(orgId, created.id),
        headers: bearer(owner.accessToken),
      });
      expect(shown.body).not.toContain(secretOf(rotated));
    });

    it('ends a secret replaced by an earlier rotation at once when the key is rotated again', async () => {
      const first = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
      const second = ApiKeyWithSecret.parse((await rotate(app, owner.accessToken, orgId, first.id)).json());
      expect((await listMembersWithKey(app, orgId, first.key)).statusCode).toBe(200);
      const third = ApiKeyWithSecret.parse((await rotate(app, owner.accessToken, orgId, first.id)).json());
      expectInvalidKey(await listMembersWithKey(app, orgId, first.key));
      expect((await listMembersWithKey(app, orgId, second.key)).statusCode).toBe(200);
      expect((await listMembersWithKey(app, orgId, third.key)).statusCode).toBe(200);
    });

    it('refuses to rotate a revoked key with 404, and the revoked key stays dead', async () => {
      const created = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
      expect((await revoke(app, owner.accessToken, orgId, created.id)).statusCode).toBe(204);
      expectProblem(await rotate(app, owner.accessToken, orgId, created.id), 404, 'API_KEY_NOT_FOUND');
      expectInvalidKey(await listMembersWithKey(app, orgId, created.key));
      expect((await storedKey(app, created.id))?.rotated_at).toBeNull();
    });

    it('refuses a negative or fractional grace period with 400, changing nothing', async () => {
      const created = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
      for (const gracePeriodSeconds of [-1, 1.5, '60']) {
        expectProblem(
          await rotate(app, owner.accessToken, orgId, created.id, { gracePeriodSeconds }),
          400,
          'VALIDATION_FAILED',
        );
      }
      expect((await listMembersWithKey(app, orgId, created.key)).statusCode).toBe(200);
      expect((await storedKey(app, created.id))?.rotated_at).toBeNull();
    });
  });

  describe('IP allowlist', () => {
    it('accepts an IPv4 range: from inside it works, from outside 403 API_KEY_IP_NOT_ALLOWED', async () => {
      const created = await createApiKey(app, owner.accessToken, orgId, {
        scopes: ['members:read'],
        allowedIps: ['10.1.0.0/16'],
      });
      expect(created.allowedIps).toEqual(['10.1.0.0/16']);
      for (const remoteAddress of ['10.1.2.3', '10.1.255.254', '::ffff:10.1.2.3']) {
        expect((await listMembersWithKey(app, orgId, created.key, { remoteAddress })).statusCode).toBe(200);
      }
      for (const remoteAddress of ['192.0.2.1', '10.2.0.1', '127.0.0.1', '2001:db8::1']) {
        expectProblem(
          await listMembersWithKey(app, orgId, created.key, { remoteAddress }),
          403,
          'API_KEY_IP_NOT_ALLOWED',
        );
      }
      expect((await getKey(app, owner.accessToken, orgId, created.id)).allowedIps).toEqual(['10.1.0.0/16']);
    });

    it('accepts IPv6 ranges and single addresses of both families', async () => {
      const created = await createApiKey(app, owner.accessToken, orgId, {
        scopes: ['members:read'],
        allowedIps: ['2001:db8:abcd::/48', '203.0.113.7'],
      });
      for (const remoteAddress of ['2001:db8:abcd:12::1', '2001:db8:abcd::', '203.0.113.7']) {
        expect((await listMembersWithKey(app, orgId, created.key, { remoteAddress })).statusCode).toBe(200);
      }
      for (const remoteAddress of ['2001:db8:abce::1', '203.0.113.8', '10.1.2.3']) {
        expectProblem(
          await listMembersWithKey(app, orgId, created.key, { remoteAddress }),
          403,
          'API_KEY_IP_NOT_ALLOWED',
        );
      }
    });

    it('answers a wrong secret from outside the allowlist with 401, revealing nothing about the allowlist', async () => {
      const created = await createApiKey(app, owner.accessToken, orgId, {
        scopes: ['members:read'],
        allowedIps: ['10.1.0.0/16'],
      });
      expectInvalidKey(
        await listMembersWithKey(app, orgId, `${created.prefix}_${randomSecret()}`, {
          remoteAddress: '192.0.2.1',
        }),
      );
    });

    it('refuses an entry that is neither an address nor a CIDR range with 400 naming its index', async () => {
      const before = await storedKeyCount(app, orgId);
      const cases: [string[], string][] = [
        [['not-an-ip'], 'body.allowedIps.0'],
        [['10.0.0.0/8', '10.0.0.0/33'], 'body.allowedIps.1'],
        [['2001:db8::/129'], 'body.allowedIps.0'],
        [['10.0.0.256'], 'body.allowedIps.0'],
      ];
      for (const [allowedIps, path] of cases) {
        const res = await postKey(app, owner.accessToken, orgId, {
          name: 'x',
          scopes: ['members:read'],
          allowedIps,
        });
        expectProblem(res, 400, 'VALIDATION_FAILED');
        expect(Problem.parse(res.json()).errors?.map((e) => e.path)).toEqual([path]);
      }
      expect(await storedKeyCount(app, orgId)).toBe(before);
    });
  });
});

/** `GET /orgs/{orgId}/apikeys/{keyId}` as `accessToken`, returning the raw response. */
function getKeyResponse(app: PlinthApp, accessToken: string, orgId: string, keyId: string) {
  return app.inject({ method: 'GET', url: keyUrl(orgId, keyId), headers: bearer(accessToken) });
}

describe.each(testDialects)('API keys as time passes (%s)', (dialect) => {
  /** An app on a fake clock with an owner, an organization and a fresh sign-in helper (tokens expire too). */
  async function setup(env: Record<string, string> = {}) {
    const clock = createFakeClock(START);
    const app = await startTestApp(dialect, cleanups, { env: { ...baseEnv, ...env }, clock });
    const owner = await signedInUser(app, 'owner@example.com');
    const org = await createOrg(app, owner.accessToken);
    // Access tokens last minutes; after the clock jumps hours, the owner signs in again.
    const ownerToken = async () => (await login(app, owner.email, PASSWORD)).accessToken;
    return { app, clock, owner, orgId: org.id, ownerToken };
  }

  it('accepts a key until its expiry and refuses it from then on, showing it expired', async () => {
    const { app, clock, owner, orgId, ownerToken } = await setup();
    const expiresAt = new Date(clock.now().getTime() + HOUR).toISOString();
    const created = await createApiKey(app, owner.accessToken, orgId, {
      scopes: ['members:read'],
      expiresAt,
    });
    expect(created.expiresAt).toBe(expiresAt);

    clock.advance(HOUR - SECOND);
    expect((await listMembersWithKey(app, orgId, created.key)).statusCode).toBe(200);
    expect((await getKey(app, await ownerToken(), orgId, created.id)).status).toBe('active');

    clock.advance(SECOND);
    expectInvalidKey(await listMembersWithKey(app, orgId, created.key));
    expectInvalidKey(await listMembersWithKey(app, orgId, created.key, { via: 'x-api-key' }));
    expect((await getKey(app, await ownerToken(), orgId, created.id)).status).toBe('expired');
  });

  it('keeps the old secret working for 24 hours after a rotation by default, then only the new one', async () => {
    const { app, clock, owner, orgId, ownerToken } = await setup();
    const created = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
    const res = await rotate(app, owner.accessToken, orgId, created.id);
    expect(res.statusCode).toBe(200);
    const rotated = ApiKeyWithSecret.parse(res.json());
    expect(rotated.previousSecretExpiresAt).toBe(new Date(clock.now().getTime() + 24 * HOUR).toISOString());

    expect((await listMembersWithKey(app, orgId, created.key)).statusCode).toBe(200);
    expect((await listMembersWithKey(app, orgId, rotated.key)).statusCode).toBe(200);

    clock.advance(24 * HOUR - SECOND);
    expect((await listMembersWithKey(app, orgId, created.key)).statusCode).toBe(200);
    expect((await listMembersWithKey(app, orgId, rotated.key)).statusCode).toBe(200);

    clock.advance(SECOND);
    expectInvalidKey(await listMembersWithKey(app, orgId, created.key));
    expect((await listMembersWithKey(app, orgId, rotated.key)).statusCode).toBe(200);
    expect((await getKey(app, await ownerToken(), orgId, created.id)).status).toBe('active');
  });

  it('uses API_KEY_ROTATION_GRACE_SECONDS as the default grace, and a gracePeriodSeconds in the body over it', async () => {
    const { app, clock, owner, orgId } = await setup({ API_KEY_ROTATION_GRACE_SECONDS: '600' });
    const byDefault = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
    const byBody = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
    const rotatedByDefault = ApiKeyWithSecret.parse(
      (await rotate(app, owner.accessToken, orgId, byDefault.id)).json(),
    );
    const rotatedByBody = ApiKeyWithSecret.parse(
      (await rotate(app, owner.accessToken, orgId, byBody.id, { gracePeriodSeconds: 60 })).json(),
    );
    expect(rotatedByDefault.previousSecretExpiresAt).toBe(
      new Date(clock.now().getTime() + 10 * MINUTE).toISOString(),
    );
    expect(rotatedByBody.previousSecretExpiresAt).toBe(
      new Date(clock.now().getTime() + MINUTE).toISOString(),
    );

    clock.advance(MINUTE - SECOND);
    expect((await listMembersWithKey(app, orgId, byBody.key)).statusCode).toBe(200);
    clock.advance(SECOND);
    expectInvalidKey(await listMembersWithKey(app, orgId, byBody.key));
    expect((await listMembersWithKey(app, orgId, byDefault.key)).statusCode).toBe(200);

    clock.advance(9 * MINUTE - SECOND);
    expect((await listMembersWithKey(app, orgId, byDefault.key)).statusCode).toBe(200);
    clock.advance(SECOND);
    expectInvalidKey(await listMembersWithKey(app, orgId, byDefault.key));
    for (const key of [rotatedByDefault, rotatedByBody]) {
      expect((await listMembersWithKey(app, orgId, key.key)).statusCode).toBe(200);
    }
  });
});

/** One database shared by several apps (replicas, or one app before and after a restart). */
async function sharedDatabase(dialect: Dialect): Promise<TestDatabase> {
  const database = await createTestDatabase(dialect);
  cleanups.push(() => database.drop());
  return database;
}

/** What every replica of one installation shares: the signing secret and the encryption key. */
function installationEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...baseEnv,
    JWT_SECRET: randomBytes(32).toString('base64url'),
    ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    ...extra,
  };
}

/** Starts an app on `database`; it is closed after the test unless the test closes it first. */
async function startApp(
  database: TestDatabase,
  env: Record<string, string>,
  clock: FakeClock,
): Promise<PlinthApp> {
  const app = await buildApp(testConfig(database, env), { clock });
  let closed = false;
  app.addHook('onClose', async () => {
    closed = true;
  });
  cleanups.push(async () => {
    if (!closed) await app.close();
  });
  return app;
}

describe.each(testDialects)('API key usage (%s)', (dialect) => {
  it('counts uses in memory and writes them in one batch a few seconds later, not on each request', async () => {
    // The usage flush runs on a 5-second interval: fake only that timer (everything else, database I/O
    // included, runs on real time), so the test decides when the interval fires.
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    try {
      const clock = createFakeClock(START);
      const app = await startTestApp(dialect, cleanups, { env: baseEnv, clock });
      const owner = await signedInUser(app, 'owner@example.com');
      const { id: orgId } = await createOrg(app, owner.accessToken);
      const created = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
      const unused = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });

      const uses = 3;
      for (let i = 0; i < uses; i++) {
        clock.advance(SECOND);
        expect((await listMembersWithKey(app, orgId, created.key)).statusCode).toBe(200);
      }
      const lastUse = clock.now().toISOString();
      // Nothing written yet: a request does not cost a database write.
      expect(await storedKey(app, created.id)).toMatchObject({ usage_count: 0, last_used_at: null });

      clock.advance(MINUTE);
      await vi.advanceTimersByTimeAsync(5 * SECOND);
      const written = await eventually(
        async () => Number((await storedKey(app, created.id))?.usage_count) === uses,
      );
      expect(written).toBe(true);

      const shown = await getKey(app, owner.accessToken, orgId, created.id);
      expect(shown.usageCount).toBe(uses);
      expect(shown.lastUsedAt).toBe(lastUse);
      expect(await getKey(app, owner.accessToken, orgId, unused.id)).toMatchObject({
        usageCount: 0,
        lastUsedAt: null,
      });

      // Later uses add to the count rather than replacing it.
      expect((await listMembersWithKey(app, orgId, created.key, { via: 'x-api-key' })).statusCode).toBe(200);
      await vi.advanceTimersByTimeAsync(5 * SECOND);
      expect(
        await eventually(async () => Number((await storedKey(app, created.id))?.usage_count) === uses + 1),
      ).toBe(true);
    } finally {
      vi.useRealTimers();
    }
  });

  it('writes the uses still counted in memory when the server shuts down', async () => {
    const clock = createFakeClock(START);
    const database = await sharedDatabase(dialect);
    const env = installationEnv();
    const before = await startApp(database, env, clock);
    const owner = await signedInUser(before, 'owner@example.com');
    const { id: orgId } = await createOrg(before, owner.accessToken);
    const created = await createApiKey(before, owner.accessToken, orgId, { scopes: ['members:read'] });
    const uses = 4;
    for (let i = 0; i < uses; i++) {
      expect((await listMembersWithKey(before, orgId, created.key)).statusCode).toBe(200);
    }
    await before.close();

    const after = await startApp(database, env, clock);
    const token = (await login(after, owner.email, PASSWORD)).accessToken;
    const shown = await getKey(after, token, orgId, created.id);
    expect(shown.usageCount).toBe(uses);
    expect(shown.lastUsedAt).toBe(START);
  });
});

// Replicas share the database and Redis; a rotation or revocation on one reaches the others' caches through
// Redis pub/sub.
if (testRedisUrl) {
  const redisUrl = testRedisUrl;

  describe.each(testDialects)('API keys across replicas through Redis (%s)', (dialect) => {
    async function twoReplicas() {
      const clock = createFakeClock(START);
      const database = await sharedDatabase(dialect);
      const env = installationEnv({ REDIS_URL: redisUrl });
      const a = await startApp(database, env, clock);
      const b = await startApp(database, env, clock);
      const owner = await signedInUser(a, 'owner@example.com');
      const { id: orgId } = await createOrg(a, owner.accessToken);
      return { a, b, owner, orgId };
    }

    it('refuses on replica B, within a short wait, a key revoked on replica A', async () => {
      const { a, b, owner, orgId } = await twoReplicas();
      const created = await createApiKey(a, owner.accessToken, orgId, { scopes: ['members:read'] });
      const kept = await createApiKey(a, owner.accessToken, orgId, { scopes: ['members:read'] });
      // B verifies (and caches) both keys first.
      expect((await listMembersWithKey(b, orgId, created.key)).statusCode).toBe(200);
      expect((await listMembersWithKey(b, orgId, kept.key)).statusCode).toBe(200);

      expect((await revoke(a, owner.accessToken, orgId, created.id)).statusCode).toBe(204);
      expectInvalidKey(await listMembersWithKey(a, orgId, created.key));
      expect(
        await eventually(async () => (await listMembersWithKey(b, orgId, created.key)).statusCode === 401),
      ).toBe(true);
      expectInvalidKey(await listMembersWithKey(b, orgId, created.key));
      expect((await listMembersWithKey(b, orgId, kept.key)).statusCode).toBe(200);
    });

    it('refuses on replica B an old secret rotated away on A without a grace period, and accepts the new one', async () => {
      const { a, b, owner, orgId } = await twoReplicas();
      const created = await createApiKey(a, owner.accessToken, orgId, { scopes: ['members:read'] });
      expect((await listMembersWithKey(b, orgId, created.key)).statusCode).toBe(200);

      const res = await rotate(a, owner.accessToken, orgId, created.id, { gracePeriodSeconds: 0 });
      const rotated = ApiKeyWithSecret.parse(res.json());
      expect(
        await eventually(async () => (await listMembersWithKey(b, orgId, created.key)).statusCode === 401),
      ).toBe(true);
      expect((await listMembersWithKey(b, orgId, rotated.key)).statusCode).toBe(200);
    });

    it('refuses on replica B the keys of an organization deleted on A', async () => {
      const { a, b, owner, orgId } = await twoReplicas();
      const created = await createApiKey(a, owner.accessToken, orgId, { scopes: ['members:read'] });
      expect((await listMembersWithKey(b, orgId, created.key)).statusCode).toBe(200);

      const del = await a.inject({
        method: 'DELETE',
        url: `/api/v1/orgs/${orgId}`,
        headers: bearer(owner.accessToken),
      });
      expect(del.statusCode).toBe(204);
      expect(
        await eventually(async () => (await listMembersWithKey(b, orgId, created.key)).statusCode === 401),
      ).toBe(true);
      expectInvalidKey(await listMembersWithKey(b, orgId, created.key));
    });
  });
}
