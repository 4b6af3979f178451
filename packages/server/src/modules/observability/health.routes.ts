import { coreErrors, Problem, problemType } from '@plinth/shared';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { jsonResponse, problemResponse, problemResponses } from '../../core/responses.ts';
import { VERSION } from '../../core/version.ts';
import type { Dialect } from '../../db/database.ts';
import { readInstallationId } from '../../db/installation.ts';
import type { CheckResult } from './health.ts';

const CheckResultSchema = z.object({
  status: z.enum(['ok', 'degraded', 'fail']),
  latencyMs: z.number().meta({ description: 'How long the check took, in milliseconds.' }),
});
const Checks = z.record(z.string(), CheckResultSchema).meta({ description: 'Each readiness check by name.' });

const Live = z.object({ status: z.literal('ok') }).meta({ id: 'Liveness' });
const Ready = z.object({ status: z.enum(['ok', 'degraded']), checks: Checks }).meta({ id: 'Readiness' });
const NotReady = Problem.extend({ checks: Checks }).meta({
  id: 'NotReadyProblem',
  description: 'The replica is not ready; `checks` names the failing checks.',
});
const HealthReport = z
  .object({
    status: z.enum(['ok', 'degraded', 'fail']),
    version: z.string(),
    installationId: z.string().nullable().meta({
      description: 'The id of this installation (shared by its replicas); null before migrations ran.',
    }),
    uptimeSeconds: z.number(),
    database: z.object({
      dialect: z.enum(['sqlite', 'postgres']),
      status: z.enum(['ok', 'degraded', 'fail']),
      latencyMs: z.number(),
    }),
    memory: z.object({ rssBytes: z.number(), heapUsedBytes: z.number(), heapTotalBytes: z.number() }),
    checks: Checks,
  })
  .meta({ id: 'HealthReport' });

function overall(checks: Record<string, CheckResult>): 'ok' | 'degraded' | 'fail' {
  const statuses = Object.values(checks).map((c) => c.status);
  if (statuses.includes('fail')) return 'fail';
  return statuses.includes('degraded') ? 'degraded' : 'ok';
}

const publicRoute = { tags: ['Observability'], security: [] };

/** `/health/live`, `/health/ready` and `/health`. Public: they reveal no configuration and no error text. */
export const healthRoutes: FastifyPluginAsyncZod<{ dialect: Dialect }> = async (app, { dialect }) => {
  const runChecks = () =>
    app.healthChecks.run((name, error) =>
      app.log.warn({ check: name, err: error }, 'readiness check failed'),
    );

  app.get(
    '/health/live',
    {
      schema: {
        ...publicRoute,
        summary: 'Liveness',
        description: 'Answers 200 while the process is running and serving HTTP. Checks nothing else.',
        operationId: 'getLiveness',
        response: { 200: jsonResponse(Live, 'The process is alive.'), ...problemResponses() },
      },
    },
    async () => ({ status: 'ok' as const }),
  );

  app.get(
    '/health/ready',
    {
      schema: {
        ...publicRoute,
        summary: 'Readiness',
        description:
          'Answers 200 when this replica can serve traffic (database reachable, migrations current, …) and 503 naming the failing checks when it cannot.',
        operationId: 'getReadiness',
        response: {
          200: jsonResponse(Ready, 'Ready to serve traffic; `status` is `degraded` when a check reports so.'),
          503: problemResponse('Not ready: `checks` names the failing checks.', NotReady),
          ...problemResponses(),
        },
      },
    },
    async (request, reply) => {
      const checks = await runChecks();
      const status = overall(checks);
      if (status !== 'fail') return { status, checks };
      const failing = Object.entries(checks)
        .filter(([, c]) => c.status === 'fail')
        .map(([name]) => name);
      const { code, status: httpStatus, title } = coreErrors.SERVICE_UNAVAILABLE;
      return reply
        .status(503)
        .type('application/problem+json; charset=utf-8')
        .send({
          type: problemType(code),
          title,
          status: httpStatus,
          detail: `Not ready: ${failing.join(', ')}.`,
          code,
          requestId: request.id,
          checks,
        });
    },
  );

  app.get(
    '/health',
    {
      schema: {
        ...publicRoute,
        summary: 'Health report',
        description:
          'Version, uptime, database dialect and latency, memory use and every readiness check. Always 200; read `status`.',
        operationId: 'getHealthReport',
        response: { 200: jsonResponse(HealthReport, 'The health report.'), ...problemResponses() },
      },
    },
    async () => {
      const checks = await runChecks();
      const memory = process.memoryUsage();
      const database = checks.database ?? { status: 'fail' as const, latencyMs: 0 };
      return {
        status: overall(checks),
        version: VERSION,
        installationId: database.status === 'fail' ? null : await readInstallationId(app.database),
        uptimeSeconds: Math.round(process.uptime()),
        database: { dialect, status: database.status, latencyMs: database.latencyMs },
        memory: { rssBytes: memory.rss, heapUsedBytes: memory.heapUsed, heapTotalBytes: memory.heapTotal },
        checks,
      };
    },
  );
};
