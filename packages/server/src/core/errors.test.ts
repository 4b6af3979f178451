import { coreErrors, defineErrors, Problem, problemType } from '@plinth/shared';
import Fastify, { type LightMyRequestResponse } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import type { Logger } from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import type { PlinthApp } from '../app.ts';
import { testDialects } from '../test/dialects.ts';
import { buildTestApp } from '../test/harness.ts';
import { AppError, errorHandlingPlugin, frameworkErrorHandler } from './errors.ts';
import { requestIdOf } from './request-id.ts';

/** A freshly generated request id: a lower-case UUID (v7). */
const GENERATED_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** SQL in an error message: what a database driver puts there, and what must never reach a client. */
const SQL_IN_MESSAGE = 'select password_hash from users where email = $1';

const testErrors = defineErrors({
  GADGET_NOT_FOUND: { status: 404, title: 'Gadget not found.' },
  GADGET_BUSY: { status: 409, title: 'The gadget is busy.' },
});

/** What the 500 handler logged, per request id, so a test can check the server kept the whole story. */
const loggedErrors = new Map<string, unknown[]>();

const testRoutes: FastifyPluginAsyncZod = async (api) => {
  // Watches what the error handler logs for these routes: the app's logger writes to stdout and has no
  // destination option a test could point elsewhere, so the log call itself is observed.
  api.addHook('onRequest', async (request) => {
    // Fastify's request logger is a pino child logger; its bindings are what every line it writes carries.
    const log = request.log as Logger;
    const requestId = String(log.bindings().requestId);
    vi.spyOn(log, 'error').mockImplementation((...args: unknown[]) => {
      loggedErrors.set(requestId, args);
    });
  });

  api.post(
    '/gadgets',
    {
      schema: {
        body: z.object({ email: z.email(), name: z.string().min(1), count: z.number().int() }),
      },
    },
    async (request) => ({ email: request.body.email }),
  );
  api.get(
    '/gadgets/:gadgetId',
    {
      schema: {
        params: z.object({ gadgetId: z.uuid() }),
        querystring: z.object({ limit: z.coerce.number().int().max(10).optional() }),
        headers: z.object({ 'x-gadget-version': z.enum(['1', '2']).optional() }),
      },
    },
    async (request) => ({ id: request.params.gadgetId }),
  );
  api.post('/echo', async (request) => ({ received: request.body ?? null }));
  api.get('/bug', async () => {
    throw new Error(`duplicate key value violates unique constraint: ${SQL_IN_MESSAGE}`);
  });
  api.get('/throws-null', async () => {
    throw null;
  });
  api.get('/throws-string', async () => {
    throw `query failed: ${SQL_IN_MESSAGE}`;
  });
  api.get('/gadget-missing', async () => {
    throw new AppError(testErrors.GADGET_NOT_FOUND, { detail: 'No gadget has id 42.' });
  });
  api.get('/gadget-busy', async () => {
    throw new AppError(testErrors.GADGET_BUSY, {
      detail: 'The gadget is being calibrated.',
      headers: { 'retry-after': '30' },
      errors: [{ path: 'body.mode', message: 'Calibration mode cannot change now.' }],
    });
  });
  api.get('/plugin-429', async () => {
    // What a Fastify plugin (rate limiting, static files, …) throws: an Error carrying an HTTP status.
    throw Object.assign(new Error('Rate limit exceeded, retry in 1 minute'), { statusCode: 429 });
  });
  api.get(
    '/bad-response',
    { schema: { response: { 200: z.object({ id: z.string(), name: z.string() }) } } },
    // The handler breaks its own contract: `id` is a number and the secret should never have been returned.
    async () => ({ id: 7, name: 'internal-secret-value' }) as unknown as { id: string; name: string },
  );
};

