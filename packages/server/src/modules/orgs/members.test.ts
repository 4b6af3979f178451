import { randomBytes } from 'node:crypto';
import { Member, Page, Problem } from '@plinth/shared';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type PlinthApp } from '../../app.ts';
import { bearer, cleanupAfterEach, expectProblem } from '../../test/auth-helpers.ts';
import { testDialects, testRedisUrl } from '../../test/dialects.ts';
import { buildTestApp, createTestDatabase, installationSecrets, testConfig } from '../../test/harness.ts';
import { createOrg, invite, signedInUser, type TestUser } from '../../test/org-helpers.ts';

// Members and their roles: who may change whom (never beyond one's own permissions), the rule that an
// organization always keeps an owner, and that a change of role applies to the member's very next request —
// on every replica.

const ENV = { REQUIRE_EMAIL_VERIFICATION: 'false' };
const MembersPage = Page(Member);

/** The people of one organization, one per built-in role, plus someone outside it. */
interface Team {
  orgId: string;
  owner: TestUser;
  admin: TestUser;
  member: TestUser;
  viewer: TestUser;
  outsider: TestUser;
}

/** Has `user` (an existing, signed-in account) join `orgId` with `role`, invited by `inviterToken`. */
async function join(app: PlinthApp, inviterToken: string, orgId: string, user: TestUser, role: string) {
  const token = await invite(app, inviterToken, orgId, user.email, role);
  const res = await app.inject({
    method: 'POST',
    url: '/api/v1/invitations/accept',
    headers: bearer(user.accessToken),
    payload: { token },
  });
  expect(res.statusCode).toBe(200);
}

const patchMember = (app: PlinthApp, token: string, orgId: string, userId: string, role: unknown) =>
  app.inject({
    method: 'PATCH',
    url: `/api/v1/orgs/${orgId}/members/${userId}`,
    headers: bearer(token),
    payload: { role },
  });
const removeMember = (app: PlinthApp, token: string, orgId: string, userId: string) =>
  app.inject({ method: 'DELETE', url: `/api/v1/orgs/${orgId}/members/${userId}`, headers: bearer(token) });
const renameOrg = (app: PlinthApp, token: string, orgId: string, name: string) =>
  app.inject({ method: 'PATCH', url: `/api/v1/orgs/${orgId}`, headers: bearer(token), payload: { name } });

function expectDenied(res: LightMyRequestResponse, permission: string): void {
  expectProblem(res, 403, 'PERMISSION_DENIED');
  expect(Problem.parse(res.json()).permission).toBe(permission);
}

