import { MyOrganization, Organization, Page, Problem } from '@plinth/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PlinthApp } from '../../app.ts';
import {
  bearer,
  cleanupAfterEach,
  createOperator,
  expectProblem,
  login,
  STRONG_PASSWORDS,
  startTestApp,
} from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { buildTestApp } from '../../test/harness.ts';
import { addMember, createApiKey, createOrg, signedInUser, type TestUser } from '../../test/org-helpers.ts';

// Organizations are the tenants: whoever creates one owns it, members see only their own, and only the
// installation's operators (superadmins) choose an organization's plan, since plans set rate limits and quotas.

/** Accounts sign in without verifying their address first: these tests are about organizations, not sign-up. */
const ENV = { REQUIRE_EMAIL_VERIFICATION: 'false' };
const [OPERATOR_PASSWORD = ''] = STRONG_PASSWORDS;

const MyOrgsPage = Page(MyOrganization);
const OrgsPage = Page(Organization);

describe.each(testDialects)('organizations (%s)', (dialect) => {
  // One app for the tests that do not depend on its configuration: each uses its own people and organizations.
  let app: PlinthApp;
  beforeAll(async () => {
    app = await buildTestApp(dialect, { env: ENV });
  });
  afterAll(async () => {
    await app?.close();
  });
  const cleanups = cleanupAfterEach();

  // The app is shared, so names that must be unique (addresses, slugs) carry a number no other test uses.
  let serial = 0;
  const unique = () => ++serial;
  const address = (label: string) => `${label}-${unique()}@example.com`;
  /** A new signed-in account with an address no other test uses. */
  const person = (label: string): Promise<TestUser> => signedInUser(app, address(label));

  const post = (token: string, payload: Record<string, unknown>) =>
    app.inject({ method: 'POST', url: '/api/v1/orgs', headers: bearer(token), payload });
  const getOrg = (token: string, orgId: string) =>
    app.inject({ method: 'GET', url: `/api/v1/orgs/${orgId}`, headers: bearer(token) });
  const patchOrg = (token: string, orgId: string, payload: Record<string, unknown>) =>
    app.inject({ method: 'PATCH', url: `/api/v1/orgs/${orgId}`, headers: bearer(token), payload });
  const deleteOrg = (token: string, orgId: string) =>
    app.inject({ method: 'DELETE', url: `/api/v1/orgs/${orgId}`, headers: bearer(token) });
  const myOrgs = async (token: string, query = '') => {
    const res = await app.inject({ method: 'GET', url: `/api/v1/orgs${query}`, headers: bearer(token) });
    expect(res.statusCode).toBe(200);
    return MyOrgsPage.parse(res.json());
  };
  const orgRow = (orgId: string) =>
    app.database.db.selectFrom('organizations').selectAll().where('id', '=', orgId).executeTakeFirst();
  const orgCount = async () =>
    Number(
      (
        await app.database.db
          .selectFrom('organizations')
          .select((eb) => eb.fn.countAll().as('n'))
          .executeTakeFirstOrThrow()
      ).n,
    );

  describe('POST /orgs', () => {
    it('makes the creator the owner, derives the slug from the name without accents, and uses the first plan', async () => {
      const ada = await person('ada');

      const res = await post(ada.accessToken, { name: 'Café Zürich Logistics' });

      expect(res.statusCode).toBe(201);
      const org = Organization.parse(res.json());
      expect(org).toMatchObject({
        name: 'Café Zürich Logistics',
        slug: 'cafe-zurich-logistics',
        plan: 'free',
      });
      expect((await myOrgs(ada.accessToken)).data).toEqual([{ ...org, role: 'owner' }]);
      const members = await app.inject({
        method: 'GET',
        url: `/api/v1/orgs/${org.id}/members`,
        headers: bearer(ada.accessToken),
      });
      expect(members.json()).toMatchObject({ data: [{ userId: ada.userId, role: 'owner' }] });
    });

    it('takes an explicit free slug, and refuses one another organization uses with 409 SLUG_TAKEN', async () => {
      const ada = await person('ada');
      const grace = await person('grace');
      const slug = `northwind-${unique()}`;
      const taken = await post(ada.accessToken, { name: 'Northwind', slug });
      expect(taken.statusCode).toBe(201);
      expect(Organization.parse(taken.json()).slug).toBe(slug);
      const before = await orgCount();

      expectProblem(await post(grace.accessToken, { name: 'Another Northwind', slug }), 409, 'SLUG_TAKEN');

      expect(await orgCount()).toBe(before);
      expect((await myOrgs(grace.accessToken)).data).toEqual([]);
    });

    it('gives a slug derived from a name already in use a random suffix instead of failing', async () => {
      const ada = await person('ada');
      const grace = await person('grace');
      const n = unique();
      const first = Organization.parse((await post(ada.accessToken, { name: `Blue Harbor ${n}` })).json());

      const res = await post(grace.accessToken, { name: `Blue Harbor ${n}` });

      expect(res.statusCode).toBe(201);
      const second = Organization.parse(res.json());
      expect(first.slug).toBe(`blue-harbor-${n}`);
      expect(second.slug).toMatch(new RegExp(`^${first.slug}-[0-9a-f]{8}$`));
    });

    it('refuses privileged fields in the body (plan, orgId, ownerId, role) and creates nothing', async () => {
      const ada = await person('ada');
      const grace = await person('grace');
      const before = await orgCount();

      for (const extra of [
        { plan: 'enterprise' },
        { orgId: '00000000-0000-7000-8000-000000000000' },
        { ownerId: grace.userId },
        { role: 'viewer' },
      ]) {
        expectProblem(await post(ada.accessToken, { name: 'Sneaky', ...extra }), 400, 'VALIDATION_FAILED');
      }

      expect(await orgCount()).toBe(before);
      expect((await myOrgs(ada.accessToken)).data).toEqual([]);
    });

    it('refuses an anonymous caller with 401 and an API key with 403 API_KEY_NOT_ALLOWED', async () => {
      const ada = await person('ada');
      const org = await createOrg(app, ada.accessToken, 'Keyed Org');
      const { key } = await createApiKey(app, ada.accessToken, org.id, { scopes: ['org:read'] });
      const before = await orgCount();

      expectProblem(
        await app.inject({ method: 'POST', url: '/api/v1/orgs', payload: { name: 'Anonymous' } }),
        401,
        'UNAUTHENTICATED',
      );
      expectProblem(await post(key, { name: 'By a key' }), 403, 'API_KEY_NOT_ALLOWED');
      expectProblem(
        await app.inject({
          method: 'POST',
          url: '/api/v1/orgs',
          headers: { 'x-api-key': key },
          payload: { name: 'By a key' },
        }),
        403,
        'API_KEY_NOT_ALLOWED',
      );

      expect(await orgCount()).toBe(before);
      // The key itself is good: it reads its own organization.
      expect((await getOrg(key, org.id)).statusCode).toBe(200);
    });
  });

  describe('GET /orgs', () => {
    it('lists only the organizations the caller belongs to, with the caller’s role, page by page', async () => {
      const ada = await person('ada');
      const grace = await person('grace');
      const alpha = await createOrg(app, ada.accessToken, 'Alpha Freight');
      const bravo = await createOrg(app, ada.accessToken, 'Bravo Freight');
      const charlie = await createOrg(app, ada.accessToken, 'Charlie Freight');
      await createOrg(app, grace.accessToken, 'Delta Freight');
      const linus = await addMember(app, ada.accessToken, alpha.id, address('linus'), 'viewer');
      const echo = await createOrg(app, linus.accessToken, 'Echo Freight');

      const first = await myOrgs(ada.accessToken, '?limit=2');
      expect(first.data.map((o) => [o.name, o.role])).toEqual([
        ['Alpha Freight', 'owner'],
        ['Bravo Freight', 'owner'],
      ]);
      expect(first.nextCursor).not.toBeNull();
      const second = await myOrgs(ada.accessToken, `?limit=2&cursor=${first.nextCursor}`);
      expect(second.data.map((o) => o.id)).toEqual([charlie.id]);
      expect(second.nextCursor).toBeNull();
      expect([...first.data, ...second.data].map((o) => o.id)).toEqual([alpha.id, bravo.id, charlie.id]);

      expect((await myOrgs(linus.accessToken)).data.map((o) => [o.id, o.role])).toEqual([
        [alpha.id, 'viewer'],
        [echo.id, 'owner'],
      ]);
    });

    it('refuses an anonymous caller with 401 and an API key with 403 API_KEY_NOT_ALLOWED', async () => {
      const ada = await person('ada');
      const org = await createOrg(app, ada.accessToken, 'Listed Org');
      const { key } = await createApiKey(app, ada.accessToken, org.id, { scopes: ['org:read'] });

      expectProblem(await app.inject({ method: 'GET', url: '/api/v1/orgs' }), 401, 'UNAUTHENTICATED');
      expectProblem(
        await app.inject({ method: 'GET', url: '/api/v1/orgs', headers: bearer(key) }),
        403,
        'API_KEY_NOT_ALLOWED',
      );
    });
  });

  describe('GET, PATCH and DELETE /orgs/{orgId}', () => {
    it('renames an organization and changes its slug, refusing a slug already taken', async () => {
      const ada = await person('ada');
      const org = await createOrg(app, ada.accessToken, 'Old Name');
      const other = await createOrg(app, ada.accessToken, 'Other Name');
      const slug = `new-name-${unique()}`;

      const res = await patchOrg(ada.accessToken, org.id, { name: 'New Name', slug });

      expect(res.statusCode).toBe(200);
      expect(Organization.parse(res.json())).toMatchObject({
        id: org.id,
        name: 'New Name',
        slug,
        plan: org.plan,
      });
      expect(Organization.parse((await getOrg(ada.accessToken, org.id)).json()).name).toBe('New Name');

      expectProblem(await patchOrg(ada.accessToken, org.id, { slug: other.slug }), 409, 'SLUG_TAKEN');
      expect((await orgRow(org.id))?.slug).toBe(slug);
    });

    it('refuses unknown or privileged fields in a PATCH (orgId, plan, ownerId, role) and changes nothing', async () => {
      const ada = await person('ada');
      const grace = await person('grace');
      const org = await createOrg(app, ada.accessToken, 'Steady Org');
      const other = await createOrg(app, grace.accessToken, 'Elsewhere Org');
      const before = await orgRow(org.id);

      for (const extra of [
        { orgId: other.id },
        { plan: 'enterprise' },
        { ownerId: grace.userId },
        { role: 'owner' },
      ]) {
        expectProblem(
          await patchOrg(ada.accessToken, org.id, { name: 'Hijacked', ...extra }),
          400,
          'VALIDATION_FAILED',
        );
      }

      expect(await orgRow(org.id)).toEqual(before);
      expect(await orgRow(other.id)).toMatchObject({ name: 'Elsewhere Org' });
    });

    it('answers 401 without a token and 404 ORG_NOT_FOUND to someone outside the organization', async () => {
      const ada = await person('ada');
      const mallory = await person('mallory');
      const org = await createOrg(app, ada.accessToken, 'Private Org');
      const before = await orgRow(org.id);

      expectProblem(
        await app.inject({ method: 'GET', url: `/api/v1/orgs/${org.id}` }),
        401,
        'UNAUTHENTICATED',
      );
      expectProblem(await getOrg(mallory.accessToken, org.id), 404, 'ORG_NOT_FOUND');
      expectProblem(await patchOrg(mallory.accessToken, org.id, { name: 'Mine' }), 404, 'ORG_NOT_FOUND');
      expectProblem(await deleteOrg(mallory.accessToken, org.id), 404, 'ORG_NOT_FOUND');

      expect(await orgRow(org.id)).toEqual(before);
    });

    it('deletes the organization with its memberships, roles, invitations and API keys when its owner asks', async () => {
      const ada = await person('ada');
      const org = await createOrg(app, ada.accessToken, 'Doomed Org');
      const keep = await createOrg(app, ada.accessToken, 'Surviving Org');
      const member = await addMember(app, ada.accessToken, org.id, address('member'), 'member');
      const role = await app.inject({
        method: 'POST',
        url: `/api/v1/orgs/${org.id}/roles`,
        headers: bearer(ada.accessToken),
        payload: { name: 'dispatcher', permissions: ['org:read'] },
      });
      expect(role.statusCode).toBe(201);
      const invitation = await app.inject({
        method: 'POST',
        url: `/api/v1/orgs/${org.id}/invitations`,
        headers: bearer(ada.accessToken),
        payload: { email: address('invitee'), role: 'viewer' },
      });
      expect(invitation.statusCode).toBe(201);
      const { key } = await createApiKey(app, ada.accessToken, org.id, { scopes: ['org:read'] });
      const keptKey = await createApiKey(app, ada.accessToken, keep.id, { scopes: ['org:read'] });
      // Two invitations: the member's, accepted, and one still pending.
      expect(await ownedRows(org.id)).toEqual({ memberships: 2, roles: 1, invitations: 2, apiKeys: 1 });

      const res = await deleteOrg(ada.accessToken, org.id);

      expect(res.statusCode).toBe(204);
      expect(await orgRow(org.id)).toBeUndefined();
      expect(await ownedRows(org.id)).toEqual({ memberships: 0, roles: 0, invitations: 0, apiKeys: 0 });
      expectProblem(await getOrg(ada.accessToken, org.id), 404, 'ORG_NOT_FOUND');
      expectProblem(await getOrg(member.accessToken, org.id), 404, 'ORG_NOT_FOUND');
      expect((await myOrgs(member.accessToken)).data).toEqual([]);
      expectProblem(await getOrg(key, org.id), 401, 'INVALID_API_KEY');
      // Only that organization: the owner's other one and its key are untouched.
      expect((await getOrg(ada.accessToken, keep.id)).statusCode).toBe(200);
      expect((await getOrg(keptKey.key, keep.id)).statusCode).toBe(200);
      expect(await ownedRows(keep.id)).toEqual({ memberships: 1, roles: 0, invitations: 0, apiKeys: 1 });
    });

    it('refuses to let an admin delete the organization (403 PERMISSION_DENIED naming org:delete)', async () => {
      const ada = await person('ada');
      const org = await createOrg(app, ada.accessToken, 'Guarded Org');
      const admin = await addMember(app, ada.accessToken, org.id, address('admin'), 'admin');
      const before = await orgRow(org.id);

      const res = await deleteOrg(admin.accessToken, org.id);

      expectProblem(res, 403, 'PERMISSION_DENIED');
      expect(Problem.parse(res.json()).permission).toBe('org:delete');
      expect(await orgRow(org.id)).toEqual(before);
      expect(await ownedRows(org.id)).toMatchObject({ memberships: 2 });
    });
  });

  describe('operator routes (/admin/orgs)', () => {
    /** A superadmin, made the way `plinth create-admin` makes one, signed in. */
    async function operator(): Promise<string> {
      const email = address('operator');
      await createOperator(app, { email, password: OPERATOR_PASSWORD });
      return (await login(app, email, OPERATOR_PASSWORD)).accessToken;
    }
    const adminPatch = (token: string, orgId: string, payload: Record<string, unknown>) =>
      app.inject({
        method: 'PATCH',
        url: `/api/v1/admin/orgs/${orgId}`,
        headers: bearer(token),
        payload,
      });

    it('lets a superadmin list every organization, page by page', async () => {
      const ada = await person('ada');
      const grace = await person('grace');
      const mine = await createOrg(app, ada.accessToken, 'Ada Operations');
      const theirs = await createOrg(app, grace.accessToken, 'Grace Operations');
      const token = await operator();

      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const query: string = cursor === null ? '?limit=2' : `?limit=2&cursor=${cursor}`;
        const res = await app.inject({
          method: 'GET',
          url: `/api/v1/admin/orgs${query}`,
          headers: bearer(token),
        });
        expect(res.statusCode).toBe(200);
        const page = OrgsPage.parse(res.json());
        expect(page.data.length).toBeLessThanOrEqual(2);
        seen.push(...page.data.map((o) => o.id));
        cursor = page.nextCursor;
      } while (cursor !== null);

      expect(seen).toEqual(expect.arrayContaining([mine.id, theirs.id]));
      expect(new Set(seen).size).toBe(seen.length);
      expect(seen).toHaveLength(await orgCount());
    });

    it('lets a superadmin change an organization’s plan, which its members then see', async () => {
      const ada = await person('ada');
      const org = await createOrg(app, ada.accessToken, 'Upgraded Org');
      const token = await operator();

      const res = await adminPatch(token, org.id, { plan: 'premium' });

      expect(res.statusCode).toBe(200);
      expect(Organization.parse(res.json())).toMatchObject({ id: org.id, plan: 'premium', name: org.name });
      expect(Organization.parse((await getOrg(ada.accessToken, org.id)).json()).plan).toBe('premium');
    });

    it('refuses a plan the installation does not have (400 UNKNOWN_PLAN) and an unknown organization (404)', async () => {
      const ada = await person('ada');
      const org = await createOrg(app, ada.accessToken, 'Planned Org');
      const token = await operator();

      expectProblem(await adminPatch(token, org.id, { plan: 'platinum' }), 400, 'UNKNOWN_PLAN');
      expectProblem(
        await adminPatch(token, '01950000-0000-7000-8000-000000000000', { plan: 'basic' }),
        404,
        'ORG_NOT_FOUND',
      );
      expect((await orgRow(org.id))?.plan).toBe('free');
    });

    it('refuses the operator routes to everyone else: 403 to an owner, 401 without a token', async () => {
      const ada = await person('ada');
      const org = await createOrg(app, ada.accessToken, 'Ambitious Org');

      expectProblem(await adminPatch(ada.accessToken, org.id, { plan: 'enterprise' }), 403, 'FORBIDDEN');
      expectProblem(
        await app.inject({ method: 'GET', url: '/api/v1/admin/orgs', headers: bearer(ada.accessToken) }),
        403,
        'FORBIDDEN',
      );
      expectProblem(await app.inject({ method: 'GET', url: '/api/v1/admin/orgs' }), 401, 'UNAUTHENTICATED');
      expectProblem(
        await app.inject({
          method: 'PATCH',
          url: `/api/v1/admin/orgs/${org.id}`,
          payload: { plan: 'enterprise' },
        }),
        401,
        'UNAUTHENTICATED',
      );
      expect((await orgRow(org.id))?.plan).toBe('free');
    });
  });

  it('puts new organizations on the first plan of ORG_PLANS, and accepts only those plans', async () => {
    const custom = await startTestApp(dialect, cleanups, { env: { ...ENV, ORG_PLANS: 'starter, pro' } });
    const ada = await signedInUser(custom, 'ada@example.com');
    const org = await createOrg(custom, ada.accessToken, 'Starter Org');
    expect(org.plan).toBe('starter');

    await createOperator(custom, { email: 'operator@example.com', password: OPERATOR_PASSWORD });
    const { accessToken } = await login(custom, 'operator@example.com', OPERATOR_PASSWORD);
    const patch = (plan: string) =>
      custom.inject({
        method: 'PATCH',
        url: `/api/v1/admin/orgs/${org.id}`,
        headers: bearer(accessToken),
        payload: { plan },
      });
    expectProblem(await patch('free'), 400, 'UNKNOWN_PLAN');
    expect((await patch('pro')).json()).toMatchObject({ plan: 'pro' });
  });

  /** How many rows of each org-owned table belong to `orgId`, read across tenants as an observer. */
  function ownedRows(orgId: string) {
    return app.database.acrossTenants(async (db) => {
      const count = async (table: 'memberships' | 'roles' | 'invitations' | 'api_keys') =>
        Number(
          (
            await db
              .selectFrom(table)
              .select((eb) => eb.fn.countAll().as('n'))
              .where('org_id', '=', orgId)
              .executeTakeFirstOrThrow()
          ).n,
        );
      return {
        memberships: await count('memberships'),
        roles: await count('roles'),
        invitations: await count('invitations'),
        apiKeys: await count('api_keys'),
      };
    });
  }
});
