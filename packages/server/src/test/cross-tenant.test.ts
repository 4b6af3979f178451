import { isDeepStrictEqual } from 'node:util';
import { Invitation, Problem, Role } from '@plinth/shared';
import type { FastifyPluginAsync, InjectOptions, LightMyRequestResponse } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { PlinthApp } from '../app.ts';
import { newId } from '../core/ids.ts';
import { PLATFORM_TENANT_TABLES } from '../db/schema.ts';
import { OrgParams } from '../modules/rbac/index.ts';
import { WEBHOOK_TENANT_TABLES } from '../modules/webhooks/index.ts';
import { bearer, expectProblem, login, PASSWORD } from './auth-helpers.ts';
import { testDialects } from './dialects.ts';
import { buildTestApp } from './harness.ts';
import { addMember, createApiKey, createOrg, invite, signedInUser, type TestUser } from './org-helpers.ts';
import { registeredRoutes } from './route-table.ts';

// The cross-tenant suite (issue 4): two organizations, A and B, each with a user of every built-in role and
// an API key with narrow and one with broad scopes. The routes come from the OpenAPI document, so a route added
// later is covered without touching this file: every caller of one organization is refused (404, "no such
// organization") on the other's routes; every caller without a route's permission gets 403 naming it; the
// other organization's records addressed through one's own routes do not exist (404); and none of these
// requests changes a single row. The database is read only to observe that nothing changed.

/** An operation of the OpenAPI document, as far as these tests read it. */
interface DocOperation {
  'x-permission'?: string;
  requestBody?: unknown;
}
interface OpenApiDocument {
  paths: Record<string, Record<string, DocOperation>>;
}

type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
/** The methods the document lists; Fastify adds a HEAD route for every GET, which the document leaves out. */
const METHODS: readonly Method[] = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'];

/** One documented operation: `path` is the OpenAPI template (`/api/v1/orgs/{orgId}/members/{userId}`). */
interface Route {
  method: Method;
  path: string;
  permission: string | undefined;
  hasBody: boolean;
}

const ORG_ROUTES = '/api/v1/orgs/{orgId}';
/**
 * Where the fixtures' webhook endpoints point: the discard port on loopback (allowed by WEBHOOK_ALLOWED_HOSTS for
 * this test). No job runs here, so nothing is ever sent to it.
 */
const WEBHOOK_TARGET = 'http://127.0.0.1:9/hook';

/** A JSON request body. */
type JsonBody = Record<string, unknown>;

/**
 * Bodies that pass validation, for the routes that take one, so that a refusal is about authorization and not
 * about the body. (Authorization comes first anyway — a test below proves it — so a route missing here is
 * called with `{}` and is still covered.)
 */
const VALID_BODIES: Readonly<Record<string, JsonBody>> = {
  'PATCH /api/v1/orgs/{orgId}': { name: 'Renamed by a test' },
  'POST /api/v1/orgs/{orgId}/roles': { name: 'dispatcher', permissions: ['members:read'] },
  'PATCH /api/v1/orgs/{orgId}/roles/{roleName}': { description: 'Changed by a test' },
  'PATCH /api/v1/orgs/{orgId}/members/{userId}': { role: 'viewer' },
  'POST /api/v1/orgs/{orgId}/invitations': { email: 'newcomer@example.test', role: 'viewer' },
  'POST /api/v1/orgs/{orgId}/apikeys': { name: 'Key by a test', scopes: ['members:read'] },
  'POST /api/v1/orgs/{orgId}/apikeys/{keyId}/rotate': { gracePeriodSeconds: 60 },
  'POST /api/v1/orgs/{orgId}/webhooks': { url: WEBHOOK_TARGET, events: ['*'] },
  'PATCH /api/v1/orgs/{orgId}/webhooks/{webhookId}': { description: 'Changed by a test' },
  'POST /api/v1/orgs/{orgId}/webhooks/{webhookId}/rotate-secret': { gracePeriodSeconds: 60 },
};

const routeKey = (route: Route) => `${route.method} ${route.path}`;
const bodyFor = (route: Route): JsonBody | undefined =>
  route.hasBody ? (VALID_BODIES[routeKey(route)] ?? {}) : undefined;

