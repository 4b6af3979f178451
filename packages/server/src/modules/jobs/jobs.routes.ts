import { Job, JobDetail, JobState, jobErrors, Page } from '@plinth/shared';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError } from '../../core/errors.ts';
import { idParam } from '../../core/ids.ts';
import { type ListSpec, listQuerySchema, paginate } from '../../core/pagination.ts';
import { jsonResponse, problemResponses } from '../../core/responses.ts';
import { type AuthDeps, auditAccount, callerOf, superadminOnly } from '../auth/index.ts';
import * as repo from './jobs.repo.ts';

const adminRoute = { tags: ['Admin'], security: [{ bearerAuth: [] }] };
const JobParams = z.object({ jobId: idParam('Not a job id.') });

const QueueName = z
  .string()
  .regex(/^[a-z][a-z0-9_.-]{0,63}$/, { error: 'Not a queue name.' })
  .meta({ example: 'default' });
const JobName = z
  .string()
  .regex(/^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$/, { error: 'Not a job name (module.action).' })
  .max(100)
  .meta({ example: 'privacy.export' });

const jobsList = {
  sort: { createdAt: 'created_at', runAt: 'run_at', updatedAt: 'updated_at' },
  defaultSort: '-createdAt',
  filters: { state: JobState, queue: QueueName, name: JobName },
  filterColumns: { state: 'state', queue: 'queue', name: 'name' },
} satisfies ListSpec<
  'createdAt' | 'runAt' | 'updatedAt',
  { state: typeof JobState; queue: typeof QueueName; name: typeof JobName }
>;

function jobOf(row: repo.JobRow): Job {
  return {
    id: row.id,
    queue: row.queue,
    name: row.name,
    state: row.state as JobState,
    priority: row.priority,
    runAt: row.run_at,
    attempts: row.attempts,
    maxAttempts: row.max_attempts,
    lastError: row.last_error,
    lockedBy: row.locked_by,
    lockedUntil: row.locked_until,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    finishedAt: row.finished_at,
  };
}

function detailOf(row: repo.JobRow): JobDetail {
  return { ...jobOf(row), payload: JSON.parse(row.payload) as unknown };
}

/**
 * The operators' view of the job queue, `/api/v1/admin/jobs…` (superadmin only, like every `/admin` route): the
 * list by state, queue and name, one job with its payload, and the two hand operations — run a dead or
 * cancelled job again, cancel a queued one. Each operation is recorded on the installation's audit chain
 * (`job.retried`, `job.cancelled`) in the transaction that makes it.
 */
export const jobsAdminRoutes: FastifyPluginAsyncZod<{ auth: AuthDeps }> = async (app, { auth }) => {
  superadminOnly(app, auth);
  const db = auth.db;

  app.get(
    '/admin/jobs',
    {
      schema: {
        ...adminRoute,
        summary: 'List jobs',
        description:
          'Jobs by `state` (e.g. `dead`: failed every attempt, waiting for an operator), `queue` and `name`, newest first by default. Finished jobs are kept 14 days (retention policy `jobs`).',
        operationId: 'listJobs',
        querystring: listQuerySchema(jobsList),
        response: { 200: jsonResponse(Page(Job), 'One page of jobs.'), ...problemResponses(400, 401, 403) },
      },
    },
    async (request) => {
      const page = await paginate(db.selectFrom('jobs').selectAll(), request.query, jobsList);
      return { data: page.data.map(jobOf), nextCursor: page.nextCursor };
    },
  );

  const findOrThrow = async (id: string) => {
    const row = await repo.findJob(db, id);
    if (!row) throw new AppError(jobErrors.JOB_NOT_FOUND);
    return row;
  };

  app.get(
    '/admin/jobs/:jobId',
    {
      schema: {
        ...adminRoute,
        summary: 'Get a job',
        description: 'One job, with its payload and its last error.',
        operationId: 'getJob',
        params: JobParams,
        response: { 200: jsonResponse(JobDetail, 'The job.'), ...problemResponses(400, 401, 403, 404) },
      },
    },
    async (request) => detailOf(await findOrThrow(request.params.jobId)),
  );

  /** A hand operation: the state change and its audit event in one transaction, or 409 from the wrong state. */
  const operate = (
    verb: 'retry' | 'cancel',
    change: typeof repo.requeue,
    refusal: (typeof jobErrors)['JOB_NOT_RETRYABLE' | 'JOB_NOT_CANCELLABLE'],
    summary: string,
    description: string,
  ) =>
    app.post(
      `/admin/jobs/:jobId/${verb}`,
      {
        schema: {
          ...adminRoute,
          summary,
          description,
          operationId: `${verb}Job`,
          params: JobParams,
          response: {
            200: jsonResponse(Job, 'The job as it is now.'),
            ...problemResponses(400, 401, 403, 404, 409),
          },
        },
      },
      async (request) => {
        const before = await findOrThrow(request.params.jobId);
        const now = auth.clock.now().toISOString();
        const after = await auditAccount(auth, null, callerOf(request), async (trx, record) => {
          const changed = await change(trx, before.id, now);
          if (!changed) throw new AppError(refusal, { detail: `The job is ${before.state}.` });
          await record({
            action: verb === 'retry' ? 'job.retried' : 'job.cancelled',
            target: { type: 'job', id: changed.id },
            changes: { state: { before: before.state, after: changed.state } },
          });
          return changed;
        });
        return jobOf(after);
      },
    );

  operate(
    'retry',
    repo.requeue,
    jobErrors.JOB_NOT_RETRYABLE,
    'Retry a job',
    'Queues a dead or cancelled job to run now, its attempts starting over (fix the cause first). 409 for a job in any other state.',
  );
  operate(
    'cancel',
    repo.cancel,
    jobErrors.JOB_NOT_CANCELLABLE,
    'Cancel a job',
    'Cancels a queued job (waiting to run or to retry): it will not run. A running job cannot be stopped from outside; 409 for a job in any state but queued.',
  );
};