describe.each(testDialects)('members (%s)', (dialect) => {
  // One app and one set of accounts for the whole block; each test builds a fresh organization from them, so
  // role changes in one test cannot leak into another.
  let app: PlinthApp;
  let people: Omit<Team, 'orgId'>;
  beforeAll(async () => {
    app = await buildTestApp(dialect, { env: ENV });
    people = {
      owner: await signedInUser(app, 'owner@example.com', 'Olive Owner'),
      admin: await signedInUser(app, 'admin@example.com', 'Adam Admin'),
      member: await signedInUser(app, 'member@example.com', 'Mary Member'),
      viewer: await signedInUser(app, 'viewer@example.com', 'Victor Viewer'),
      outsider: await signedInUser(app, 'outsider@example.com', 'Oscar Outsider'),
    };
  });
  afterAll(async () => {
    await app?.close();
  });

  async function team(): Promise<Team> {
    const { owner, admin, member, viewer } = people;
    const org = await createOrg(app, owner.accessToken, 'Acme Logistics');
    await join(app, owner.accessToken, org.id, admin, 'admin');
    await join(app, owner.accessToken, org.id, member, 'member');
    await join(app, owner.accessToken, org.id, viewer, 'viewer');
    return { orgId: org.id, ...people };
  }

  const listMembers = async (token: string, orgId: string, query = '') => {
    const res = await app.inject({
      method: 'GET',
      url: `/api/v1/orgs/${orgId}/members${query}`,
      headers: bearer(token),
    });
    expect(res.statusCode).toBe(200);
    return MembersPage.parse(res.json());
  };
  const rolesOf = async (orgId: string) =>
    Object.fromEntries(
      (await listMembers(people.owner.accessToken, orgId)).data.map((m) => [m.email, m.role]),
    );

  describe('GET /orgs/{orgId}/members', () => {
    it('lists members in the order asked for, filters by role, and pages without repeats', async () => {
      const { orgId, owner, admin, member, viewer } = await team();

      const joined = await listMembers(viewer.accessToken, orgId);
      expect(joined.data.map((m) => [m.userId, m.role])).toEqual([
        [owner.userId, 'owner'],
        [admin.userId, 'admin'],
        [member.userId, 'member'],
        [viewer.userId, 'viewer'],
      ]);
      expect(joined.data[0]).toMatchObject({ email: owner.email, name: 'Olive Owner' });

      const byName = await listMembers(viewer.accessToken, orgId, '?sort=-name');
      expect(byName.data.map((m) => m.name)).toEqual([
        'Victor Viewer',
        'Olive Owner',
        'Mary Member',
        'Adam Admin',
      ]);

      const viewers = await listMembers(viewer.accessToken, orgId, '?role=viewer');
      expect(viewers.data.map((m) => m.userId)).toEqual([viewer.userId]);

      const first = await listMembers(viewer.accessToken, orgId, '?sort=email&limit=3');
      expect(first.data).toHaveLength(3);
      expect(first.nextCursor).not.toBeNull();
      const second = await listMembers(
        viewer.accessToken,
        orgId,
        `?sort=email&limit=3&cursor=${first.nextCursor}`,
      );
      expect(second.nextCursor).toBeNull();
      expect([...first.data, ...second.data].map((m) => m.email)).toEqual(
        [admin.email, member.email, owner.email, viewer.email].sort(),
      );
    });

    it('answers 404 ORG_NOT_FOUND to someone outside the organization', async () => {
      const { orgId, outsider } = await team();
      expectProblem(
        await app.inject({
          method: 'GET',
          url: `/api/v1/orgs/${orgId}/members`,
          headers: bearer(outsider.accessToken),
        }),
        404,
        'ORG_NOT_FOUND',
      );
    });
  });

  describe('PATCH /orgs/{orgId}/members/{userId}', () => {
    it('lets an admin make a member a viewer, and a viewer a member', async () => {
      const { orgId, admin, member, viewer } = await team();

      const res = await patchMember(app, admin.accessToken, orgId, member.userId, 'viewer');
      expect(res.statusCode).toBe(200);
      expect(Member.parse(res.json())).toMatchObject({ userId: member.userId, role: 'viewer' });
      expect((await patchMember(app, admin.accessToken, orgId, viewer.userId, 'member')).statusCode).toBe(
        200,
      );

      expect(await rolesOf(orgId)).toMatchObject({ [member.email]: 'viewer', [viewer.email]: 'member' });
    });

    it('refuses to let an admin make anyone an owner (403 ROLE_NOT_GRANTABLE)', async () => {
      const { orgId, admin, member } = await team();
      const before = await rolesOf(orgId);

      expectProblem(
        await patchMember(app, admin.accessToken, orgId, member.userId, 'owner'),
        403,
        'ROLE_NOT_GRANTABLE',
      );
      expectProblem(
        await patchMember(app, admin.accessToken, orgId, admin.userId, 'owner'),
        403,
        'ROLE_NOT_GRANTABLE',
      );

      expect(await rolesOf(orgId)).toEqual(before);
    });

    it('refuses to let an admin demote or remove an owner (403 ROLE_NOT_GRANTABLE)', async () => {
      const { orgId, owner, admin } = await team();
      const before = await rolesOf(orgId);

      expectProblem(
        await patchMember(app, admin.accessToken, orgId, owner.userId, 'viewer'),
        403,
        'ROLE_NOT_GRANTABLE',
      );
      expectProblem(
        await removeMember(app, admin.accessToken, orgId, owner.userId),
        403,
        'ROLE_NOT_GRANTABLE',
      );

      expect(await rolesOf(orgId)).toEqual(before);
    });

    it('keeps the last owner: they can be neither demoted nor removed, and cannot leave (409 LAST_OWNER)', async () => {
      const { orgId, owner } = await team();
      const before = await rolesOf(orgId);

      expectProblem(
        await patchMember(app, owner.accessToken, orgId, owner.userId, 'admin'),
        409,
        'LAST_OWNER',
      );
      expectProblem(await removeMember(app, owner.accessToken, orgId, owner.userId), 409, 'LAST_OWNER');

      expect(await rolesOf(orgId)).toEqual(before);
    });

    it('lets one of two owners be demoted, after which the other is the last owner again', async () => {
      const { orgId, owner, admin } = await team();
      expect((await patchMember(app, owner.accessToken, orgId, admin.userId, 'owner')).statusCode).toBe(200);

      const res = await patchMember(app, admin.accessToken, orgId, owner.userId, 'member');

      expect(res.statusCode).toBe(200);
      expect(await rolesOf(orgId)).toMatchObject({ [owner.email]: 'member', [admin.email]: 'owner' });
      expectProblem(
        await patchMember(app, admin.accessToken, orgId, admin.userId, 'viewer'),
        409,
        'LAST_OWNER',
      );
      expectProblem(await removeMember(app, admin.accessToken, orgId, admin.userId), 409, 'LAST_OWNER');
    });

    it('refuses a role the organization does not have (400 UNKNOWN_ROLE) or a malformed one (400)', async () => {
      const { orgId, owner, member } = await team();
      const before = await rolesOf(orgId);

      expectProblem(
        await patchMember(app, owner.accessToken, orgId, member.userId, 'wizard'),
        400,
        'UNKNOWN_ROLE',
      );
      expectProblem(
        await patchMember(app, owner.accessToken, orgId, member.userId, 'Not A Role'),
        400,
        'VALIDATION_FAILED',
      );
      expectProblem(
        await app.inject({
          method: 'PATCH',
          url: `/api/v1/orgs/${orgId}/members/${member.userId}`,
          headers: bearer(owner.accessToken),
          payload: { role: 'viewer', orgId: randomBytes(4).toString('hex') },
        }),
        400,
        'VALIDATION_FAILED',
      );

      expect(await rolesOf(orgId)).toEqual(before);
    });

    it('answers 404 MEMBER_NOT_FOUND for a user who is not a member', async () => {
      const { orgId, owner, outsider } = await team();

      expectProblem(
        await patchMember(app, owner.accessToken, orgId, outsider.userId, 'viewer'),
        404,
        'MEMBER_NOT_FOUND',
      );
      expectProblem(
        await removeMember(app, owner.accessToken, orgId, outsider.userId),
        404,
        'MEMBER_NOT_FOUND',
      );
      expectProblem(
        await removeMember(app, owner.accessToken, orgId, '01950000-0000-7000-8000-000000000000'),
        404,
        'MEMBER_NOT_FOUND',
      );
      // The outsider is still in no organization.
      const theirs = await app.inject({
        method: 'GET',
        url: '/api/v1/orgs',
        headers: bearer(outsider.accessToken),
      });
      expect(theirs.json()).toEqual({ data: [], nextCursor: null });
    });

    it('refuses an upper-case spelling of a member id, which would remove them without their access being forgotten', async () => {
      const { orgId, owner, member } = await team();
      expectProblem(
        await removeMember(app, owner.accessToken, orgId, member.userId.toUpperCase()),
        400,
        'VALIDATION_FAILED',
      );
      expectProblem(
        await patchMember(app, owner.accessToken, orgId, member.userId.toUpperCase(), 'viewer'),
        400,
        'VALIDATION_FAILED',
      );
      // Still a member, with the same role.
      expect((await listMembers(member.accessToken, orgId)).data).toContainEqual(
        expect.objectContaining({ userId: member.userId, role: 'member' }),
      );
    });

    it('refuses members without members:update (403 naming the permission)', async () => {
      const { orgId, member, viewer } = await team();
      expectDenied(
        await patchMember(app, member.accessToken, orgId, viewer.userId, 'member'),
        'members:update',
      );
      expectDenied(
        await patchMember(app, viewer.accessToken, orgId, viewer.userId, 'admin'),
        'members:update',
      );
      expect(await rolesOf(orgId)).toMatchObject({ [viewer.email]: 'viewer' });
    });

    it('applies a demotion on the member’s very next request', async () => {
      const { orgId, owner, admin } = await team();
      // The admin's access is now resolved and cached by this replica.
      expect((await renameOrg(app, admin.accessToken, orgId, 'Renamed by the admin')).statusCode).toBe(200);

      expect((await patchMember(app, owner.accessToken, orgId, admin.userId, 'viewer')).statusCode).toBe(200);

      expectDenied(await renameOrg(app, admin.accessToken, orgId, 'Renamed again'), 'org:update');
      // Still a member, now with a viewer's rights.
      expect(
        (
          await app.inject({
            method: 'GET',
            url: `/api/v1/orgs/${orgId}`,
            headers: bearer(admin.accessToken),
          })
        ).json(),
      ).toMatchObject({ name: 'Renamed by the admin' });
    });
  });

  describe('DELETE /orgs/{orgId}/members/{userId}', () => {
    it('lets an admin remove a member, who loses access on their next request', async () => {
      const { orgId, admin, member } = await team();
      const getOrg = () =>
        app.inject({ method: 'GET', url: `/api/v1/orgs/${orgId}`, headers: bearer(member.accessToken) });
      expect((await getOrg()).statusCode).toBe(200);

      expect((await removeMember(app, admin.accessToken, orgId, member.userId)).statusCode).toBe(204);

      expectProblem(await getOrg(), 404, 'ORG_NOT_FOUND');
      expect(await rolesOf(orgId)).not.toHaveProperty(member.email);
    });

    it('lets a viewer leave, but not remove anyone else (403 naming members:remove)', async () => {
      const { orgId, member, viewer } = await team();

      expectDenied(await removeMember(app, viewer.accessToken, orgId, member.userId), 'members:remove');
      expect(await rolesOf(orgId)).toHaveProperty(member.email);

      expect((await removeMember(app, viewer.accessToken, orgId, viewer.userId)).statusCode).toBe(204);
      expect(await rolesOf(orgId)).not.toHaveProperty(viewer.email);
      expectProblem(
        await app.inject({
          method: 'GET',
          url: `/api/v1/orgs/${orgId}`,
          headers: bearer(viewer.accessToken),
        }),
        404,
        'ORG_NOT_FOUND',
      );
    });
  });
});

