import { coreErrors } from '@plinth/shared';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { Counter, collectDefaultMetrics, Histogram, Registry } from 'prom-client';
import { z } from 'zod';
import { safeEqual } from '../../core/crypto.ts';
import { AppError } from '../../core/errors.ts';
import { problemResponses } from '../../core/responses.ts';

/** The server's Prometheus metrics. One registry per app, so several apps in one process (tests) stay apart. */
export interface Metrics {
  readonly registry: Registry;
  readonly httpRequests: Counter<'method' | 'route' | 'status'>;
  readonly httpDuration: Histogram<'method' | 'route' | 'status'>;
  readonly dbQueryDuration: Histogram<'dialect' | 'kind'>;
  readonly rateLimitDecisions: Counter<'route_class' | 'outcome' | 'bucket'>;
}

/** The `route` label of requests that matched no route, so raw URLs never become label values. */
export const UNMATCHED_ROUTE = 'unmatched';

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    httpRequests: new Counter({
      name: 'http_requests_total',
      help: 'HTTP requests answered, by method, route template and status code.',
      labelNames: ['method', 'route', 'status'],
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: 'http_request_duration_seconds',
      help: 'Time from receiving a request to sending the response, by method, route template and status code.',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    dbQueryDuration: new Histogram({
      name: 'db_query_duration_seconds',
      help: 'Database query duration, by dialect and statement kind (select, insert, update, delete, other).',
      labelNames: ['dialect', 'kind'],
      buckets: [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
      registers: [registry],
    }),
    // Labelled by route class and bucket only — never by user, key or IP, whose number has no bound.
    rateLimitDecisions: new Counter({
      name: 'rate_limit_decisions_total',
      help: 'Requests the rate limiter let through (outcome=allowed) or refused (outcome=limited, with the refusing bucket), by route class.',
      labelNames: ['route_class', 'outcome', 'bucket'],
      registers: [registry],
    }),
  };
}

/** Whether an `Authorization` header carries `token` as a bearer token (the scheme name is case-insensitive). */
function bearerMatches(header: string | undefined, token: string): boolean {
  const match = /^bearer +(\S+) *$/i.exec(header ?? '');
  return safeEqual(match?.[1] ?? '', token);
}

const metricsRoutes: FastifyPluginAsyncZod<{ metrics: Metrics; token: string | undefined }> = async (
  app,
  { metrics, token },
) => {
  app.get(
    '/metrics',
    {
      schema: {
        summary: 'Prometheus metrics',
        description:
          'Process, HTTP and database metrics in the Prometheus text exposition format. Requires `Authorization: Bearer <METRICS_TOKEN>` when that variable is set.',
        operationId: 'getMetrics',
        tags: ['Observability'],
        // The document describes the API, not one installation's settings (and must not reveal them): the
        // token is required where METRICS_TOKEN is set and not otherwise, so both alternatives are listed.
        security: [{ metricsToken: [] }, {}],
        response: {
          200: {
            description: 'Metrics in the Prometheus text exposition format (version 0.0.4).',
            content: { 'text/plain': { schema: z.string() } },
          },
          ...problemResponses(401),
        },
      },
    },
    async (request, reply) => {
      if (token && !bearerMatches(request.headers.authorization, token)) {
        // RFC 9110 §11.6.1: a 401 names the scheme the client must use.
        throw new AppError(coreErrors.UNAUTHENTICATED, {
          detail: 'A valid metrics token is required.',
          headers: { 'www-authenticate': 'Bearer realm="metrics"' },
        });
      }
      reply.type(metrics.registry.contentType);
      return metrics.registry.metrics();
    },
  );
};

async function metricsPlugin(
  app: FastifyInstance,
  options: { metrics: Metrics; token: string | undefined },
): Promise<void> {
  const { httpRequests, httpDuration } = options.metrics;
  app.addHook('onResponse', async (request, reply) => {
    const labels = {
      method: request.method,
      route: request.routeOptions.url ?? UNMATCHED_ROUTE,
      status: String(reply.statusCode),
    };
    httpRequests.inc(labels);
    httpDuration.observe(labels, reply.elapsedTime / 1000);
  });
  await app.register(metricsRoutes, options);
}

/** Counts and times every request by route template, and serves `GET /metrics`. */
export const metrics = fp(metricsPlugin, { name: 'plinth-metrics' });