/** Asserts `response` is the problem+json document for `code`, and returns it. */
function expectProblem(
  response: LightMyRequestResponse,
  status: number,
  code: string,
  title?: string,
): Problem {
  expect(response.statusCode).toBe(status);
  expect(response.headers['content-type']).toBe('application/problem+json; charset=utf-8');
  const problem = Problem.parse(response.json());
  expect(problem).toMatchObject({ type: problemType(code), status, code });
  if (title !== undefined) expect(problem.title).toBe(title);
  expect(problem.requestId).toBe(response.headers['x-request-id']);
  expect(problem.requestId.length).toBeGreaterThan(0);
  return problem;
}

describe.each(testDialects)('error responses (%s)', (dialect) => {
  let app: PlinthApp;
  beforeAll(async () => {
    app = await buildTestApp(dialect, { modules: [testRoutes] });
  });
  afterAll(async () => {
    await app.close();
  });

  it('answers an unknown route with 404 NOT_FOUND without echoing the path', async () => {
    const response = await app.inject({
      method: 'GET',
      url: '/api/v1/no-such-thing/<script>alert(1)</script>',
    });
    const problem = expectProblem(response, 404, 'NOT_FOUND', coreErrors.NOT_FOUND.title);
    expect(response.body).not.toContain('script');
    expect(problem.detail).toBe('No route matches this method and path.');
  });

  it('answers a known path with the wrong method with 404 NOT_FOUND', async () => {
    const response = await app.inject({ method: 'DELETE', url: '/api/v1/gadgets' });
    expectProblem(response, 404, 'NOT_FOUND');
  });

  it('answers malformed JSON with 400 INVALID_JSON', async () => {
    const response = await app.inject({
      method: 'POST',
      url: '/api/v1/gadgets',
      headers: { 'content-type': 'application/json' },
      payload: '{"email": "a@example.com",',
    });
    expectProblem(response, 400, 'INVALID_JSON', coreErrors.INVALID_JSON.title);
  });

  it('answers an empty body sent as JSON with 400 INVALID_JSON', async () => {
    const response = await app.inject({
      method: 'POST',
      url: '/api/v1/gadgets',
      headers: { 'content-type': 'application/json' },
      payload: '',
    });
    expectProblem(response, 400, 'INVALID_JSON');
  });

  it('answers a schema violation with 400 and the failing field paths', async () => {
    const response = await app.inject({
      method: 'POST',
      url: '/api/v1/gadgets',
      payload: { email: 'not-an-email', name: 'ok', count: 1.5 },
    });
    const problem = expectProblem(response, 400, 'VALIDATION_FAILED', coreErrors.VALIDATION_FAILED.title);
    expect(problem.errors?.map((e) => e.path).sort()).toEqual(['body.count', 'body.email']);
    for (const error of problem.errors ?? []) expect(error.message.length).toBeGreaterThan(0);
  });

  it('names a missing required field by its path', async () => {
    const response = await app.inject({
      method: 'POST',
      url: '/api/v1/gadgets',
      payload: { email: 'a@example.com', count: 1 },
    });
    const problem = expectProblem(response, 400, 'VALIDATION_FAILED');
    expect(problem.errors).toEqual([{ path: 'body.name', message: expect.any(String) }]);
  });

  it('answers a body that is not an object, or is missing, with 400 at path "body"', async () => {
    const notAnObject = await app.inject({
      method: 'POST',
      url: '/api/v1/gadgets',
      headers: { 'content-type': 'application/json' },
      payload: '"just a string"',
    });
    expect(expectProblem(notAnObject, 400, 'VALIDATION_FAILED').errors?.map((e) => e.path)).toEqual(['body']);

    const missing = await app.inject({ method: 'POST', url: '/api/v1/gadgets' });
    expect(expectProblem(missing, 400, 'VALIDATION_FAILED').errors?.map((e) => e.path)).toEqual(['body']);
  });

  it('reports a query-string violation at path query.<name>', async () => {
    const response = await app.inject({
      method: 'GET',
      url: '/api/v1/gadgets/0190a0a0-0000-7000-8000-000000000000?limit=11',
    });
    const problem = expectProblem(response, 400, 'VALIDATION_FAILED');
    expect(problem.errors?.map((e) => e.path)).toEqual(['query.limit']);
  });

  it('reports a path-parameter violation at path params.<name>', async () => {
    const response = await app.inject({ method: 'GET', url: '/api/v1/gadgets/not-a-uuid' });
    const problem = expectProblem(response, 400, 'VALIDATION_FAILED');
    expect(problem.errors?.map((e) => e.path)).toEqual(['params.gadgetId']);
  });

  it('reports a header violation at path headers.<name>', async () => {
    const response = await app.inject({
      method: 'GET',
      url: '/api/v1/gadgets/0190a0a0-0000-7000-8000-000000000000',
      headers: { 'x-gadget-version': '9' },
    });
    const problem = expectProblem(response, 400, 'VALIDATION_FAILED');
    expect(problem.errors?.map((e) => e.path)).toEqual(['headers.x-gadget-version']);
  });

  it('accepts a request that satisfies every schema', async () => {
    const ok = await app.inject({
      method: 'POST',
      url: '/api/v1/gadgets',
      payload: { email: 'a@example.com', name: 'Gizmo', count: 2 },
    });
    expect(ok.statusCode).toBe(200);
    expect(ok.json()).toEqual({ email: 'a@example.com' });
  });

  it('answers a body over the default 1 MiB limit with 413 PAYLOAD_TOO_LARGE', async () => {
    const response = await app.inject({
      method: 'POST',
      url: '/api/v1/echo',
      headers: { 'content-type': 'application/json' },
      payload: JSON.stringify({ pad: 'x'.repeat(1024 * 1024) }),
    });
    expectProblem(response, 413, 'PAYLOAD_TOO_LARGE', coreErrors.PAYLOAD_TOO_LARGE.title);
  });

  it('accepts a body just under the default limit', async () => {
    const payload = JSON.stringify({ pad: 'x'.repeat(1024 * 1024 - 100) });
    const response = await app.inject({
      method: 'POST',
      url: '/api/v1/echo',
      headers: { 'content-type': 'application/json' },
      payload,
    });
    expect(response.statusCode).toBe(200);
  });

  it.each([
    ['text/plain', 'hello'],
    ['application/xml', '<gadget/>'],
    ['application/x-www-form-urlencoded', 'email=a%40example.com'],
  ])('answers a %s body with 415 UNSUPPORTED_MEDIA_TYPE', async (contentType, payload) => {
    for (const url of ['/api/v1/gadgets', '/api/v1/echo']) {
      const response = await app.inject({
        method: 'POST',
        url,
        headers: { 'content-type': contentType },
        payload,
      });
      expectProblem(response, 415, 'UNSUPPORTED_MEDIA_TYPE', coreErrors.UNSUPPORTED_MEDIA_TYPE.title);
    }
  });

  it('answers a thrown bug with 500 INTERNAL_ERROR that reveals no message, stack or SQL', async () => {
    const response = await app.inject({ method: 'GET', url: '/api/v1/bug' });
    const problem = expectProblem(response, 500, 'INTERNAL_ERROR', coreErrors.INTERNAL_ERROR.title);
    expect(problem).not.toHaveProperty('detail');
    expect(Object.keys(problem).sort()).toEqual(['code', 'requestId', 'status', 'title', 'type']);
    for (const secret of [SQL_IN_MESSAGE, 'password_hash', 'duplicate key', 'errors.test.ts', '    at '])
      expect(response.body).not.toContain(secret);
  });

  it('logs a 500 in full server-side under the request id', async () => {
    const response = await app.inject({
      method: 'GET',
      url: '/api/v1/bug',
      headers: { 'x-request-id': 'trace-500-log-check' },
    });
    expectProblem(response, 500, 'INTERNAL_ERROR');
    // The request's logger is bound to its request id, so every line it writes carries it.
    const logged = loggedErrors.get('trace-500-log-check');
    expect(logged).toBeDefined();
    const [fields] = logged ?? [];
    const err = (fields as { err?: unknown }).err;
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toContain(SQL_IN_MESSAGE);
    expect((err as Error).stack).toContain('errors.test.ts');
  });

  it.each([
    ['null', '/api/v1/throws-null'],
    ['a string', '/api/v1/throws-string'],
  ])('answers a thrown %s with a 500 problem document', async (_what, url) => {
    const response = await app.inject({ method: 'GET', url });
    expectProblem(response, 500, 'INTERNAL_ERROR');
    expect(response.body).not.toContain(SQL_IN_MESSAGE);
    expect(response.body).not.toContain('Cannot read properties');
  });

  it("renders an AppError with its catalogue entry's status, code and title and the request's detail", async () => {
    const response = await app.inject({ method: 'GET', url: '/api/v1/gadget-missing' });
    const problem = expectProblem(response, 404, 'GADGET_NOT_FOUND', 'Gadget not found.');
    expect(problem.detail).toBe('No gadget has id 42.');
    expect(problem).not.toHaveProperty('errors');
  });

  it("renders an AppError's field errors and extra headers", async () => {
    const response = await app.inject({ method: 'GET', url: '/api/v1/gadget-busy' });
    const problem = expectProblem(response, 409, 'GADGET_BUSY', 'The gadget is busy.');
    expect(problem.detail).toBe('The gadget is being calibrated.');
    expect(problem.errors).toEqual([{ path: 'body.mode', message: 'Calibration mode cannot change now.' }]);
    expect(response.headers['retry-after']).toBe('30');
  });

  it("keeps the status of a plugin's client error instead of turning it into 400", async () => {
    const response = await app.inject({ method: 'GET', url: '/api/v1/plugin-429' });
    const problem = expectProblem(response, 429, 'REQUEST_REFUSED', coreErrors.REQUEST_REFUSED.title);
    expect(problem.detail).toBe('Rate limit exceeded, retry in 1 minute');
  });

  it('answers a response that breaks its own schema with 500 and does not leak the response', async () => {
    const response = await app.inject({ method: 'GET', url: '/api/v1/bad-response' });
    expectProblem(response, 500, 'INTERNAL_ERROR');
    expect(response.body).not.toContain('internal-secret-value');
    expect(response.body).not.toContain('expected string');
  });
});

