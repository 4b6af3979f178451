import underPressure from '@fastify/under-pressure';
import { coreErrors } from '@plinth/shared';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { LoadSheddingConfig } from '../../config.ts';
import { AppError, sendProblem } from '../../core/errors.ts';
import { routeClassOf } from '../../core/route-class.ts';

/** What under-pressure calls the measure that crossed its threshold, as operators read it in a detail. */
const MEASURES: Record<string, string> = {
  [underPressure.TYPE_EVENT_LOOP_DELAY]: 'event-loop delay',
  [underPressure.TYPE_HEAP_USED_BYTES]: 'heap used',
  [underPressure.TYPE_RSS_BYTES]: 'resident memory',
};

/** Whether any threshold is set; with none, nothing is measured and nothing refused. */
export function loadSheddingEnabled(config: LoadSheddingConfig): boolean {
  return config.maxEventLoopDelayMs > 0 || config.maxHeapUsedBytes > 0 || config.maxRssBytes > 0;
}

async function loadShedding(app: FastifyInstance, config: LoadSheddingConfig): Promise<void> {
  if (!loadSheddingEnabled(config)) return;
  const retryAfter = String(config.retryAfterSeconds);

  await app.register(underPressure, {
    maxEventLoopDelay: config.maxEventLoopDelayMs,
    maxHeapUsedBytes: config.maxHeapUsedBytes,
    maxRssBytes: config.maxRssBytes,
    sampleInterval: config.sampleIntervalMs,
    // Called in `onRequest`, before the body is read or anyone is authenticated, for every request while a
    // measure is over its threshold.
    pressureHandler: (request: FastifyRequest, reply: FastifyReply, type: string) => {
      // Health probes and metrics scrapes still answer: the load balancer must learn that this replica is not
      // ready (from /health/ready) rather than see its probe refused, and the graphs must keep drawing.
      const route = request.routeOptions;
      if (routeClassOf({ url: route.url ?? '', config: route.config }) === 'exempt') return;
      // Sent here rather than thrown: a refusal is the replica protecting itself, not an error worth a log
      // line with a stack for each request (the request log line still records the 503). Returning nothing
      // lets under-pressure continue the hooks, which Fastify skips once the reply is sent.
      sendProblem(
        reply,
        new AppError(coreErrors.SERVER_OVERLOADED, {
          detail: `This replica is overloaded (${MEASURES[type] ?? type}); retry later.`,
          headers: { 'retry-after': retryAfter },
        }),
      );
    },
  });

  // Failing (not `degraded`) is deliberate: while a measure is over its threshold this replica refuses every new
  // request, so it is not ready to serve traffic, and saying so lets the load balancer send that traffic to the
  // other replicas until it recovers — which is the point of readiness, as opposed to liveness, which stays up
  // so that the replica is not restarted for being busy. `degraded` would keep it in rotation and have its
  // share of clients refused. The check answers from the last sample, so it costs nothing and clears itself.
  app.healthChecks.add('load', async () => {
    if (!app.isUnderPressure()) return 'ok';
    const { eventLoopDelay, heapUsed, rssBytes } = app.memoryUsage();
    throw new Error(
      `shedding load: event-loop delay ${Math.round(eventLoopDelay)} ms (limit ${config.maxEventLoopDelayMs || 'none'}), heap used ${heapUsed} bytes (limit ${config.maxHeapUsedBytes || 'none'}), rss ${rssBytes} bytes (limit ${config.maxRssBytes || 'none'})`,
    );
  });
}

/**
 * Load shedding (@fastify/under-pressure): while the mean event-loop delay, the heap in use or the resident
 * memory is over its threshold (`LOAD_SHED_*`), new requests get 503 `SERVER_OVERLOADED` with `Retry-After`
 * instead of queueing without bound, health and metrics still answer, and the readiness check `load` fails.
 * Register it after the readiness-check registry and the error handling, before any route.
 */
export const loadSheddingPlugin = fp(loadShedding, {
  name: 'plinth-load-shedding',
  dependencies: ['plinth-health-checks', 'plinth-errors'],
});
