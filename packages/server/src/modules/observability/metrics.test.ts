import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { PlinthApp } from '../../app.ts';
import { testDialects } from '../../test/dialects.ts';
import { buildTestApp } from '../../test/harness.ts';

/** One metric family as `parse-prometheus-text-format` returns it (the package ships no types). */
interface MetricFamily {
  name: string;
  help: string;
  type: 'COUNTER' | 'GAUGE' | 'HISTOGRAM' | 'SUMMARY' | 'UNTYPED';
  metrics: {
    value?: string;
    labels?: Record<string, string>;
    buckets?: Record<string, string>;
    count?: string;
    sum?: string;
  }[];
}
const parsePrometheusTextFormat = createRequire(import.meta.url)('parse-prometheus-text-format') as (
  text: string,
) => MetricFamily[];

const METRICS_TOKEN = 'a-metrics-token-of-enough-length';

/** Apps a test built, closed after it whatever its outcome. */
const apps: PlinthApp[] = [];
afterEach(async () => {
  for (const app of apps.splice(0)) await app.close();
});

/** An app with one application route that has a path parameter, as an application module would add. */
async function appWithThings(dialect: (typeof testDialects)[number], env: Record<string, string> = {}) {
  const app = await buildTestApp(dialect, {
    env,
    modules: [
      async (api) => {
        api.get('/things/:id', { schema: { params: z.object({ id: z.string() }) } }, async (request) => ({
          id: (request.params as { id: string }).id,
        }));
      },
    ],
  });
  apps.push(app);
  return app;
}

/**
 * The samples of every series, each by its own sample name. The package folds a histogram's samples into one
 * object and drops their labels when the histogram has labels other than `le`, so histogram type lines are
 * removed first: `x_bucket`, `x_sum` and `x_count` then come back as untyped families with every label intact
 * (once per label set, as they are interleaved in the text; `family` joins them again).
 */
function seriesOf(text: string): MetricFamily[] {
  return parsePrometheusTextFormat(text.replace(/^# TYPE \S+ histogram$/gm, ''));
}

/** The family called `name`, with the samples of every block of that name. */
function family(families: MetricFamily[], name: string): MetricFamily {
  const found = families.filter((f) => f.name === name);
  const first = found[0];
  if (!first) throw new Error(`metric ${name} is missing; got ${families.map((f) => f.name).join(', ')}`);
  return { ...first, metrics: found.flatMap((f) => f.metrics) };
}

describe.each(testDialects)('GET /metrics (%s)', (dialect) => {
  it('exposes HTTP, database and process metrics in the Prometheus text format, labelled by route template', async () => {
    const app = await appWithThings(dialect);
    expect((await app.inject({ method: 'GET', url: '/api/v1/things/123' })).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: '/api/v1/things/456?token=secret' })).statusCode).toBe(
      200,
    );
    expect((await app.inject({ method: 'GET', url: '/things/456' })).statusCode).toBe(404);
    expect((await app.inject({ method: 'GET', url: '/health/ready' })).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: '/health' })).statusCode).toBe(200);

    const res = await app.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    const families = parsePrometheusTextFormat(res.body);

    const requests = family(families, 'http_requests_total');
    expect(requests.type).toBe('COUNTER');
    expect(requests.metrics).toContainEqual({
      value: '2',
      labels: { method: 'GET', route: '/api/v1/things/:id', status: '200' },
    });
    // A URL that matched no route is counted, but under one fixed label so raw paths never become series.
    expect(requests.metrics).toContainEqual({
      value: '1',
      labels: { method: 'GET', route: 'unmatched', status: '404' },
    });

    expect(family(families, 'http_request_duration_seconds').type).toBe('HISTOGRAM');
    const series = seriesOf(res.body);
    const thingsLabels = { method: 'GET', route: '/api/v1/things/:id', status: '200' };
    expect(family(series, 'http_request_duration_seconds_count').metrics).toContainEqual({
      value: '2',
      labels: thingsLabels,
    });
    expect(family(series, 'http_request_duration_seconds_bucket').metrics).toContainEqual({
      value: '2',
      labels: { le: '+Inf', ...thingsLabels },
    });
    const durationCounts = family(series, 'http_request_duration_seconds_count').metrics;

    // Every route label is a template or `unmatched`, never a concrete path or query string.
    const routes = new Set([...requests.metrics, ...durationCounts].map((m) => m.labels?.route));
    expect([...routes].sort()).toEqual(['/api/v1/things/:id', '/health', '/health/ready', 'unmatched']);
    expect(res.body).not.toContain('/api/v1/things/123');
    expect(res.body).not.toContain('/things/456');
    expect(res.body).not.toContain('secret');

    expect(family(families, 'db_query_duration_seconds').type).toBe('HISTOGRAM');
    const queries = family(series, 'db_query_duration_seconds_count').metrics;
    expect(queries.length).toBeGreaterThan(0);
    for (const m of queries) {
      expect(m.labels?.dialect).toBe(dialect);
      expect(['select', 'insert', 'update', 'delete', 'other']).toContain(m.labels?.kind);
    }
    // /health reads the installation row: a select, timed like any other query.
    expect(Number(queries.find((m) => m.labels?.kind === 'select')?.value)).toBeGreaterThan(0);

    expect(family(families, 'process_cpu_user_seconds_total').type).toBe('COUNTER');
    expect(family(families, 'nodejs_heap_size_used_bytes').type).toBe('GAUGE');

    // promtool is Prometheus's own checker; it runs where it is installed (where it is not, the parse above is
    // the check). Exit code 1 means the text does not parse; 3 means only lint findings, which are allowed on
    // prom-client's default Node.js metrics (it names three gauges `*_total`) but not on Plinth's own.
    const promtool = spawnSync('promtool', ['check', 'metrics'], { input: res.body, encoding: 'utf8' });
    if (!promtool.error) {
      const output = `${promtool.stdout}${promtool.stderr}`;
      expect([0, 3], output).toContain(promtool.status);
      for (const finding of output.split('\n').filter(Boolean)) expect(finding).toMatch(/^nodejs_/);
    }
  });

  it('counts the scrapes themselves under the /metrics route', async () => {
    const app = await appWithThings(dialect);
    await app.inject({ method: 'GET', url: '/metrics' });
    const res = await app.inject({ method: 'GET', url: '/metrics' });
    const requests = family(parsePrometheusTextFormat(res.body), 'http_requests_total');
    expect(requests.metrics).toContainEqual({
      value: '1',
      labels: { method: 'GET', route: '/metrics', status: '200' },
    });
  });
});

