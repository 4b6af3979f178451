import { purgeAfter, type RetentionPolicy } from '../../core/retention.ts';

export { jobsAdminRoutes } from './jobs.routes.ts';
export { createJobMetrics } from './metrics.ts';
export {
  createJobQueue,
  DEFAULT_QUEUE,
  type EnqueueOptions,
  type JobContext,
  type JobDefinition,
  type JobQueue,
  type JobRunMetrics,
  nextCronTime,
  PermanentJobError,
  retryDelaySeconds,
} from './queue.ts';

/** Finished jobs (succeeded, dead or cancelled) are kept this long for the admins to look at. */
export const jobRetention: RetentionPolicy = {
  name: 'jobs',
  description: 'finished background jobs (succeeded, dead or cancelled)',
  days: 14,
  apply: purgeAfter({ table: 'jobs', after: ['finished_at'] }),
};
