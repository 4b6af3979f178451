import { z } from 'zod';
import { defineErrors } from './errors.ts';

/** Request and response schemas of the operators' job API (`/api/v1/admin/jobs`). */

export const JobState = z.enum(['queued', 'running', 'succeeded', 'dead', 'cancelled']).meta({
  description:
    'queued (waiting, or waiting for a retry), running, succeeded, dead (failed every attempt), cancelled.',
});
export type JobState = z.infer<typeof JobState>;

export const Job = z
  .object({
    id: z.uuid(),
    queue: z.string(),
    name: z.string().meta({ description: 'The job type, `module.action`.' }),
    state: JobState,
    priority: z.number().int(),
    runAt: z
      .string()
      .meta({ description: 'Not before this time (for a queued job: when it runs or retries).' }),
    attempts: z.number().int().meta({ description: 'Runs started so far.' }),
    maxAttempts: z.number().int(),
    lastError: z.string().nullable().meta({ description: 'The message of the last failed run.' }),
    lockedBy: z.string().nullable().meta({ description: 'The worker running it (host:pid:random).' }),
    lockedUntil: z.string().nullable(),
    createdAt: z.string(),
    updatedAt: z.string(),
    finishedAt: z.string().nullable(),
  })
  .meta({ id: 'Job' });
export type Job = z.infer<typeof Job>;

/** One job with its payload: only the detail view shows what a job was asked to do. */
export const JobDetail = Job.extend({
  payload: z.unknown().meta({ description: 'The job’s input, as enqueued (JSON).' }),
}).meta({ id: 'JobDetail' });
export type JobDetail = z.infer<typeof JobDetail>;

export const jobErrors = defineErrors({
  JOB_NOT_FOUND: { status: 404, title: 'No such job.' },
  /** Only a dead or cancelled job can be run again by hand: the others are queued, running or done. */
  JOB_NOT_RETRYABLE: { status: 409, title: 'Only a dead or cancelled job can be retried.' },
  /** A running job cannot be stopped from outside; one that has finished has nothing left to cancel. */
  JOB_NOT_CANCELLABLE: { status: 409, title: 'Only a queued job can be cancelled.' },
});