/** Whoever calls: a member (by access token) or an API key, and what their role or scopes allow. */
interface Caller {
  label: string;
  headers: Record<string, string>;
  permissions: ReadonlySet<string>;
  /** The member's user id; undefined for an API key. */
  userId: string | undefined;
}

/** An organization with a member of each requested role, a custom role, a pending invitation and two keys. */
interface OrgFixture {
  label: string;
  id: string;
  owner: TestUser;
  /** Its members by built-in role, the owner included. */
  users: Map<string, TestUser>;
  /** Every way to call it: each member, the narrow key (`members:read`) and the broad key (all permissions). */
  callers: Caller[];
  ownerCaller: Caller;
  broadKey: Caller;
  /**
   * Its own records, by the path parameter that addresses them: a member who is not the owner, a pending
   * invitation, the narrow key and the custom role.
   */
  ids: Record<'userId' | 'invitationId' | 'keyId' | 'roleName' | 'webhookId' | 'deliveryId' | 'day', string>;
}

const PagedRoles = z.object({ data: z.array(Role) });
const PermissionList = z.object({ data: z.array(z.object({ name: z.string() })) });

/** Throws (failing the set-up) unless the answer has this status. */
function expectStatus(res: LightMyRequestResponse, status: number, what: string): void {
  if (res.statusCode !== status) throw new Error(`${what} answered ${res.statusCode}: ${res.body}`);
}

/** Builds an organization through the API, as its owner would. `label` makes its addresses and names unique. */
async function buildOrg(
  app: PlinthApp,
  label: string,
  roles: readonly ('admin' | 'member' | 'viewer')[] = ['admin', 'member', 'viewer'],
): Promise<OrgFixture> {
  const owner = await signedInUser(app, `owner-${label}@example.test`);
  const { id } = await createOrg(app, owner.accessToken, `Org ${label}`);
  const asOwner = bearer(owner.accessToken);
  const users = new Map<string, TestUser>([['owner', owner]]);
  for (const role of roles) {
    users.set(role, await addMember(app, owner.accessToken, id, `${role}-${label}@example.test`, role));
  }

  const roleName = `auditor-${label}`;
  const created = await app.inject({
    method: 'POST',
    url: `/api/v1/orgs/${id}/roles`,
    headers: asOwner,
    payload: { name: roleName, permissions: ['members:read'] },
  });
  expectStatus(created, 201, 'creating a role');
  const invited = await app.inject({
    method: 'POST',
    url: `/api/v1/orgs/${id}/invitations`,
    headers: asOwner,
    payload: { email: `pending-${label}@example.test`, role: 'viewer' },
  });
  expectStatus(invited, 201, 'inviting');
  const invitation = Invitation.parse(invited.json());

  const rolesRes = await app.inject({ method: 'GET', url: `/api/v1/orgs/${id}/roles`, headers: asOwner });
  expectStatus(rolesRes, 200, 'listing roles');
  const rolePermissions = new Map(PagedRoles.parse(rolesRes.json()).data.map((r) => [r.name, r.permissions]));
  const permissionsRes = await app.inject({ method: 'GET', url: '/api/v1/permissions', headers: asOwner });
  expectStatus(permissionsRes, 200, 'listing permissions');
  // Every permission the owner holds, which is every permission there is.
  const ownerPermissions = new Set(rolePermissions.get('owner'));
  const allPermissions = PermissionList.parse(permissionsRes.json())
    .data.map((p) => p.name)
    .filter((p) => ownerPermissions.has(p));

  const narrow = await createApiKey(app, owner.accessToken, id, { name: 'narrow', scopes: ['members:read'] });
  const broad = await createApiKey(app, owner.accessToken, id, { name: 'broad', scopes: allPermissions });

  const userCallers = [...users].map(
    ([role, user]): Caller => ({
      label: `${role} of ${label}`,
      headers: bearer(user.accessToken),
      permissions: new Set(rolePermissions.get(role)),
      userId: user.userId,
    }),
  );
  const broadKey: Caller = {
    label: `broad key of ${label}`,
    headers: bearer(broad.key),
    permissions: new Set(broad.scopes),
    userId: undefined,
  };
  // One key in each of the two headers a key may come in.
  const narrowKey: Caller = {
    label: `narrow key of ${label}`,
    headers: { 'x-api-key': narrow.key },
    permissions: new Set(narrow.scopes),
    userId: undefined,
  };
  const webhook = await app.inject({
    method: 'POST',
    url: `/api/v1/orgs/${id}/webhooks`,
    headers: asOwner,
    payload: { url: WEBHOOK_TARGET, events: ['*'] },
  });
  expectStatus(webhook, 201, 'registering a webhook');
  const webhookId = webhook.json<{ id: string }>().id;
  const ping = await app.inject({
    method: 'POST',
    url: `/api/v1/orgs/${id}/webhooks/${webhookId}/ping`,
    headers: asOwner,
  });
  expectStatus(ping, 202, 'pinging a webhook');
  const deliveryId = ping.json<{ id: string }>().id;
  const someone = users.get(roles[0] ?? 'owner') ?? owner;
  return {
    label,
    id,
    owner,
    users,
    callers: [...userCallers, narrowKey, broadKey],
    ownerCaller: userCallers[0] as Caller,
    broadKey,
    ids: {
      userId: someone.userId,
      invitationId: invitation.id,
      keyId: narrow.id,
      roleName,
      webhookId,
      deliveryId,
      // A usage report's day (modules/reports): no organization of the fixture has one.
      day: '2030-01-01',
    },
  };
}