describe.each(testDialects)('GET /metrics with METRICS_TOKEN (%s)', (dialect) => {
  it('refuses a scrape without the bearer token with a 401 problem', async () => {
    const app = await appWithThings(dialect, { METRICS_TOKEN });
    const res = await app.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(401);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(res.headers['www-authenticate']).toMatch(/^Bearer\b/);
    expect(res.json()).toMatchObject({
      status: 401,
      code: 'UNAUTHENTICATED',
      requestId: res.headers['x-request-id'],
    });
    expect(res.body).not.toContain('http_requests_total');
  });

  it.each([
    ['a wrong token of the same length', `Bearer ${METRICS_TOKEN.replace(/^a/, 'b')}`],
    ['a wrong token of another length', 'Bearer nope'],
    ['the right token under another scheme', `Basic ${METRICS_TOKEN}`],
    ['the right token with no scheme', METRICS_TOKEN],
  ])('refuses a scrape with %s', async (_case, authorization) => {
    const app = await appWithThings(dialect, { METRICS_TOKEN });
    const res = await app.inject({ method: 'GET', url: '/metrics', headers: { authorization } });
    expect(res.statusCode).toBe(401);
    expect(res.json()).toMatchObject({ code: 'UNAUTHENTICATED' });
    expect(res.body).not.toContain(METRICS_TOKEN);
  });

  // The scheme name is case-insensitive (RFC 9110 §11.1); scrapers and proxies do not all capitalise it.
  it.each([`Bearer ${METRICS_TOKEN}`, `bearer ${METRICS_TOKEN}`])(
    'serves the metrics to a scrape that presents the token as "%s"',
    async (authorization) => {
      const app = await appWithThings(dialect, { METRICS_TOKEN });
      const res = await app.inject({ method: 'GET', url: '/metrics', headers: { authorization } });
      expect(res.statusCode).toBe(200);
      expect(family(parsePrometheusTextFormat(res.body), 'http_requests_total').type).toBe('COUNTER');
    },
  );
});
