import type autocannon from 'autocannon';
import type { BenchServer } from './servers.ts';

/** Seconds each workload runs (`BENCH_DURATION`, default 10). */
export const durationSeconds = Number(process.env.BENCH_DURATION ?? 10);
/** Concurrent connections of each HTTP workload (`BENCH_CONNECTIONS`, default 50). */
export const connections = Number(process.env.BENCH_CONNECTIONS ?? 50);

/**
 * The servers a workload can run against: the bare Fastify baseline; Plinth as an operator runs it (rate
 * limits on, in memory); the same with rate limiting switched off; and with its limits kept in Redis.
 */
export type ServerName = 'baseline' | 'plinth' | 'plinth-limits-off' | 'plinth-redis';

/** One load test: a name, the server it runs against, and the autocannon options that describe its requests. */
export interface Workload {
  name: string;
  server: ServerName;
  /** Builds the requests; may call the server first (sign up, sign in) to get what they need. */
  prepare(
    server: BenchServer,
  ): Promise<Omit<autocannon.Options, 'url' | 'duration' | 'connections'> & { path: string }>;
}

/** A figure measured in the bench process itself rather than over HTTP (e.g. a primitive's raw rate). */
export interface Measurement {
  name: string;
  measure(): Promise<Figures>;
}

export interface Figures {
  name: string;
  /** Requests (or operations) per second. */
  rate: number;
  p50Ms: number | undefined;
  p99Ms: number | undefined;
  non2xx: number;
  errors: number;
}
