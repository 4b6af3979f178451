import { readFileSync } from 'node:fs';
import { createConfig, lintFromString } from '@redocly/openapi-core';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { PlinthApp } from '../../app.ts';
import { jsonResponse, problemResponses } from '../../core/responses.ts';
import { testDialects } from '../../test/dialects.ts';
import { buildTestApp } from '../../test/harness.ts';

const serverPackage = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

interface Operation {
  summary?: string;
  operationId?: string;
  tags?: string[];
  security?: unknown[];
  parameters?: unknown[];
  requestBody?: unknown;
  responses?: Record<string, { content?: Record<string, unknown> }>;
}
interface OpenApiDocument {
  openapi: string;
  info: { title: string; version: string; license?: unknown };
  security?: unknown[];
  paths: Record<string, Record<string, Operation>>;
  components?: { schemas?: Record<string, unknown>; securitySchemes?: Record<string, unknown> };
}

const HTTP_METHODS = new Set(['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace']);

/**
 * An application module as a team would write one: a documented route with a path parameter, a body with a
 * named schema, and the errors it can answer. It shows that application routes join the same document.
 */
const Thing = z.object({ id: z.string(), name: z.string() }).meta({ id: 'Thing' });
const RenameThing = z.object({ name: z.string().min(1) }).meta({ id: 'RenameThing' });
const thingsModule: FastifyPluginAsyncZod = async (api) => {
  api.put(
    '/things/:id',
    {
      schema: {
        summary: 'Rename a thing',
        operationId: 'renameThing',
        // The tag list is the platform's (app.ts passes it to the docs plugin); a test module borrows one.
        tags: ['Observability'],
        security: [],
        params: z.object({ id: z.string() }),
        body: RenameThing,
        response: { 200: jsonResponse(Thing, 'The renamed thing.'), ...problemResponses(400, 404) },
      },
    },
    async (request) => ({ id: request.params.id, name: request.body.name }),
  );
};

const apps: PlinthApp[] = [];
afterEach(async () => {
  for (const app of apps.splice(0)) await app.close();
});

async function openApiDocument(dialect: (typeof testDialects)[number]) {
  const app = await buildTestApp(dialect, { modules: [thingsModule] });
  apps.push(app);
  const res = await app.inject({ method: 'GET', url: '/openapi.json' });
  expect(res.statusCode).toBe(200);
  expect(res.headers['content-type']).toMatch(/^application\/json/);
  return { app, source: res.body, document: res.json<OpenApiDocument>() };
}

function operationsOf(document: OpenApiDocument): [string, Operation][] {
  return Object.entries(document.paths).flatMap(([path, item]) =>
    Object.entries(item)
      .filter(([method]) => HTTP_METHODS.has(method))
      .map(([method, operation]): [string, Operation] => [`${method.toUpperCase()} ${path}`, operation]),
  );
}