/** Every documented operation whose path starts with `prefix`. */
function documentedRoutes(doc: OpenApiDocument, prefix: string): Route[] {
  return Object.entries(doc.paths).flatMap(([path, operations]) =>
    path.startsWith(prefix)
      ? METHODS.flatMap((method) => {
          const operation = operations[method.toLowerCase()];
          return operation
            ? [
                {
                  method,
                  path,
                  permission: operation['x-permission'],
                  hasBody: operation.requestBody !== undefined,
                },
              ]
            : [];
        })
      : [],
  );
}

/** `routes` and, for each GET, the HEAD route Fastify registers beside it (same hooks, no body in the answer). */
function withHeadRoutes(routes: Route[]): Route[] {
  return routes.flatMap((r) => (r.method === 'GET' ? [r, { ...r, method: 'HEAD' as const }] : [r]));
}

/**
 * The URL of `path` with its parameters filled from `values`. A parameter with no value gets `fallback` (a
 * fresh id, which names nothing) when one is given, and is an error otherwise.
 */
function urlOf(path: string, values: Record<string, string>, fallback?: () => string): string {
  return path.replace(/\{(\w+)\}/g, (_match, name: string) => {
    const value = values[name] ?? fallback?.();
    if (value === undefined) throw new Error(`no value for {${name}} in ${path}: add one to the fixture`);
    return encodeURIComponent(value);
  });
}

type Snapshot = Record<string, unknown[]>;

/** How a key's use is recorded: in batches, in the background, by design; not a change a request makes. */
const USAGE_COLUMNS = new Set(['last_used_at', 'usage_count']);

/** Every organization and every org-owned row, read deliberately across tenants, ordered by id. */
function snapshot(app: PlinthApp): Promise<Snapshot> {
  return app.database.acrossTenants(async (db) => {
    const tables: Snapshot = {
      organizations: await db.selectFrom('organizations').selectAll().orderBy('id').execute(),
    };
    for (const table of [...PLATFORM_TENANT_TABLES, ...WEBHOOK_TENANT_TABLES]) {
      const rows = await db.selectFrom(table).selectAll().orderBy('id').execute();
      tables[table] = rows.map((row) =>
        Object.fromEntries(Object.entries(row).filter(([c]) => !USAGE_COLUMNS.has(c))),
      );
    }
    return tables;
  });
}

/** The problem document of an error answer. */
function problemOf(res: LightMyRequestResponse): Problem | undefined {
  if (res.body === '') return undefined;
  const parsed = Problem.safeParse(res.json());
  return parsed.success ? parsed.data : undefined;
}

/** The names of the permissions the installation declares, from `GET /permissions`. */
async function knownPermissions(app: PlinthApp, org: OrgFixture): Promise<Set<string>> {
  const res = await app.inject({
    method: 'GET',
    url: '/api/v1/permissions',
    headers: org.ownerCaller.headers,
  });
  return new Set(PermissionList.parse(res.json()).data.map((p) => p.name));
}

/** What a scan of every route found: answers 5xx, and valid bodies refused as invalid. */
interface ScanFindings {
  serverErrors: string[];
  refusedValidBodies: string[];
  /** How many answers were 2xx: the scan reached that many handlers all the way through. */
  succeeded: number;
}