describe.each(testDialects)('request ids (%s)', (dialect) => {
  let app: PlinthApp;
  beforeAll(async () => {
    app = await buildTestApp(dialect, { modules: [testRoutes] });
  });
  afterAll(async () => {
    await app.close();
  });

  it.each([
    ['a UUID', '0190a0a0-0000-7000-8000-0000000000ab'],
    ['a tracing id with dots, colons and underscores', 'edge-7.lb_2:4bf92f3577b34da6a3ce929d0e0e4736'],
    ['128 characters', 'a'.repeat(128)],
  ])('echoes a well-formed inbound X-Request-Id (%s) and uses it as requestId', async (_what, inbound) => {
    const ok = await app.inject({ method: 'GET', url: '/health/live', headers: { 'x-request-id': inbound } });
    expect(ok.statusCode).toBe(200);
    expect(ok.headers['x-request-id']).toBe(inbound);

    const failed = await app.inject({
      method: 'GET',
      url: '/api/v1/bug',
      headers: { 'x-request-id': inbound },
    });
    expect(expectProblem(failed, 500, 'INTERNAL_ERROR').requestId).toBe(inbound);
  });

  it.each([
    ['contains a space', 'abc def'],
    ['is longer than 128 characters', 'a'.repeat(129)],
    ['contains CR LF (header injection)', 'abc\r\nset-cookie: session=stolen'],
    ['contains a log-forging newline', 'abc\n{"level":60}'],
    ['contains non-ASCII', 'idé'],
  ])('replaces an inbound X-Request-Id that %s with a fresh UUID', async (_what, inbound) => {
    const response = await app.inject({
      method: 'GET',
      url: '/api/v1/nope',
      headers: { 'x-request-id': inbound },
    });
    const problem = expectProblem(response, 404, 'NOT_FOUND');
    expect(problem.requestId).toMatch(GENERATED_ID);
    expect(response.headers['set-cookie']).toBeUndefined();
  });

  it('puts an X-Request-Id on successful and failed responses alike, unique per request', async () => {
    const responses = await Promise.all([
      app.inject({ method: 'GET', url: '/health/live' }),
      app.inject({ method: 'GET', url: '/health/live' }),
      app.inject({ method: 'GET', url: '/api/v1/nope' }),
      app.inject({ method: 'POST', url: '/api/v1/gadgets', payload: {} }),
      app.inject({ method: 'GET', url: '/api/v1/bug' }),
      app.inject({
        method: 'POST',
        url: '/api/v1/echo',
        headers: { 'content-type': 'text/plain' },
        payload: 'x',
      }),
    ]);
    expect(responses.map((r) => r.statusCode)).toEqual([200, 200, 404, 400, 500, 415]);
    const ids = responses.map((r) => r.headers['x-request-id']);
    for (const id of ids) expect(id).toMatch(GENERATED_ID);
    expect(new Set(ids).size).toBe(ids.length);
  });
});

