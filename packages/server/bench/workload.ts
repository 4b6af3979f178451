import type autocannon from 'autocannon';
import type { BenchServer } from './servers.ts';

/** Seconds each workload runs (`BENCH_DURATION`, default 10). */
export const durationSeconds = Number(process.env.BENCH_DURATION ?? 10);
/**
 * Seconds each HTTP workload runs unmeasured first (`BENCH_WARMUP`, default 3), so that every row measures a
 * warmed-up server — compiled code, filled caches — however many workloads it served before.
 */
export const warmupSeconds = Number(process.env.BENCH_WARMUP ?? 3);
/**
 * How many rounds the workloads compared with each other take turns for: a difference of a few per cent is about
 * as much as two runs of one server differ by on a shared machine, so one run of each would not tell.
 */
export const ROUNDS = 5;

/** The name of one round's row: `<workload> #<round>`. */
export const roundName = (name: string, round: number) => `${name} #${round}`;

/** Concurrent connections of each HTTP workload (`BENCH_CONNECTIONS`, default 50). */
export const connections = Number(process.env.BENCH_CONNECTIONS ?? 50);

/**
 * Whether a workload runs: every one, unless `BENCH_ONLY` lists comma-separated parts of the names to run (e.g.
 * `BENCH_ONLY=audited` while working on one figure; comparisons whose workloads did not run are left out).
 */
export function selected(name: string): boolean {
  const only = (process.env.BENCH_ONLY ?? '').split(',').filter((part) => part.trim() !== '');
  return only.length === 0 || only.some((part) => name.includes(part.trim()));
}

/**
 * The servers a workload can run against: the bare Fastify baseline; Plinth as an operator runs it (rate
 * limits on, in memory), shared by most workloads; three fresh ones for the rate-limit comparison, which
 * differ only in rate limiting — off, in memory, in Redis — so that none carries what earlier workloads wrote;
 * and Plinth with the audit benchmark's module (audit-server.ts), on SQLite and on PostgreSQL.
 */
export type ServerName =
  | 'baseline'
  | 'plinth'
  | 'limits-off'
  | 'limits-memory'
  | 'limits-redis'
  | 'audit'
  | 'audit-postgres';

/** One load test: a name, the server it runs against, and the autocannon options that describe its requests. */
export interface Workload {
  name: string;
  server: ServerName;
  /** Whether it runs unmeasured first (default true); off for a workload whose requests use up its setup. */
  warmup?: boolean;
  /** Builds the requests; may call the server first (sign up, sign in) to get what they need. */
  prepare(
    server: BenchServer,
  ): Promise<Omit<autocannon.Options, 'url' | 'duration' | 'connections'> & { path: string }>;
  /**
   * Waits, after the load, for the work the requests left to the server's background (inside the measurement,
   * so that the row's CPU time includes it).
   */
  settle?(server: BenchServer): Promise<void>;
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
  /** The server's CPU time per request, in microseconds: what a request costs, whatever else the machine does. */
  cpuUsPerRequest?: number | undefined;
  non2xx: number;
  errors: number;
}
