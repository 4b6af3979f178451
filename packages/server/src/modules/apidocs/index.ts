import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { jsonSchemaTransform, jsonSchemaTransformObject } from 'fastify-type-provider-zod';
import { VERSION } from '../../core/version.ts';

export interface ApiDocsOptions {
  /** The OpenAPI tags, one per module, with a description of each. */
  tags: { name: string; description: string }[];
}

async function apiDocs(app: FastifyInstance, { tags }: ApiDocsOptions): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Plinth API',
        version: VERSION,
        description:
          'Every error is an RFC 9457 `application/problem+json` document with a stable `code` and the `requestId`. Every response carries `X-Request-Id`. Lists take `limit`, `cursor` and `sort` and answer `{ data, nextCursor }`.',
        license: { name: 'MIT', identifier: 'MIT' },
      },
      servers: [{ url: 'http://127.0.0.1:3000', description: 'A local Plinth (`npm start`).' }],
      tags,
      components: {
        securitySchemes: {
          bearerAuth: {
            type: 'http',
            scheme: 'bearer',
            bearerFormat: 'JWT',
            description:
              'An access token from `POST /api/v1/auth/login` (or `/auth/refresh`); on organization endpoints, an API key (`plk_live_…`) also works here.',
          },
          apiKey: {
            type: 'apiKey',
            in: 'header',
            name: 'X-API-Key',
            description: 'An API key of the organization (`plk_live_…`), acting with exactly its scopes.',
          },
          metricsToken: {
            type: 'http',
            scheme: 'bearer',
            description: 'The `METRICS_TOKEN` of the installation.',
          },
        },
      },
    },
    transform: jsonSchemaTransform,
    transformObject: (documentObject) => withoutUnusedSchemas(jsonSchemaTransformObject(documentObject)),
  });

  // The UI is served from the package's own files, never a CDN. Its CSP allows exactly its own scripts and
  // styles (by hash for the inline ones) and nothing from elsewhere.
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    uiConfig: { validatorUrl: null, deepLinking: true },
    staticCSP: false,
    transformStaticCSP: () => docsCsp(app),
  });

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
}

/**
 * The document without component schemas that nothing references. The Zod type provider publishes every schema
 * that has an id twice, as read (`<Id>`) and as written (`<Id>Input`), whether or not a route uses it that
 * way; an unused component is noise in the reference and in a generated client.
 */
function withoutUnusedSchemas<T extends object>(document: T): T {
  const { components } = document as { components?: { schemas?: Record<string, unknown> } };
  const schemas = components?.schemas;
  if (!schemas) return document;
  const prefix = '#/components/schemas/';
  const used = new Set<string>();
  // Everything but the schemas is a root; a schema is used when a root or a used schema refers to it.
  const pending: unknown[] = [{ ...document, components: { ...components, schemas: undefined } }];
  while (pending.length > 0) {
    const node = pending.pop();
    if (Array.isArray(node)) pending.push(...node);
    else if (node && typeof node === 'object') {
      for (const [key, value] of Object.entries(node)) {
        if (key === '$ref' && typeof value === 'string' && value.startsWith(prefix)) {
          const name = value.slice(prefix.length);
          if (!used.has(name)) {
            used.add(name);
            pending.push(schemas[name]);
          }
        } else pending.push(value);
      }
    }
  }
  for (const name of Object.keys(schemas)) if (!used.has(name)) delete schemas[name];
  return document;
}

function docsCsp(app: FastifyInstance): string {
  const { script, style } = app.swaggerCSP;
  return [
    "default-src 'self'",
    "base-uri 'self'",
    "connect-src 'self'",
    "font-src 'self' data:",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "img-src 'self' data:",
    "object-src 'none'",
    ['script-src', "'self'", ...script].join(' '),
    "script-src-attr 'none'",
    ['style-src', "'self'", ...style].join(' '),
  ].join('; ');
}

/** The OpenAPI 3.1 document at `/openapi.json`, generated from the route schemas, and its reference at `/docs`. */
export const apiDocsPlugin = fp(apiDocs, { name: 'plinth-api-docs' });
