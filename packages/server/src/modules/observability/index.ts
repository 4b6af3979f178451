export { healthRoutes } from './health.routes.ts';
export { type CheckStatus, healthChecks, type ReadinessCheck } from './health.ts';
export { loadSheddingPlugin } from './load-shedding.ts';
export { loggerOptions, RequestLogController } from './logger.ts';
export { createMetrics, type Metrics, metrics } from './metrics.ts';

/** The OpenAPI tag of this module's routes. */
export const observabilityTag = {
  name: 'Observability',
  description: 'Health checks and metrics for operators and load balancers.',
};
