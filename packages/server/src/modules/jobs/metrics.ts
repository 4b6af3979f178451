import type { Kysely } from 'kysely';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Database } from '../../db/schema.ts';
import * as repo from './jobs.repo.ts';
import type { JobRunMetrics } from './queue.ts';

/**
 * The job queue's figures on `/metrics`: each run's duration and outcome by job name, failures by job name, and
 * the queue depth — how many jobs wait, run and lie dead in each queue, counted in the database when scraped, so
 * every replica reports the installation's whole queue (sum by queue with `max`, not `sum`).
 */
export function createJobMetrics(registry: Registry, db: Kysely<Database>): JobRunMetrics {
  const duration = new Histogram({
    name: 'job_run_duration_seconds',
    help: 'Background job runs in this process, by job name and outcome (succeeded, retried, dead).',
    labelNames: ['name', 'outcome'],
    buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800],
    registers: [registry],
  });
  const failures = new Counter({
    name: 'job_failures_total',
    help: 'Failed background job runs in this process, by job name and outcome (retried, or dead: no attempt left).',
    labelNames: ['name', 'outcome'],
    registers: [registry],
  });
  new Gauge({
    name: 'jobs_queue_depth',
    help: 'Jobs in the installation’s queue by queue and state (queued, running, dead), counted at scrape time.',
    labelNames: ['queue', 'state'],
    registers: [registry],
    async collect() {
      // A database that cannot answer must not take the other figures down with it (`/health/ready` reports
      // it); the depth then shows the last count.
      const counts = await repo.depth(db).catch(() => undefined);
      if (!counts) return;
      this.reset();
      for (const { queue, state, count } of counts) this.set({ queue, state }, count);
    },
  });
  return {
    observeRun(name, outcome, seconds) {
      duration.observe({ name, outcome }, seconds);
      if (outcome !== 'succeeded') failures.inc({ name, outcome });
    },
  };
}
