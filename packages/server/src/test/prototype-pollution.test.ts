import { describe, expect, it } from 'vitest';
import type { PlinthApp } from '../app.ts';
import { newId } from '../core/ids.ts';
import { bearer, cleanupAfterEach, startTestApp } from './auth-helpers.ts';
import { testDialects } from './dialects.ts';
import { createOrg, signedInUser } from './org-helpers.ts';
import { registeredRoutes } from './route-table.ts';

// Prototype pollution through every write route: bodies and query strings carrying `__proto__`, `constructor`
// and `prototype` keys are sent as raw JSON text (a JavaScript object literal would swallow `__proto__`) by a
// signed-in organization owner, so that every route's authentication passes and its body really is parsed.
// Keys that could reach a prototype are refused (4xx); the others are harmless (never a 5xx); and after every
// request `Object.prototype` is exactly what it was.

const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** Bodies the JSON parser must refuse: each would set a prototype if parsed naively and merged. */
const POISONED_BODIES = [
  '{"__proto__":{"polluted":"yes"}}',
  '{"name":"x","settings":{"__proto__":{"polluted":"yes"}}}',
  '{"\\u005f\\u005fproto\\u005f\\u005f":{"polluted":"yes"}}',
  '{"constructor":{"prototype":{"polluted":"yes"}}}',
  '[{"constructor":{"prototype":{"polluted":"yes"}}}]',
];

/** A body whose keys name the prototype chain without being able to reach it: parsed, then harmless. */
const HARMLESS_BODY =
  '{"prototype":{"polluted":"yes"},"constructor":{"name":"polluted"},"nested":{"prototype":{"polluted":"yes"}}}';

/** Query parameters naming the prototype chain, in the bracket and dot notations of nesting parsers. */
const POISONED_QUERY = [
  '__proto__[polluted]=yes',
  '__proto__.polluted=yes',
  '__proto__=polluted',
  'constructor[prototype][polluted]=yes',
  'constructor.prototype.polluted=yes',
  'prototype[polluted]=yes',
].join('&');

/** A snapshot of `Object.prototype`'s own properties, compared by identity. */
function prototypeSnapshot(): Map<string | symbol, unknown> {
  return new Map(
    Reflect.ownKeys(Object.prototype).map((key) => [
      key,
      Object.getOwnPropertyDescriptor(Object.prototype, key)?.value,
    ]),
  );
}

const cleanups = cleanupAfterEach();

/**
 * The walk sends hundreds of requests from one address, many to `auth` routes; it is about parsing, so rate
 * limits (tested on their own) are off rather than turning its answers into 429s.
 */
const env = { RATE_LIMITS_ENABLED: 'false' };

describe.each(testDialects)('prototype pollution through every write route (%s)', (dialect) => {
  /** A signed-in owner of an organization, and the values to fill a route's path parameters with. */
  async function caller(app: PlinthApp) {
    const user = await signedInUser(app, `owner-${newId()}@example.com`);
    const org = await createOrg(app, user.accessToken, `Org ${newId()}`);
    return { headers: bearer(user.accessToken), params: { orgId: org.id, userId: user.userId } };
  }

  /** `path` with `:orgId` and `:userId` the caller's, and any other parameter a fresh id (naming nothing). */
  function urlOf(path: string, params: Record<string, string>): string {
    return path.replace(/:(\w+)/g, (_match, name: string) => params[name] ?? newId());
  }

  it('refuses __proto__ and constructor.prototype bodies with a 4xx and leaves Object.prototype unchanged', async () => {
    const app = await startTestApp(dialect, cleanups, { env });
    await app.ready();
    const routes = registeredRoutes(app).filter((r) => WRITE_METHODS.has(r.method));
    // The walk must cover the platform's write routes, not an empty or truncated table.
    expect(routes.length).toBeGreaterThan(30);
    expect(routes).toContainEqual({ method: 'POST', path: '/api/v1/auth/signup' });
    expect(routes).toContainEqual({ method: 'PATCH', path: '/api/v1/orgs/:orgId/members/:userId' });

    const before = prototypeSnapshot();
    const { headers, params } = await caller(app);
    const answers: string[] = [];
    for (const route of routes) {
      for (const body of POISONED_BODIES) {
        const response = await app.inject({
          method: route.method as 'POST',
          url: `${urlOf(route.path, params)}?${POISONED_QUERY}`,
          headers: { ...headers, 'content-type': 'application/json' },
          payload: body,
        });
        answers.push(response.json<{ code: string }>().code);
        expect(response.statusCode, `${route.method} ${route.path} with ${body}`).toBeGreaterThanOrEqual(400);
        expect(response.statusCode, `${route.method} ${route.path} with ${body}`).toBeLessThan(500);
        expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
        expect(({} as Record<string, unknown>).polluted).toBeUndefined();
        expect(prototypeSnapshot()).toEqual(before);
      }
    }
    // Every route the caller may use parses the body, so the poisoned key itself is what most of them refuse; the
    // rest answer before reading it (a fresh id that names nothing, a route for someone else).
    const invalidJson = answers.filter((code) => code === 'INVALID_JSON').length;
    expect(invalidJson).toBeGreaterThan(answers.length / 2);
  });

  it('answers bodies and query strings that merely name the prototype without a 5xx, changing no prototype', async () => {
    const app = await startTestApp(dialect, cleanups, { env });
    await app.ready();
    const routes = registeredRoutes(app).filter((r) => WRITE_METHODS.has(r.method));
    const before = prototypeSnapshot();
    let current = await caller(app);
    for (const route of routes) {
      const response = await app.inject({
        method: route.method as 'POST',
        url: `${urlOf(route.path, current.params)}?${POISONED_QUERY}`,
        headers: { ...current.headers, 'content-type': 'application/json' },
        payload: HARMLESS_BODY,
      });
      expect(response.statusCode, `${route.method} ${route.path}`).toBeLessThan(500);
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
      expect(prototypeSnapshot()).toEqual(before);
      // A request that succeeded may have signed the caller out or deleted their organization: start afresh.
      if (response.statusCode < 300) current = await caller(app);
    }
  });
});
