import { Invitation, Member, Page, Permission, Problem, Role } from '@plinth/shared';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { PlinthApp } from '../../app.ts';
import { bearer, expectProblem } from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { buildTestApp } from '../../test/harness.ts';
import { createOrg, invite, signedInUser, type TestUser } from '../../test/org-helpers.ts';

// Roles are named sets of permissions. The built-in ones come from the modules' declarations; an organization
// defines its own from the registered permissions, never granting more than its author holds, and a change to
// a role applies to everyone holding it on their next request.

const ENV = { REQUIRE_EMAIL_VERIFICATION: 'false' };
const PERMISSION_SHAPE = /^[a-z][a-z0-9_-]*:[a-z][a-z0-9_-]*$/;
const Permissions = z.object({ data: z.array(Permission) });
const Roles = Page(Role);

function expectDenied(res: LightMyRequestResponse, permission: string): void {
  expectProblem(res, 403, 'PERMISSION_DENIED');
  expect(Problem.parse(res.json()).permission).toBe(permission);
}

describe.each(testDialects)('roles and permissions (%s)', (dialect) => {
  // One app and one set of accounts; each test makes a fresh organization from them.
  let app: PlinthApp;
  let people: { owner: TestUser; admin: TestUser; holder: TestUser; viewer: TestUser };
  beforeAll(async () => {
    app = await buildTestApp(dialect, { env: ENV });
    people = {
      owner: await signedInUser(app, 'owner@example.com'),
      admin: await signedInUser(app, 'admin@example.com'),
      holder: await signedInUser(app, 'holder@example.com'),
      viewer: await signedInUser(app, 'viewer@example.com'),
    };
  });
  afterAll(async () => {
    await app?.close();
  });

  let serial = 0;
  /** An organization where `owner` owns, `admin` is admin, and `holder` and `viewer` are viewers. */
  async function team() {
    const { owner, admin, holder, viewer } = people;
    const org = await createOrg(app, owner.accessToken, `Org ${++serial}`);
    for (const [user, role] of [
      [admin, 'admin'],
      [holder, 'viewer'],
      [viewer, 'viewer'],
    ] as const) {
      const token = await invite(app, owner.accessToken, org.id, user.email, role);
      const res = await app.inject({
        method: 'POST',
        url: '/api/v1/invitations/accept',
        headers: bearer(user.accessToken),
        payload: { token },
      });
      expect(res.statusCode).toBe(200);
    }
    return { orgId: org.id, ...people };
  }

  const rolesUrl = (orgId: string, name?: string) =>
    `/api/v1/orgs/${orgId}/roles${name === undefined ? '' : `/${name}`}`;
  const createRole = (token: string, orgId: string, payload: Record<string, unknown>) =>
    app.inject({ method: 'POST', url: rolesUrl(orgId), headers: bearer(token), payload });
  const updateRole = (token: string, orgId: string, name: string, payload: Record<string, unknown>) =>
    app.inject({ method: 'PATCH', url: rolesUrl(orgId, name), headers: bearer(token), payload });
  const deleteRole = (token: string, orgId: string, name: string) =>
    app.inject({ method: 'DELETE', url: rolesUrl(orgId, name), headers: bearer(token) });
  const listRoles = async (token: string, orgId: string) => {
    const res = await app.inject({ method: 'GET', url: rolesUrl(orgId), headers: bearer(token) });
    expect(res.statusCode).toBe(200);
    return Roles.parse(res.json()).data;
  };
  const setRole = async (orgId: string, userId: string, role: string) => {
    const res = await app.inject({
      method: 'PATCH',
      url: `/api/v1/orgs/${orgId}/members/${userId}`,
      headers: bearer(people.owner.accessToken),
      payload: { role },
    });
    expect(res.statusCode).toBe(200);
  };
  const get = (token: string, url: string) => app.inject({ method: 'GET', url, headers: bearer(token) });
  const membersOf = async (orgId: string) =>
    Page(Member).parse((await get(people.owner.accessToken, `/api/v1/orgs/${orgId}/members`)).json()).data;

  describe('GET /permissions', () => {
    it('lists every registered permission, well formed and described, with the built-in roles holding it', async () => {
      const res = await get(people.viewer.accessToken, '/api/v1/permissions');

      expect(res.statusCode).toBe(200);
      const permissions = Permissions.parse(res.json()).data;
      const names = permissions.map((p) => p.name);
      expect(names).toEqual([...names].sort());
      expect(names).toEqual(
        expect.arrayContaining([
          'org:read',
          'org:delete',
          'members:read',
          'invitations:create',
          'roles:create',
        ]),
      );
      for (const permission of permissions) {
        expect(permission.name).toMatch(PERMISSION_SHAPE);
        expect(permission.description.trim()).not.toBe('');
        // The owner holds everything.
        expect(permission.roles).toContain('owner');
        // A viewer reads and changes nothing.
        if (permission.roles.includes('viewer')) expect(permission.name).toMatch(/:read$/);
      }
      expect(permissions.find((p) => p.name === 'org:delete')?.roles).toEqual(['owner']);
      expectProblem(await app.inject({ method: 'GET', url: '/api/v1/permissions' }), 401, 'UNAUTHENTICATED');
    });
  });

  describe('built-in roles', () => {
    it('lists owner, admin, member and viewer first, built in, with the permissions /permissions assigns them', async () => {
      const { orgId, viewer } = await team();
      const permissions = Permissions.parse(
        (await get(viewer.accessToken, '/api/v1/permissions')).json(),
      ).data;

      const roles = await listRoles(viewer.accessToken, orgId);

      expect(roles.map((r) => r.name)).toEqual(['owner', 'admin', 'member', 'viewer']);
      for (const role of roles) {
        expect(role.builtIn).toBe(true);
        expect(role.permissions).toEqual(
          permissions
            .filter((p) => p.roles.includes(role.name))
            .map((p) => p.name)
            .sort(),
        );
      }
      const byName = new Map(roles.map((r) => [r.name, r]));
      expect(byName.get('owner')?.permissions).toEqual(permissions.map((p) => p.name).sort());
      expect(byName.get('viewer')?.permissions.every((p) => p.endsWith(':read'))).toBe(true);
      expect(byName.get('admin')?.permissions).not.toContain('org:delete');
    });

    it('refuses to change or delete a built-in role (409 BUILT_IN_ROLE)', async () => {
      const { orgId, owner } = await team();
      const before = await listRoles(owner.accessToken, orgId);

      expectProblem(
        await updateRole(owner.accessToken, orgId, 'viewer', { permissions: ['org:read', 'org:delete'] }),
        409,
        'BUILT_IN_ROLE',
      );
      expectProblem(await deleteRole(owner.accessToken, orgId, 'member'), 409, 'BUILT_IN_ROLE');

      expect(await listRoles(owner.accessToken, orgId)).toEqual(before);
    });
  });

  describe('custom roles', () => {
    it('creates a role from registered permissions, listed after the built-in ones', async () => {
      const { orgId, admin, viewer } = await team();

      const res = await createRole(admin.accessToken, orgId, {
        name: 'dispatcher',
        description: 'Sees the team.',
        permissions: ['members:read', 'org:read', 'members:read'],
      });

      expect(res.statusCode).toBe(201);
      const expected = {
        name: 'dispatcher',
        description: 'Sees the team.',
        permissions: ['members:read', 'org:read'],
        builtIn: false,
      };
      expect(Role.parse(res.json())).toEqual(expected);
      expect((await get(viewer.accessToken, rolesUrl(orgId, 'dispatcher'))).json()).toEqual(expected);
      expect((await listRoles(viewer.accessToken, orgId)).map((r) => r.name)).toEqual([
        'owner',
        'admin',
        'member',
        'viewer',
        'dispatcher',
      ]);
    });

    it('refuses permissions nobody registered (400 UNKNOWN_PERMISSION) and creates nothing', async () => {
      const { orgId, owner } = await team();

      const res = await createRole(owner.accessToken, orgId, {
        name: 'dreamer',
        permissions: ['members:read', 'spaceships:launch'],
      });

      expectProblem(res, 400, 'UNKNOWN_PERMISSION');
      expect(Problem.parse(res.json()).detail).toContain('spaceships:launch');
      expectProblem(
        await createRole(owner.accessToken, orgId, { name: 'dreamer', permissions: ['not a permission'] }),
        400,
        'VALIDATION_FAILED',
      );
      expectProblem(await get(owner.accessToken, rolesUrl(orgId, 'dreamer')), 404, 'ROLE_NOT_FOUND');
    });

    it('refuses a name a built-in or another custom role has (409 ROLE_EXISTS)', async () => {
      const { orgId, owner } = await team();
      expect(
        (await createRole(owner.accessToken, orgId, { name: 'auditor', permissions: ['org:read'] }))
          .statusCode,
      ).toBe(201);
      expect(
        (await createRole(owner.accessToken, orgId, { name: 'clerk', permissions: ['org:read'] })).statusCode,
      ).toBe(201);

      expectProblem(
        await createRole(owner.accessToken, orgId, { name: 'admin', permissions: ['org:read'] }),
        409,
        'ROLE_EXISTS',
      );
      expectProblem(
        await createRole(owner.accessToken, orgId, { name: 'auditor', permissions: ['members:read'] }),
        409,
        'ROLE_EXISTS',
      );
      expectProblem(
        await updateRole(owner.accessToken, orgId, 'clerk', { name: 'owner' }),
        409,
        'ROLE_EXISTS',
      );
      expectProblem(
        await updateRole(owner.accessToken, orgId, 'clerk', { name: 'auditor' }),
        409,
        'ROLE_EXISTS',
      );

      expect(
        (await listRoles(owner.accessToken, orgId))
          .filter((r) => !r.builtIn)
          .map((r) => [r.name, r.permissions]),
      ).toEqual([
        ['auditor', ['org:read']],
        ['clerk', ['org:read']],
      ]);
    });

    it('refuses to let anyone create or widen a role beyond their own permissions (403 ROLE_NOT_GRANTABLE)', async () => {
      const { orgId, owner, admin } = await team();
      const res = await createRole(admin.accessToken, orgId, {
        name: 'destroyer',
        permissions: ['org:read', 'org:delete'],
      });
      expectProblem(res, 403, 'ROLE_NOT_GRANTABLE');
      expect(Problem.parse(res.json()).detail).toContain('org:delete');
      expectProblem(await get(owner.accessToken, rolesUrl(orgId, 'destroyer')), 404, 'ROLE_NOT_FOUND');

      expect(
        (await createRole(admin.accessToken, orgId, { name: 'reader', permissions: ['org:read'] }))
          .statusCode,
      ).toBe(201);
      expectProblem(
        await updateRole(admin.accessToken, orgId, 'reader', { permissions: ['org:read', 'org:delete'] }),
        403,
        'ROLE_NOT_GRANTABLE',
      );
      expect(
        Role.parse((await get(owner.accessToken, rolesUrl(orgId, 'reader'))).json()).permissions,
      ).toEqual(['org:read']);
    });

    it('refuses a viewer any change to roles (403 naming the permission)', async () => {
      const { orgId, owner, viewer } = await team();
      expect(
        (await createRole(owner.accessToken, orgId, { name: 'reader', permissions: ['org:read'] }))
          .statusCode,
      ).toBe(201);

      expectDenied(
        await createRole(viewer.accessToken, orgId, { name: 'mine', permissions: ['org:read'] }),
        'roles:create',
      );
      expectDenied(
        await updateRole(viewer.accessToken, orgId, 'reader', { description: 'x' }),
        'roles:update',
      );
      expectDenied(await deleteRole(viewer.accessToken, orgId, 'reader'), 'roles:delete');

      expect((await listRoles(owner.accessToken, orgId)).filter((r) => !r.builtIn)).toEqual([
        { name: 'reader', description: '', permissions: ['org:read'], builtIn: false },
      ]);
    });

    it('grants a member holding a custom role exactly its permissions', async () => {
      const { orgId, owner, holder } = await team();
      expect(
        (await createRole(owner.accessToken, orgId, { name: 'roster', permissions: ['members:read'] }))
          .statusCode,
      ).toBe(201);
      await setRole(orgId, holder.userId, 'roster');

      expect((await get(holder.accessToken, `/api/v1/orgs/${orgId}/members`)).statusCode).toBe(200);
      expectDenied(await get(holder.accessToken, `/api/v1/orgs/${orgId}/invitations`), 'invitations:read');
      // Not even what every built-in role has.
      expectDenied(await get(holder.accessToken, `/api/v1/orgs/${orgId}`), 'org:read');
      expectDenied(await get(holder.accessToken, rolesUrl(orgId)), 'roles:read');
    });

    it('applies a change of a role’s permissions on its holders’ next request', async () => {
      const { orgId, owner, holder } = await team();
      expect(
        (await createRole(owner.accessToken, orgId, { name: 'roster', permissions: ['members:read'] }))
          .statusCode,
      ).toBe(201);
      await setRole(orgId, holder.userId, 'roster');
      // The holder's access is now resolved and cached.
      expect((await get(holder.accessToken, `/api/v1/orgs/${orgId}/members`)).statusCode).toBe(200);
      expectDenied(await get(holder.accessToken, `/api/v1/orgs/${orgId}/invitations`), 'invitations:read');

      const res = await updateRole(owner.accessToken, orgId, 'roster', { permissions: ['invitations:read'] });

      expect(res.statusCode).toBe(200);
      expect(Role.parse(res.json()).permissions).toEqual(['invitations:read']);
      expect((await get(holder.accessToken, `/api/v1/orgs/${orgId}/invitations`)).statusCode).toBe(200);
      expectDenied(await get(holder.accessToken, `/api/v1/orgs/${orgId}/members`), 'members:read');
    });

    it('carries a new name over to the members and pending invitations holding the role', async () => {
      const { orgId, owner, holder } = await team();
      expect(
        (await createRole(owner.accessToken, orgId, { name: 'roster', permissions: ['members:read'] }))
          .statusCode,
      ).toBe(201);
      await setRole(orgId, holder.userId, 'roster');
      await invite(app, owner.accessToken, orgId, `pending-${++serial}@example.com`, 'roster');

      const res = await updateRole(owner.accessToken, orgId, 'roster', { name: 'team-reader' });

      expect(res.statusCode).toBe(200);
      expect(Role.parse(res.json())).toMatchObject({ name: 'team-reader', permissions: ['members:read'] });
      expect((await membersOf(orgId)).find((m) => m.userId === holder.userId)?.role).toBe('team-reader');
      const invitations = Page(Invitation).parse(
        (await get(owner.accessToken, `/api/v1/orgs/${orgId}/invitations`)).json(),
      ).data;
      expect(invitations.map((i) => i.role)).toEqual(['team-reader']);
      expectProblem(await get(owner.accessToken, rolesUrl(orgId, 'roster')), 404, 'ROLE_NOT_FOUND');
      // The holder keeps the role's permissions under its new name.
      expect((await get(holder.accessToken, `/api/v1/orgs/${orgId}/members`)).statusCode).toBe(200);
    });

    it('refuses to delete a role a member or a pending invitation holds (409 ROLE_IN_USE)', async () => {
      const { orgId, owner, holder } = await team();
      expect(
        (await createRole(owner.accessToken, orgId, { name: 'roster', permissions: ['members:read'] }))
          .statusCode,
      ).toBe(201);
      await setRole(orgId, holder.userId, 'roster');

      expectProblem(await deleteRole(owner.accessToken, orgId, 'roster'), 409, 'ROLE_IN_USE');

      await setRole(orgId, holder.userId, 'viewer');
      const invited = `pending-${++serial}@example.com`;
      await invite(app, owner.accessToken, orgId, invited, 'roster');
      expectProblem(await deleteRole(owner.accessToken, orgId, 'roster'), 409, 'ROLE_IN_USE');
      expect((await get(owner.accessToken, rolesUrl(orgId, 'roster'))).statusCode).toBe(200);

      // Once the invitation is gone too, the role can go.
      await invite(app, owner.accessToken, orgId, invited, 'viewer');
      expect((await deleteRole(owner.accessToken, orgId, 'roster')).statusCode).toBe(204);
      expectProblem(await get(owner.accessToken, rolesUrl(orgId, 'roster')), 404, 'ROLE_NOT_FOUND');
      expectProblem(await deleteRole(owner.accessToken, orgId, 'roster'), 404, 'ROLE_NOT_FOUND');
    });

    it('keeps a custom role inside its organization', async () => {
      const { orgId, owner, holder } = await team();
      const other = await team();
      expect(
        (await createRole(owner.accessToken, orgId, { name: 'roster', permissions: ['members:read'] }))
          .statusCode,
      ).toBe(201);

      expect((await listRoles(owner.accessToken, other.orgId)).map((r) => r.name)).not.toContain('roster');
      expectProblem(await get(owner.accessToken, rolesUrl(other.orgId, 'roster')), 404, 'ROLE_NOT_FOUND');
      const assign = await app.inject({
        method: 'PATCH',
        url: `/api/v1/orgs/${other.orgId}/members/${holder.userId}`,
        headers: bearer(owner.accessToken),
        payload: { role: 'roster' },
      });
      expectProblem(assign, 400, 'UNKNOWN_ROLE');
    });
  });
});
