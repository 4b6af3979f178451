import { connect } from 'node:net';
import { Problem, problemType } from '@plinth/shared';
import type { LightMyRequestResponse } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { PlinthApp } from '../app.ts';
import { cleanupAfterEach, expectProblem, startTestApp } from '../test/auth-helpers.ts';
import { testDialects } from '../test/dialects.ts';
import { buildTestApp } from '../test/harness.ts';
import { hasMoreParametersThan, hasNulCharacter, jsonShapeViolation } from './request-limits.ts';

const KiB = 1024;
const MiB = 1024 * KiB;

const DEFAULT_SHAPE = { jsonMaxDepth: 32, jsonMaxArrayLength: 10_000, jsonMaxObjectKeys: 1000 };

/** `depth` arrays nested in one another around a number: `[[[1]]]` is 3 deep. */
const nestedArrays = (depth: number) => `${'['.repeat(depth)}1${']'.repeat(depth)}`;
/** `depth` objects nested in one another: `{"a":{"a":{}}}` is 3 deep. */
const nestedObjects = (depth: number) => `${'{"a":'.repeat(depth - 1)}{}${'}'.repeat(depth - 1)}`;
/** An object `{"items": [0, 0, …]}` whose array has `length` elements. */
const longArray = (length: number) => `{"items":[${new Array(length).fill('0').join(',')}]}`;
/** An object with `count` members. */
const wideObject = (count: number) => `{${Array.from({ length: count }, (_, i) => `"k${i}":0`).join(',')}}`;
/** A JSON object of about `bytes` bytes, whose shape is well within every limit. */
const bodyOfSize = (bytes: number) => `{"text":"${'x'.repeat(bytes - 11)}"}`;

describe('jsonShapeViolation', () => {
  it('accepts a document exactly at each limit and refuses one entry more', () => {
    const limits = { jsonMaxDepth: 5, jsonMaxArrayLength: 3, jsonMaxObjectKeys: 2 };
    expect(jsonShapeViolation(nestedArrays(5), limits)).toBeUndefined();
    expect(jsonShapeViolation(nestedArrays(6), limits)).toMatch(/nested more than 5 deep/);
    expect(jsonShapeViolation(nestedObjects(5), limits)).toBeUndefined();
    expect(jsonShapeViolation(nestedObjects(6), limits)).toMatch(/nested more than 5 deep/);
    expect(jsonShapeViolation('[1,2,3]', limits)).toBeUndefined();
    expect(jsonShapeViolation('[1,2,3,4]', limits)).toMatch(/more than 3 elements/);
    expect(jsonShapeViolation('{"a":1,"b":2}', limits)).toBeUndefined();
    expect(jsonShapeViolation('{"a":1,"b":2,"c":3}', limits)).toMatch(/more than 2 members/);
  });

  it('counts the entries of each array and object separately', () => {
    const limits = { jsonMaxDepth: 5, jsonMaxArrayLength: 3, jsonMaxObjectKeys: 2 };
    // Three arrays of three and an object of two: nine numbers in all, but no container over its limit.
    expect(jsonShapeViolation('{"a":[[1,2,3],[1,2,3],[1,2,3]],"b":[1,2,3]}', limits)).toBeUndefined();
    expect(jsonShapeViolation('[{"a":1,"b":2},{"a":1,"b":2},{"a":1,"b":2}]', limits)).toBeUndefined();
    expect(jsonShapeViolation('[[1,2],[1,2],[1,2],[1]]', limits)).toMatch(/more than 3 elements/);
  });

  it('ignores brackets, braces, commas and escaped quotes inside strings', () => {
    const limits = { jsonMaxDepth: 2, jsonMaxArrayLength: 2, jsonMaxObjectKeys: 2 };
    expect(jsonShapeViolation('["[[[[{{{{", ",,,,,"]', limits)).toBeUndefined();
    expect(jsonShapeViolation('{"a\\"[[[,,,": "\\\\", "b": "\\\\\\"[[[["}', limits)).toBeUndefined();
    // After an escaped backslash the quote does end the string, so the brackets after it count.
    expect(jsonShapeViolation('["\\\\", [[1]]]', limits)).toMatch(/nested more than 2 deep/);
  });

  it('refuses 100,000 nested arrays in a few milliseconds, without recursion', () => {
    const hostile = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;
    const started = performance.now();
    expect(jsonShapeViolation(hostile, DEFAULT_SHAPE)).toMatch(/nested more than 32 deep/);
    expect(performance.now() - started).toBeLessThan(50);
  });

  it('accepts ordinary JSON, and leaves text that is not JSON to the parser', () => {
    expect(jsonShapeViolation('{"email":"ada@example.com","tags":["a","b"],"n":1}', DEFAULT_SHAPE)).toBe(
      undefined,
    );
    expect(jsonShapeViolation('{"unterminated": "[[[', DEFAULT_SHAPE)).toBeUndefined();
    expect(jsonShapeViolation(']]]}}}', DEFAULT_SHAPE)).toBeUndefined();
  });
});