describe.each(testDialects)('a small BODY_LIMIT_BYTES (%s)', (dialect) => {
  let app: PlinthApp;
  beforeAll(async () => {
    app = await buildTestApp(dialect, { modules: [testRoutes], env: { BODY_LIMIT_BYTES: '256' } });
  });
  afterAll(async () => {
    await app.close();
  });

  it('refuses a body over the configured limit with 413 and accepts one within it', async () => {
    const tooLarge = await app.inject({
      method: 'POST',
      url: '/api/v1/echo',
      headers: { 'content-type': 'application/json' },
      payload: JSON.stringify({ pad: 'x'.repeat(300) }),
    });
    expectProblem(tooLarge, 413, 'PAYLOAD_TOO_LARGE');

    const small = await app.inject({
      method: 'POST',
      url: '/api/v1/echo',
      payload: { pad: 'x'.repeat(100) },
    });
    expect(small.statusCode).toBe(200);
    expect(small.json()).toEqual({ received: { pad: 'x'.repeat(100) } });
  });
});

// The router rejects some URLs before any hook or error handler runs; Fastify hands those to its
// `frameworkErrors` option, which the app must set to `frameworkErrorHandler`. This checks the handler on a
// bare Fastify configured the same way.
describe('router errors (frameworkErrorHandler)', () => {
  const app = Fastify({ frameworkErrors: frameworkErrorHandler, genReqId: requestIdOf, logger: false });
  beforeAll(async () => {
    app.setValidatorCompiler(validatorCompiler);
    app.setSerializerCompiler(serializerCompiler);
    await app.register(errorHandlingPlugin);
    app.get('/gadgets/:gadgetId', async () => ({ ok: true }));
    await app.ready();
  });
  afterAll(async () => {
    await app.close();
  });

  it('answers a badly percent-encoded URL with a 400 problem document that does not echo it', async () => {
    const response = await app.inject({
      method: 'GET',
      url: '/gadgets/%E0%A4%A<script>',
      headers: { 'x-request-id': 'bad-url-1' },
    });
    const problem = expectProblem(response, 400, 'BAD_REQUEST');
    expect(problem.requestId).toBe('bad-url-1');
    expect(response.headers['x-content-type-options']).toBe('nosniff');
    expect(response.body).not.toContain('script');
  });

  it('answers an over-long path parameter with 414 without echoing it', async () => {
    const response = await app.inject({ method: 'GET', url: `/gadgets/${'g'.repeat(500)}` });
    const problem = expectProblem(response, 414, 'URI_TOO_LONG');
    expect(problem.requestId).toMatch(GENERATED_ID);
    expect(response.body).not.toContain('ggggg');
  });
});