/**
 * Calls every /api/v1 operation of `doc` as `caller`, ids filled with `org`'s own records (a fresh id, naming
 * nothing, for any other parameter): first with `{}` bodies, then with the valid ones; reads before writes,
 * deletions last, the organization's own deletion at the very end. With the unscoped-access guard on the plain
 * query builders, a route that reaches an org-owned table without a scope throws, and answers 500.
 */
async function scanRoutes(
  app: PlinthApp,
  doc: OpenApiDocument,
  org: OrgFixture,
  caller: Caller,
  relogin?: TestUser,
): Promise<ScanFindings> {
  const requests = documentedRoutes(doc, '/api/v1/').flatMap((route) => {
    const valid = VALID_BODIES[routeKey(route)];
    return [
      { route, body: route.hasBody ? {} : undefined, valid: false },
      ...(valid === undefined ? [] : [{ route, body: valid, valid: true }]),
    ];
  });
  const rank = ({ route }: (typeof requests)[number]) =>
    route.method === 'GET' ? 0 : route.method === 'DELETE' ? 10_000 - route.path.length : 1;
  requests.sort((x, y) => rank(x) - rank(y));

  const findings: ScanFindings = {
    serverErrors: [],
    refusedValidBodies: [],
    succeeded: 0,
  };
  let headers = caller.headers;
  for (const { route, body, valid } of requests) {
    const url = urlOf(route.path, { ...org.ids, orgId: org.id }, newId);
    const res = await app.inject({
      method: route.method,
      url,
      headers,
      ...(body === undefined ? {} : { payload: body }),
    });
    const label = `${caller.label}: ${route.method} ${url} ${JSON.stringify(body) ?? ''} → ${res.statusCode} ${res.body}`;
    if (res.statusCode >= 500) findings.serverErrors.push(label);
    if (valid && res.statusCode === 400) findings.refusedValidBodies.push(label);
    if (res.statusCode < 300) findings.succeeded++;
    // Signing out (one of the routes) ends the session; sign in again so the routes after it are still reached.
    if (relogin && (await app.inject({ method: 'GET', url: '/api/v1/me', headers })).statusCode === 401) {
      headers = bearer((await login(app, relogin.email, PASSWORD)).accessToken);
    }
  }
  return findings;
}

/** The registered routes under /orgs/{orgId} whose operation in `doc` lacks a registered `x-permission`. */
function orgRoutesWithoutPermission(
  app: PlinthApp,
  doc: OpenApiDocument,
  known: ReadonlySet<string>,
): string[] {
  return registeredRoutes(app)
    .filter((r) => r.method !== 'HEAD' && r.path.startsWith('/api/v1/orgs/:orgId'))
    .filter(({ method, path }) => {
      // A route registered but hidden from the document is caught too: the document is what clients trust.
      const permission = doc.paths[path.replace(/:(\w+)/g, '{$1}')]?.[method.toLowerCase()]?.['x-permission'];
      return permission === undefined || !known.has(permission);
    })
    .map(({ method, path }) => `${method} ${path}`);
}

/**
 * A module with the two mistakes the route scans exist to catch: a route that reads an org-owned table
 * through the plain query builder, and one left out of the API document.
 */
const leakyModule: FastifyPluginAsync = async (plain) => {
  const app = plain.withTypeProvider<ZodTypeProvider>();
  app.get(
    '/orgs/:orgId/leaky-members',
    {
      config: { permission: 'members:read' },
      schema: { summary: 'Forgets the tenant scope', params: OrgParams },
    },
    async () => ({ count: (await app.database.db.selectFrom('memberships').select('id').execute()).length }),
  );
  app.get(
    '/orgs/:orgId/undocumented',
    { config: { permission: 'members:read' }, schema: { hide: true, params: OrgParams } },
    async () => ({}),
  );
};