// Replicas share the database and Redis; a role change made on one reaches the others' membership caches
// through Redis pub/sub.
if (testRedisUrl) {
  const redisUrl = testRedisUrl;

  describe.each(testDialects)('members across replicas through Redis (%s)', (dialect) => {
    const cleanups = cleanupAfterEach();

    /** Asks `probe` again every 25 ms until it holds or 2 s have passed (pub/sub delivery is asynchronous). */
    async function eventually(probe: () => Promise<boolean>): Promise<boolean> {
      const deadline = Date.now() + 2000;
      for (;;) {
        if (await probe()) return true;
        if (Date.now() > deadline) return false;
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    }

    it('applies a role change made on replica A to the member’s next request on replica B', async () => {
      const database = await createTestDatabase(dialect);
      cleanups.push(() => database.drop());
      // What every replica of one installation shares: the database, Redis and the keys.
      const env = {
        ...ENV,
        REDIS_URL: redisUrl,
        ...installationSecrets(),
      };
      const a = await buildApp(testConfig(database, env));
      cleanups.push(() => a.close());
      const b = await buildApp(testConfig(database, env));
      cleanups.push(() => b.close());

      const owner = await signedInUser(a, 'owner@example.com');
      const admin = await signedInUser(a, 'admin@example.com');
      const org = await createOrg(a, owner.accessToken);
      await join(a, owner.accessToken, org.id, admin, 'admin');
      // Replica B resolves the admin's membership and caches it.
      expect((await renameOrg(b, admin.accessToken, org.id, 'Renamed on B')).statusCode).toBe(200);

      expect((await patchMember(a, owner.accessToken, org.id, admin.userId, 'viewer')).statusCode).toBe(200);

      expect(
        await eventually(
          async () => (await renameOrg(b, admin.accessToken, org.id, 'Again')).statusCode === 403,
        ),
      ).toBe(true);
      expectDenied(await renameOrg(b, admin.accessToken, org.id, 'Again'), 'org:update');
      // And back: A now caches the viewer role; a promotion on B reaches it.
      expectDenied(await renameOrg(a, admin.accessToken, org.id, 'On A'), 'org:update');
      expect((await patchMember(b, owner.accessToken, org.id, admin.userId, 'admin')).statusCode).toBe(200);
      expect(
        await eventually(
          async () => (await renameOrg(a, admin.accessToken, org.id, 'On A')).statusCode === 200,
        ),
      ).toBe(true);
    });
  });
}