describe('hasNulCharacter', () => {
  it('finds a \\u0000 escape, but not an escaped backslash followed by u0000', () => {
    expect(hasNulCharacter('{"a":"x\\u0000"}')).toBe(true);
    expect(hasNulCharacter('{"a":"\\\\\\u0000"}')).toBe(true);
    expect(hasNulCharacter('{"a":"\\\\u0000"}')).toBe(false);
    expect(hasNulCharacter('{"a":"u0000"}')).toBe(false);
  });
});

describe('hasMoreParametersThan', () => {
  it('counts the &-separated parts of a query string', () => {
    expect(hasMoreParametersThan('', 0)).toBe(false);
    expect(hasMoreParametersThan('a=1', 0)).toBe(true);
    expect(hasMoreParametersThan('a=1&b=2&c=3', 3)).toBe(false);
    expect(hasMoreParametersThan('a=1&b=2&c=3', 2)).toBe(true);
    expect(hasMoreParametersThan('&&&', 3)).toBe(true);
  });
});

/** Test routes, one per route class, each taking any JSON body; and one reporting the query it received. */
const limitRoutes: FastifyPluginAsyncZod = async (api) => {
  for (const routeClass of ['standard', 'auth', 'expensive'] as const) {
    api.post(`/limits/${routeClass}`, { config: { routeClass } }, async () => ({ ok: true }));
  }
  api.post(
    '/limits/strict',
    { schema: { body: z.object({ name: z.string() }).strict() } },
    async (request) => ({ name: request.body.name }),
  );
  api.get('/limits/query', async (request) => ({
    keys: Object.keys(request.query as Record<string, unknown>).length,
  }));
  // A route with its own body limit (as a later upload route will have) keeps it.
  api.post('/limits/own-limit', { bodyLimit: 64 * KiB, config: { routeClass: 'auth' } }, async () => ({
    ok: true,
  }));
};

/** POSTs `body` as JSON text to `path`. */
function postJson(app: PlinthApp, path: string, body: string): Promise<LightMyRequestResponse> {
  return app.inject({
    method: 'POST',
    url: `/api/v1${path}`,
    headers: { 'content-type': 'application/json' },
    payload: body,
  });
}