describe.each(testDialects)('cross-tenant isolation (%s)', (dialect) => {
  let app: PlinthApp;
  let doc: OpenApiDocument;
  let orgRoutes: Route[];
  let a: OrgFixture;
  let b: OrgFixture;

  beforeAll(async () => {
    app = await buildTestApp(dialect, { env: { WEBHOOK_ALLOWED_HOSTS: '127.0.0.1' } });
    const res = await app.inject({ method: 'GET', url: '/openapi.json' });
    doc = res.json<OpenApiDocument>();
    orgRoutes = documentedRoutes(doc, ORG_ROUTES);
    a = await buildOrg(app, 'a');
    b = await buildOrg(app, 'b');
  }, 60_000);

  afterAll(async () => {
    await app?.close();
  });

  /**
   * Sends `request` and checks the database against `baseline`: soft-fails, naming the request, if anything
   * changed. Returns the response and the snapshot to compare the next request against.
   */
  async function callUnchanged(
    label: string,
    request: InjectOptions,
    baseline: Snapshot,
  ): Promise<{ res: LightMyRequestResponse; baseline: Snapshot }> {
    const res = await app.inject(request);
    const after = await snapshot(app);
    expect.soft(isDeepStrictEqual(after, baseline), `${label} changed the database`).toBe(true);
    return { res, baseline: after };
  }

  it('finds the organization routes in the API document', () => {
    // Guards the tests below against passing vacuously over an empty list.
    const paths = new Set(orgRoutes.map(routeKey));
    for (const key of [
      'GET /api/v1/orgs/{orgId}',
      'DELETE /api/v1/orgs/{orgId}',
      'PATCH /api/v1/orgs/{orgId}/members/{userId}',
      'DELETE /api/v1/orgs/{orgId}/invitations/{invitationId}',
      'POST /api/v1/orgs/{orgId}/apikeys/{keyId}/rotate',
      'PATCH /api/v1/orgs/{orgId}/roles/{roleName}',
    ]) {
      expect(paths).toContain(key);
    }
  });

  it('answers 404 ORG_NOT_FOUND to every caller of one organization on every route of the other, changing nothing', async () => {
    let baseline = await snapshot(app);
    const routes = withHeadRoutes(orgRoutes);
    let calls = 0;
    for (const [from, to] of [
      [a, b],
      [b, a],
    ] as const) {
      for (const route of routes) {
        for (const caller of from.callers) {
          const url = urlOf(route.path, { ...to.ids, orgId: to.id }, newId);
          const label = `${caller.label}: ${route.method} ${url}`;
          const body = bodyFor(route);
          const result = await callUnchanged(
            label,
            {
              method: route.method,
              url,
              headers: caller.headers,
              ...(body === undefined ? {} : { payload: body }),
            },
            baseline,
          );
          baseline = result.baseline;
          expect.soft(result.res.statusCode, `${label} → ${result.res.body}`).toBe(404);
          // A HEAD answer has the status and headers of the GET, without the problem document.
          if (route.method !== 'HEAD') expect.soft(problemOf(result.res)?.code, label).toBe('ORG_NOT_FOUND');
          calls++;
        }
      }
    }
    expect(calls).toBe(2 * routes.length * a.callers.length);
  });

  it('answers 403 PERMISSION_DENIED naming the route’s permission to every caller who lacks it, changing nothing', async () => {
    let baseline = await snapshot(app);
    const refusedPermissions = new Set<string>();
    for (const org of [a, b]) {
      for (const route of withHeadRoutes(orgRoutes)) {
        const permission = route.permission;
        if (permission === undefined) throw new Error(`${routeKey(route)} declares no x-permission`);
        for (const caller of org.callers.filter((c) => !c.permissions.has(permission))) {
          // Someone else's user id: a member may remove themselves without the permission.
          const userId = caller.userId === org.ids.userId ? org.owner.userId : org.ids.userId;
          const url = urlOf(route.path, { ...org.ids, userId, orgId: org.id }, newId);
          const label = `${caller.label}: ${route.method} ${url}`;
          const body = bodyFor(route);
          const result = await callUnchanged(
            label,
            {
              method: route.method,
              url,
              headers: caller.headers,
              ...(body === undefined ? {} : { payload: body }),
            },
            baseline,
          );
          baseline = result.baseline;
          expect.soft(result.res.statusCode, `${label} → ${result.res.body}`).toBe(403);
          if (route.method !== 'HEAD') {
            const problem = problemOf(result.res);
            expect.soft(problem?.code, label).toBe('PERMISSION_DENIED');
            expect.soft(problem?.permission, label).toBe(permission);
          }
          refusedPermissions.add(permission);
        }
      }
    }
    // The narrow key lacks every permission but members:read, so every other route was refused to someone.
    const expected = new Set(orgRoutes.map((r) => r.permission).filter((p) => p !== 'members:read'));
    expect(refusedPermissions).toEqual(expected);
  });

  it('decides who may call a route before it reads the body', async () => {
    const baseline = await snapshot(app);
    const withBody = orgRoutes.filter((r) => r.hasBody);
    expect(withBody.length).toBeGreaterThan(0);
    for (const route of withBody) {
      const permission = route.permission ?? '';
      const lacking = a.callers.find((c) => !c.permissions.has(permission));
      if (!lacking) throw new Error(`every caller of A holds ${permission}`);
      const url = urlOf(route.path, { ...a.ids, userId: a.owner.userId, orgId: a.id }, newId);
      const label = `${route.method} ${url}`;
      // An empty body and one that is not even JSON: neither is looked at before the caller is authorized.
      for (const payload of [{}, '{"unterminated']) {
        const headers = { ...lacking.headers, 'content-type': 'application/json' };
        const denied = await app.inject({ method: route.method, url, headers, payload });
        expect.soft(denied.statusCode, `${lacking.label}: ${label} → ${denied.body}`).toBe(403);
        expect.soft(problemOf(denied)?.code, label).toBe('PERMISSION_DENIED');

        const outsider = await app.inject({
          method: route.method,
          url,
          headers: { ...b.ownerCaller.headers, 'content-type': 'application/json' },
          payload,
        });
        expect.soft(outsider.statusCode, `owner of b: ${label} → ${outsider.body}`).toBe(404);
        expect.soft(problemOf(outsider)?.code, label).toBe('ORG_NOT_FOUND');

        const anonymous = await app.inject({
          method: route.method,
          url,
          headers: { 'content-type': 'application/json' },
          payload,
        });
        expect.soft(anonymous.statusCode, `anonymous: ${label} → ${anonymous.body}`).toBe(401);
      }
    }
    expect(await snapshot(app)).toEqual(baseline);
  });

  it('answers 404 for the other organization’s records addressed through one’s own routes, changing nothing', async () => {
    let baseline = await snapshot(app);
    const withRecords = orgRoutes.filter((r) => /\{(?!orgId\})\w+\}/.test(r.path));
    expect(withRecords.length).toBeGreaterThan(0);
    for (const [from, to] of [
      [a, b],
      [b, a],
    ] as const) {
      for (const route of withRecords) {
        // The organization's own id, every other id the other organization's: the caller may do anything here.
        const url = urlOf(route.path, { ...to.ids, orgId: from.id });
        for (const caller of [from.ownerCaller, from.broadKey]) {
          const label = `${caller.label}: ${route.method} ${url}`;
          const body = bodyFor(route);
          const result = await callUnchanged(
            label,
            {
              method: route.method,
              url,
              headers: caller.headers,
              ...(body === undefined ? {} : { payload: body }),
            },
            baseline,
          );
          baseline = result.baseline;
          expect.soft(result.res.statusCode, `${label} → ${result.res.body}`).toBe(404);
          // A record of this organization that does not exist, not the organization itself.
          expect.soft(problemOf(result.res)?.code, label).toMatch(/^(?!ORG_)[A-Z_]+_NOT_FOUND$/);
        }
      }
    }
  });

  it('refuses fields that would assign an organization, an owner or a plan, changing nothing', async () => {
    const baseline = await snapshot(app);
    const owner = a.ownerCaller.headers;
    const attempts: { method: Method; url: string; payload: Record<string, unknown> }[] = [
      { method: 'POST', url: '/api/v1/orgs', payload: { name: 'Sneaky', orgId: b.id } },
      { method: 'POST', url: '/api/v1/orgs', payload: { name: 'Sneaky', plan: 'enterprise' } },
      { method: 'POST', url: '/api/v1/orgs', payload: { name: 'Sneaky', ownerId: b.owner.userId } },
      { method: 'POST', url: '/api/v1/orgs', payload: { name: 'Sneaky', id: b.id } },
      { method: 'PATCH', url: `/api/v1/orgs/${a.id}`, payload: { plan: 'enterprise' } },
      { method: 'PATCH', url: `/api/v1/orgs/${a.id}`, payload: { name: 'Renamed', ownerId: b.owner.userId } },
      {
        method: 'PATCH',
        url: `/api/v1/orgs/${a.id}/members/${a.ids.userId}`,
        payload: { role: 'viewer', orgId: b.id },
      },
      {
        method: 'PATCH',
        url: `/api/v1/orgs/${a.id}/members/${a.ids.userId}`,
        payload: { role: 'viewer', userId: b.owner.userId },
      },
      {
        method: 'POST',
        url: `/api/v1/orgs/${a.id}/apikeys`,
        payload: { name: 'Sneaky', scopes: ['members:read'], orgId: b.id },
      },
      {
        method: 'POST',
        url: `/api/v1/orgs/${a.id}/invitations`,
        payload: { email: 'sneaky@example.test', role: 'viewer', orgId: b.id },
      },
      {
        method: 'POST',
        url: `/api/v1/orgs/${a.id}/roles`,
        payload: { name: 'sneaky', permissions: ['members:read'], orgId: b.id },
      },
    ];
    for (const { method, url, payload } of attempts) {
      const res = await app.inject({ method, url, headers: owner, payload });
      expect.soft(res.statusCode, `${method} ${url} ${JSON.stringify(payload)} → ${res.body}`).toBe(400);
      expect.soft(problemOf(res)?.code).toBe('VALIDATION_FAILED');
    }
    expect(await snapshot(app)).toEqual(baseline);
  });

  it('gives someone who belongs to both organizations, in each, only the role they hold there', async () => {
    // B's admin joins A as a viewer.
    const both = b.users.get('admin');
    if (!both) throw new Error('B has no admin');
    const token = await invite(app, a.owner.accessToken, a.id, both.email, 'viewer');
    const accepted = await app.inject({
      method: 'POST',
      url: '/api/v1/invitations/accept',
      headers: bearer(both.accessToken),
      payload: { token },
    });
    expect(accepted.statusCode, accepted.body).toBe(200);

    const baseline = await snapshot(app);
    const inA = await app.inject({
      method: 'GET',
      url: `/api/v1/orgs/${a.id}/members`,
      headers: bearer(both.accessToken),
    });
    expect(inA.statusCode).toBe(200);
    for (const [method, path] of [
      ['GET', 'invitations'],
      ['GET', 'apikeys'],
      ['DELETE', `invitations/${a.ids.invitationId}`],
      ['PATCH', `members/${a.ids.userId}`],
    ] as const) {
      const res = await app.inject({
        method,
        url: `/api/v1/orgs/${a.id}/${path}`,
        headers: bearer(both.accessToken),
        ...(method === 'PATCH' ? { payload: { role: 'viewer' } } : {}),
      });
      expect.soft(res.statusCode, `${method} ${path} → ${res.body}`).toBe(403);
      expect.soft(problemOf(res)?.code).toBe('PERMISSION_DENIED');
    }
    // Their admin rights in B are untouched.
    const inB = await app.inject({
      method: 'GET',
      url: `/api/v1/orgs/${b.id}/apikeys`,
      headers: bearer(both.accessToken),
    });
    expect(inB.statusCode).toBe(200);
    expect(await snapshot(app)).toEqual(baseline);

    // They leave A (a member may remove themselves without members:remove), so the other tests see the two
    // organizations as they were built, and A is closed to them again.
    const left = await app.inject({
      method: 'DELETE',
      url: `/api/v1/orgs/${a.id}/members/${both.userId}`,
      headers: bearer(both.accessToken),
    });
    expect(left.statusCode, left.body).toBe(204);
    const after = await app.inject({
      method: 'GET',
      url: `/api/v1/orgs/${a.id}/members`,
      headers: bearer(both.accessToken),
    });
    expectProblem(after, 404, 'ORG_NOT_FOUND');
  });

  it('refuses a removed member on the organization’s routes from the next request on', async () => {
    const leaver = await addMember(app, a.owner.accessToken, a.id, 'leaver-a@example.test', 'admin');
    const members = `/api/v1/orgs/${a.id}/members`;
    const before = await app.inject({ method: 'GET', url: members, headers: bearer(leaver.accessToken) });
    expect(before.statusCode).toBe(200);

    const removed = await app.inject({
      method: 'DELETE',
      url: `${members}/${leaver.userId}`,
      headers: a.ownerCaller.headers,
    });
    expect(removed.statusCode).toBe(204);

    const baseline = await snapshot(app);
    for (const route of orgRoutes) {
      const url = urlOf(route.path, { ...a.ids, orgId: a.id }, newId);
      const body = bodyFor(route);
      const res = await app.inject({
        method: route.method,
        url,
        headers: bearer(leaver.accessToken),
        ...(body === undefined ? {} : { payload: body }),
      });
      expect.soft(res.statusCode, `${route.method} ${url} → ${res.body}`).toBe(404);
      expect.soft(problemOf(res)?.code).toBe('ORG_NOT_FOUND');
    }
    expect(await snapshot(app)).toEqual(baseline);
  });

  it('answers 404 on every route of a deleted organization, and its keys stop working', async () => {
    const doomed = await buildOrg(app, 'd', []);
    const get = `/api/v1/orgs/${doomed.id}`;
    // Used once before, so that both the membership and the key are in the caches the deletion must clear.
    for (const caller of [doomed.ownerCaller, doomed.broadKey]) {
      expect((await app.inject({ method: 'GET', url: get, headers: caller.headers })).statusCode).toBe(200);
    }
    const deleted = await app.inject({ method: 'DELETE', url: get, headers: doomed.ownerCaller.headers });
    expect(deleted.statusCode).toBe(204);

    const baseline = await snapshot(app);
    for (const route of orgRoutes) {
      const url = urlOf(route.path, { ...doomed.ids, orgId: doomed.id }, newId);
      const body = bodyFor(route);
      const payload = body === undefined ? {} : { payload: body };
      const asOwner = await app.inject({
        method: route.method,
        url,
        headers: doomed.ownerCaller.headers,
        ...payload,
      });
      expect.soft(asOwner.statusCode, `owner: ${route.method} ${url} → ${asOwner.body}`).toBe(404);
      expect.soft(problemOf(asOwner)?.code).toBe('ORG_NOT_FOUND');
      const asKey = await app.inject({
        method: route.method,
        url,
        headers: doomed.broadKey.headers,
        ...payload,
      });
      expect.soft(asKey.statusCode, `key: ${route.method} ${url} → ${asKey.body}`).toBe(401);
    }
    expect(await snapshot(app)).toEqual(baseline);
  });

  it('documents a registered permission for every registered organization route', async () => {
    const registered = registeredRoutes(app).filter((r) => r.path.startsWith('/api/v1/orgs/:orgId'));
    expect(registered.length).toBeGreaterThanOrEqual(orgRoutes.length);
    expect(orgRoutesWithoutPermission(app, doc, await knownPermissions(app, a))).toEqual([]);
  });

  it('never answers 500 on any route, with real ids, as an owner', async () => {
    const scanned = await buildOrg(app, 's', ['member']);
    const findings = await scanRoutes(app, doc, scanned, scanned.ownerCaller, scanned.owner);
    expect(findings.serverErrors).toEqual([]);
    expect(findings.refusedValidBodies).toEqual([]);
    // Far from every request was refused: the handlers themselves ran.
    expect(findings.succeeded).toBeGreaterThan(orgRoutes.length);
  });

  it('never answers 500 on any route, with real ids, as an API key with every scope', async () => {
    const scanned = await buildOrg(app, 'k', ['member']);
    const findings = await scanRoutes(app, doc, scanned, scanned.broadKey);
    expect(findings.serverErrors).toEqual([]);
    expect(findings.refusedValidBodies).toEqual([]);
    expect(findings.succeeded).toBeGreaterThan(orgRoutes.length / 2);
  });

  it('would catch a route that reaches an org-owned table without a scope, or one missing from the document', async () => {
    const leaky = await buildTestApp(dialect, {
      modules: [leakyModule],
      env: { WEBHOOK_ALLOWED_HOSTS: '127.0.0.1' },
    });
    try {
      const leakyDoc = (await leaky.inject({ method: 'GET', url: '/openapi.json' })).json<OpenApiDocument>();
      const org = await buildOrg(leaky, 'l', []);
      expect(orgRoutesWithoutPermission(leaky, leakyDoc, await knownPermissions(leaky, org))).toEqual([
        'GET /api/v1/orgs/:orgId/undocumented',
      ]);
      const findings = await scanRoutes(leaky, leakyDoc, org, org.ownerCaller, org.owner);
      expect(findings.serverErrors).toEqual([
        expect.stringContaining(`GET /api/v1/orgs/${org.id}/leaky-members`),
      ]);
    } finally {
      await leaky.close();
    }
  });
});