describe.each(testDialects)('GET /openapi.json (%s)', (dialect) => {
  it('is an OpenAPI 3.1 document of this version of Plinth', async () => {
    const { document } = await openApiDocument(dialect);
    expect(document.openapi).toMatch(/^3\.1\.\d+$/);
    expect(document.info.title).toBe('Plinth API');
    expect(document.info.version).toBe(serverPackage.version);
  });

  it("passes Redocly's recommended rules with no errors", async () => {
    const { source } = await openApiDocument(dialect);
    const config = await createConfig({
      extends: ['recommended'],
      // Probes such as /health/live take no input, so no request of theirs can be a client error; a 4xx
      // documented there would be a lie. The next test asks for a 400 wherever there is input instead.
      rules: { 'operation-4xx-response': 'off' },
    });
    const problems = await lintFromString({ source, absoluteRef: 'openapi.json', config });
    const describeProblem = (p: (typeof problems)[number]) =>
      `${p.ruleId}: ${p.message} at ${p.location.map((l) => l.pointer).join(', ')}`;
    // Warnings do not fail the build, but they are shown so that whoever added them sees them.
    const warnings = problems.filter((p) => p.severity !== 'error').map(describeProblem);
    if (warnings.length > 0) console.warn(`Redocly warnings for /openapi.json:\n  ${warnings.join('\n  ')}`);
    expect(problems.filter((p) => p.severity === 'error').map(describeProblem)).toEqual([]);
  });

  it('gives every operation a summary, an operationId, tags, a security requirement and its errors', async () => {
    const { document } = await openApiDocument(dialect);
    const operations = operationsOf(document);
    expect(operations.map(([name]) => name)).toEqual(
      expect.arrayContaining([
        'GET /health',
        'GET /health/live',
        'GET /health/ready',
        'GET /metrics',
        'POST /api/v1/auth/login',
        'PUT /api/v1/things/{id}',
      ]),
    );
    const operationIds = new Set<string>();
    for (const [name, operation] of operations) {
      expect(operation.summary, name).toBeTruthy();
      expect(operation.operationId, name).toBeTruthy();
      operationIds.add(operation.operationId ?? '');
      expect(operation.tags?.length, name).toBeGreaterThan(0);
      expect(operation.security ?? document.security, name).toBeDefined();
      const statuses = Object.keys(operation.responses ?? {});
      expect(
        statuses.some((s) => /^[45]/.test(s)),
        name,
      ).toBe(true);
      // An operation that takes input says how it refuses bad input.
      if ((operation.parameters?.length ?? 0) > 0 || operation.requestBody)
        expect(statuses, name).toContain('400');
      // Every error is sent as a problem document, and the document says so.
      for (const status of statuses.filter((s) => /^[45]/.test(s))) {
        expect(Object.keys(operation.responses?.[status]?.content ?? {}), `${name} ${status}`).toEqual([
          'application/problem+json',
        ]);
      }
    }
    expect(operationIds.size).toBe(operations.length);
  });

  it('requires the metrics token wherever METRICS_TOKEN is set, by a declared bearer scheme', async () => {
    const { document } = await openApiDocument(dialect);
    const metrics = document.paths['/metrics']?.get;
    expect(metrics?.security).toContainEqual({ metricsToken: [] });
    expect(document.components?.securitySchemes?.metricsToken).toMatchObject({
      type: 'http',
      scheme: 'bearer',
    });
    expect(Object.keys(metrics?.responses ?? {})).toContain('401');
  });

  it('publishes the schemas the operations use, including request bodies, and no others', async () => {
    const { document } = await openApiDocument(dialect);
    const schemas = Object.keys(document.components?.schemas ?? {});
    expect(schemas).toEqual(
      expect.arrayContaining([
        'Problem',
        'Liveness',
        'Readiness',
        'HealthReport',
        'Thing',
        'RenameThingInput',
      ]),
    );
    // The request body is only ever read, the response only ever written.
    expect(schemas).not.toContain('RenameThing');
    expect(schemas).not.toContain('ThingInput');
  });

  it('does not list itself or the docs pages as API operations', async () => {
    const { document } = await openApiDocument(dialect);
    const paths = Object.keys(document.paths);
    expect(paths).not.toContain('/openapi.json');
    expect(paths.filter((p) => p.startsWith('/docs'))).toEqual([]);
  });
});

describe.each(testDialects)('GET /docs (%s)', (dialect) => {
  it('serves the interactive API reference as an HTML page', async () => {
    const app = await buildTestApp(dialect);
    apps.push(app);
    let url = '/docs';
    let res = await app.inject({ method: 'GET', url });
    // The UI may redirect to its canonical address (`/docs/`); follow it as a browser would, a few hops at most.
    for (let hops = 0; hops < 3 && res.statusCode >= 300 && res.statusCode < 400; hops++) {
      url = new URL(String(res.headers.location), `http://localhost${url}`).pathname;
      res = await app.inject({ method: 'GET', url });
    }
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/html/);
    expect(res.body).toMatch(/<html/i);
    expect(res.body).toContain('swagger-ui');
    // The page loads only its own files: its policy allows nothing from another origin.
    expect(res.headers['content-security-policy']).toContain("default-src 'self'");
    expect(res.headers['content-security-policy']).not.toMatch(/https?:/);
  });
});
