export {
  createJobQueue,
  type EnqueueOptions,
  type JobContext,
  type JobDefinition,
  type JobQueue,
  nextCronTime,
  PermanentJobError,
  retryDelaySeconds,
} from './queue.ts';