describe.each(testDialects)('request limits through the app (%s)', (dialect) => {
  let app: PlinthApp;
  beforeAll(async () => {
    app = await buildTestApp(dialect, { modules: [limitRoutes] });
  });
  afterAll(async () => {
    await app.close();
  });

  it('gives auth routes AUTH_BODY_LIMIT_BYTES (16 KiB) and standard and expensive routes BODY_LIMIT_BYTES', async () => {
    expect((await postJson(app, '/limits/auth', bodyOfSize(16 * KiB))).statusCode).toBe(200);
    expectProblem(await postJson(app, '/limits/auth', bodyOfSize(16 * KiB + 1)), 413, 'PAYLOAD_TOO_LARGE');
    for (const path of ['/limits/standard', '/limits/expensive']) {
      expect((await postJson(app, path, bodyOfSize(MiB))).statusCode).toBe(200);
      expectProblem(await postJson(app, path, bodyOfSize(MiB + 1)), 413, 'PAYLOAD_TOO_LARGE');
    }
  });

  it('holds the sign-in and sign-up routes, which are auth routes, to the 16 KiB limit', async () => {
    for (const path of ['/auth/login', '/auth/signup']) {
      expectProblem(await postJson(app, path, bodyOfSize(16 * KiB + 1)), 413, 'PAYLOAD_TOO_LARGE');
    }
  });

  it('keeps the body limit a route sets itself', async () => {
    expect((await postJson(app, '/limits/own-limit', bodyOfSize(64 * KiB))).statusCode).toBe(200);
    expectProblem(
      await postJson(app, '/limits/own-limit', bodyOfSize(64 * KiB + 1)),
      413,
      'PAYLOAD_TOO_LARGE',
    );
  });

  it('refuses 100,000 nested arrays with 400 JSON_TOO_COMPLEX, and accepts 32', async () => {
    const response = await postJson(app, '/limits/standard', nestedArrays(100_000));
    expectProblem(response, 400, 'JSON_TOO_COMPLEX');
    expect(response.json<Problem>().detail).toBe('Arrays and objects are nested more than 32 deep.');
    expect((await postJson(app, '/limits/standard', nestedArrays(32))).statusCode).toBe(200);
    expectProblem(await postJson(app, '/limits/standard', nestedArrays(33)), 400, 'JSON_TOO_COMPLEX');
    expectProblem(await postJson(app, '/limits/standard', nestedObjects(33)), 400, 'JSON_TOO_COMPLEX');
  });

  it('refuses an array of more than 10,000 elements and an object of more than 1,000 members', async () => {
    expect((await postJson(app, '/limits/standard', longArray(10_000))).statusCode).toBe(200);
    expectProblem(await postJson(app, '/limits/standard', longArray(10_001)), 400, 'JSON_TOO_COMPLEX');
    expect((await postJson(app, '/limits/standard', wideObject(1000))).statusCode).toBe(200);
    expectProblem(await postJson(app, '/limits/standard', wideObject(1001)), 400, 'JSON_TOO_COMPLEX');
  });

  it('checks the shape before the schema: a deep body is JSON_TOO_COMPLEX, not VALIDATION_FAILED', async () => {
    const response = await postJson(app, '/limits/strict', `{"name":"x","extra":${nestedArrays(40)}}`);
    expectProblem(response, 400, 'JSON_TOO_COMPLEX');
    expect(response.json<Problem>().errors).toBeUndefined();
  });

  it('refuses __proto__ and constructor.prototype keys, however escaped, with 400 INVALID_JSON', async () => {
    for (const body of [
      '{"__proto__":{"polluted":true}}',
      '{"name":"x","nested":[{"__proto__":{"polluted":true}}]}',
      '{"\\u005f_proto__":{"polluted":true}}',
      '{"constructor":{"prototype":{"polluted":true}}}',
    ]) {
      expectProblem(await postJson(app, '/limits/standard', body), 400, 'INVALID_JSON');
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('refuses a NUL character in a body or query string with 400 BAD_REQUEST, never a database error', async () => {
    // PostgreSQL cannot store NUL in text; a sign-up carrying one would otherwise fail in the insert.
    const signup = await postJson(
      app,
      '/auth/signup',
      '{"email":"nul@example.com","password":"violet harbor quantum meadow","name":"Ada\\u0000"}',
    );
    expectProblem(signup, 400, 'BAD_REQUEST');
    expect(signup.json<Problem>().detail).toBe('A string in the body contains a NUL character.');
    expectProblem(
      await app.inject({ method: 'GET', url: '/api/v1/limits/query?q=a%00b' }),
      400,
      'BAD_REQUEST',
    );
    // An escaped backslash before `u0000` is six ordinary characters, not NUL.
    expect((await postJson(app, '/limits/strict', '{"name":"C:\\\\u0000"}')).json()).toEqual({
      name: 'C:\\u0000',
    });
  });

  it('refuses more than 100 query parameters with 400 TOO_MANY_QUERY_PARAMETERS', async () => {
    const query = (count: number) => Array.from({ length: count }, (_, i) => `p${i}=1`).join('&');
    const ok = await app.inject({ method: 'GET', url: `/api/v1/limits/query?${query(100)}` });
    expect(ok.statusCode).toBe(200);
    expect(ok.json()).toEqual({ keys: 100 });
    const refused = await app.inject({ method: 'GET', url: `/api/v1/limits/query?${query(101)}` });
    expectProblem(refused, 400, 'TOO_MANY_QUERY_PARAMETERS');
    // Repeating one name, or sending empty parts, counts too: each is a part the parser would have to read.
    const repeated = await app.inject({ method: 'GET', url: `/api/v1/limits/query?${'a=1&'.repeat(200)}` });
    expectProblem(repeated, 400, 'TOO_MANY_QUERY_PARAMETERS');
  });

  it('refuses a URL longer than 8,192 characters with 414 URI_TOO_LONG, without echoing it', async () => {
    const path = '/api/v1/limits/query?q=';
    const ok = await app.inject({ method: 'GET', url: `${path}${'a'.repeat(8192 - path.length)}` });
    expect(ok.statusCode).toBe(200);
    const refused = await app.inject({ method: 'GET', url: `${path}${'a'.repeat(8193 - path.length)}` });
    expectProblem(refused, 414, 'URI_TOO_LONG');
    expect(refused.body).not.toContain('aaaaaaaa');
    // Also on a path no route matches: the limit is checked before anything else about the request.
    expectProblem(await app.inject({ method: 'GET', url: `/${'n'.repeat(9000)}` }), 414, 'URI_TOO_LONG');
  });
});

describe.each(testDialects)('request limits set by the operator (%s)', (dialect) => {
  const cleanups = cleanupAfterEach();

  it('applies the configured JSON, query, URL and auth body limits', async () => {
    const app = await startTestApp(dialect, cleanups, {
      modules: [limitRoutes],
      env: {
        AUTH_BODY_LIMIT_BYTES: '2048',
        JSON_MAX_DEPTH: '3',
        JSON_MAX_ARRAY_LENGTH: '5',
        JSON_MAX_OBJECT_KEYS: '4',
        MAX_QUERY_PARAMETERS: '2',
        MAX_URL_LENGTH: '300',
      },
    });
    expect((await postJson(app, '/limits/auth', bodyOfSize(2048))).statusCode).toBe(200);
    expectProblem(await postJson(app, '/limits/auth', bodyOfSize(2049)), 413, 'PAYLOAD_TOO_LARGE');
    expect((await postJson(app, '/limits/standard', nestedArrays(3))).statusCode).toBe(200);
    expectProblem(await postJson(app, '/limits/standard', nestedArrays(4)), 400, 'JSON_TOO_COMPLEX');
    expectProblem(await postJson(app, '/limits/standard', '[1,2,3,4,5,6]'), 400, 'JSON_TOO_COMPLEX');
    expectProblem(await postJson(app, '/limits/standard', wideObject(5)), 400, 'JSON_TOO_COMPLEX');
    expect((await app.inject({ method: 'GET', url: '/api/v1/limits/query?a=1&b=2' })).statusCode).toBe(200);
    expectProblem(
      await app.inject({ method: 'GET', url: '/api/v1/limits/query?a=1&b=2&c=3' }),
      400,
      'TOO_MANY_QUERY_PARAMETERS',
    );
    expectProblem(
      await app.inject({ method: 'GET', url: `/api/v1/limits/query?q=${'a'.repeat(300)}` }),
      414,
      'URI_TOO_LONG',
    );
  });

  it('refuses a configuration with a limit out of range, naming the variable', async () => {
    await expect(startTestApp(dialect, cleanups, { env: { JSON_MAX_DEPTH: '0' } })).rejects.toThrow(
      /JSON_MAX_DEPTH: must be at least 1/,
    );
  });
});

/** A response read off a raw socket. */
interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * Sends `request` (raw HTTP text, or a head and a body) over a fresh TCP connection and reads one response:
 * used where the refusal comes from Node's HTTP parser, which `app.inject` does not go through. Fails after
 * `timeoutMs` rather than hanging the suite.
 */
function rawRequest(port: number, request: string | Buffer, timeoutMs = 5000): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let received = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no response within ${timeoutMs} ms`));
    }, timeoutMs);
    const finish = (response: RawResponse) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(response);
    };
    const tryParse = (final: boolean) => {
      const end = received.indexOf('\r\n\r\n');
      if (end === -1) {
        if (final) {
          clearTimeout(timer);
          reject(new Error(`connection closed without a response (${received.length} bytes)`));
        }
        return;
      }
      const [statusLine = '', ...lines] = received.subarray(0, end).toString('latin1').split('\r\n');
      const headers: Record<string, string> = {};
      for (const line of lines) {
        const colon = line.indexOf(':');
        headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      const body = received.subarray(end + 4);
      const length = Number(headers['content-length'] ?? Number.NaN);
      if (Number.isNaN(length) ? final : body.length >= length) {
        finish({
          status: Number(statusLine.split(' ')[1]),
          headers,
          body: body.subarray(0, Number.isNaN(length) ? undefined : length).toString('utf8'),
        });
      }
    };
    socket.on('data', (chunk) => {
      received = Buffer.concat([received, chunk]);
      tryParse(false);
    });
    // The server may close while the client is still writing (it refuses before reading everything).
    socket.on('error', () => tryParse(true));
    socket.on('close', () => tryParse(true));
    socket.write(request, (error) => {
      if (error) tryParse(true);
    });
  });
}

/** Asserts a raw response is the problem document for `code`, with a request id, and returns it. */
function expectRawProblem(response: RawResponse, status: number, code: string): Problem {
  expect(response.status).toBe(status);
  expect(response.headers['content-type']).toBe('application/problem+json; charset=utf-8');
  const problem = Problem.parse(JSON.parse(response.body));
  expect(problem).toMatchObject({ type: problemType(code), status, code });
  expect(problem.requestId).toBe(response.headers['x-request-id']);
  return problem;
}

const get = (path: string, headers = '') =>
  `GET ${path} HTTP/1.1\r\nHost: localhost\r\n${headers}Connection: close\r\n\r\n`;

describe.each(testDialects)('request limits on a real socket (%s)', (dialect) => {
  const cleanups = cleanupAfterEach();

  async function listening(env: Record<string, string> = {}) {
    const app = await startTestApp(dialect, cleanups, { modules: [limitRoutes], env });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const address = app.server.address();
    if (address === null || typeof address === 'string') throw new Error('not listening on TCP');
    return { app, port: address.port };
  }

  it('answers headers over MAX_HEADER_BYTES with 431 problem+json and closes the connection', async () => {
    const { port } = await listening({ MAX_HEADER_BYTES: '4096' });
    const ok = await rawRequest(port, get('/health/live', `X-Padding: ${'p'.repeat(3000)}\r\n`));
    expect(ok.status).toBe(200);
    const refused = await rawRequest(port, get('/health/live', `X-Padding: ${'p'.repeat(5000)}\r\n`));
    const problem = expectRawProblem(refused, 431, 'HEADERS_TOO_LARGE');
    expect(refused.headers.connection).toBe('close');
    expect(problem.requestId).toMatch(/^[0-9a-f-]{36}$/);
    // Many small headers add up the same way.
    const many = Array.from({ length: 400 }, (_, i) => `X-H${i}: value\r\n`).join('');
    expectRawProblem(await rawRequest(port, get('/health/live', many)), 431, 'HEADERS_TOO_LARGE');
  });

  it('answers 414 for a long URL, and 431 once the URL alone outgrows the request head limit', async () => {
    const { port } = await listening();
    expectRawProblem(
      await rawRequest(port, get(`/api/v1/limits/query?q=${'a'.repeat(9000)}`)),
      414,
      'URI_TOO_LONG',
    );
    expectRawProblem(
      await rawRequest(port, get(`/api/v1/limits/query?q=${'a'.repeat(20_000)}`)),
      431,
      'HEADERS_TOO_LARGE',
    );
  });

  it('answers a request that is not HTTP with 400 problem+json', async () => {
    const { port } = await listening();
    expectRawProblem(await rawRequest(port, 'HELLO THERE\r\n\r\n'), 400, 'BAD_REQUEST');
  });

  it('refuses a declared oversized body before it arrives', async () => {
    const { port } = await listening();
    // The head announces 2 MiB and no byte of it is sent: the answer must not wait for the body.
    const head =
      'POST /api/v1/limits/standard HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n' +
      `Content-Length: ${2 * MiB}\r\n\r\n`;
    expectRawProblem(await rawRequest(port, head, 2000), 413, 'PAYLOAD_TOO_LARGE');
  });

  it('keeps serving a normal client while a hostile one sends oversized, deep, wide and huge-header requests', async () => {
    const { port } = await listening();
    const base = `http://127.0.0.1:${port}`;
    const json = (body: string) =>
      'POST /api/v1/limits/standard HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
    const hostile: { request: string; status: number; code: string }[] = [
      { request: json(nestedArrays(100_000)), status: 400, code: 'JSON_TOO_COMPLEX' },
      { request: json(longArray(50_000)), status: 400, code: 'JSON_TOO_COMPLEX' },
      { request: json(wideObject(5000)), status: 400, code: 'JSON_TOO_COMPLEX' },
      { request: json(bodyOfSize(MiB + KiB)), status: 413, code: 'PAYLOAD_TOO_LARGE' },
      {
        request: get('/health/live', `X-Padding: ${'p'.repeat(64 * KiB)}\r\n`),
        status: 431,
        code: 'HEADERS_TOO_LARGE',
      },
      {
        request: get(`/api/v1/limits/query?${'a=1&'.repeat(500)}`),
        status: 400,
        code: 'TOO_MANY_QUERY_PARAMETERS',
      },
    ];

    let attacking = true;
    const refusals: RawResponse[] = [];
    const attacker = (async () => {
      while (attacking) {
        const attacks = hostile.map(async (h) => ({ h, response: await rawRequest(port, h.request) }));
        for (const { h, response } of await Promise.all(attacks)) {
          expectRawProblem(response, h.status, h.code);
          refusals.push(response);
        }
      }
    })();

    const served: number[] = [];
    const startedAt = Date.now();
    for (let i = 0; i < 40; i++) {
      const response = await fetch(`${base}/api/v1/limits/standard`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ i }),
      });
      served.push(response.status);
      expect(await response.json()).toEqual({ ok: true });
    }
    const elapsed = Date.now() - startedAt;
    attacking = false;
    await attacker;

    expect(served).toEqual(new Array(40).fill(200));
    expect(refusals.length).toBeGreaterThanOrEqual(hostile.length);
    // Forty small requests take milliseconds each; under attack they must not queue behind the hostile ones.
    expect(elapsed).toBeLessThan(10_000);
  });
});
