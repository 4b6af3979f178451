import autocannon from 'autocannon';
import {
  AUDITED_CREATE,
  AUDITED_CREATE_POSTGRES,
  auditWorkloads,
  UNAUDITED_CREATE,
  UNAUDITED_CREATE_POSTGRES,
} from './audit.workloads.ts';
import { argon2VerifyRate, authWorkloads } from './auth.workloads.ts';
import {
  JOBS_POSTGRES,
  JOBS_POSTGRES_FLOOR,
  JOBS_SQLITE,
  JOBS_SQLITE_FLOOR,
  jobWorkloads,
} from './jobs.workloads.ts';
import { API_KEY_LIST, JWT_LIST, orgWorkloads } from './orgs.workloads.ts';
import { benchSchema } from './postgres.ts';
import { LIMITS_MEMORY, LIMITS_OFF, LIMITS_REDIS, rateLimitWorkloads } from './ratelimit.workloads.ts';
import {
  REALTIME_BASELINE,
  REALTIME_CHANGE,
  REALTIME_DOMAIN_EVENT,
  REALTIME_REPLICAS,
  realtimeWorkloads,
} from './realtime.workloads.ts';
import { type BenchServer, redisReachable, startAuditBench, startBaseline, startPlinth } from './servers.ts';
import { WEBHOOK_BASELINE, WEBHOOK_DELIVERIES, webhookWorkloads } from './webhooks.workloads.ts';
import {
  connections,
  durationSeconds,
  type Figures,
  type Measurement,
  ROUNDS,
  roundName,
  type ServerName,
  selected,
  type Workload,
  warmupSeconds,
} from './workload.ts';

/**
 * `npm run bench`: drives the baseline and Plinth with autocannon, one workload after another, and prints
 * throughput and latency percentiles side by side. Figures from one run are comparable with each other, not
 * with another machine's. Each issue adds its workloads to `workloads`.
 *
 * Environment: BENCH_DURATION (seconds per workload, default 10), BENCH_WARMUP (unmeasured seconds before each,
 * default 3), BENCH_CONNECTIONS (default 50), BENCH_ONLY (run only the workloads whose names contain one of these
 * comma-separated parts), REDIS_URL (the Redis of the Redis-store workload, default redis://127.0.0.1:6379;
 * skipped when unreachable), BENCH_POSTGRES_URL (the PostgreSQL server of the PostgreSQL rows, each in a schema
 * of its own; skipped when unreachable).
 */
const get = (path: string) => async () => ({ path });

const workloads: (Workload | Measurement)[] = [
  { name: 'baseline: bare Fastify GET /hello', server: 'baseline', prepare: get('/hello') },
  { name: 'plinth: GET /health/live', server: 'plinth', prepare: get('/health/live') },
  argon2VerifyRate,
  ...authWorkloads,
  ...orgWorkloads,
  ...rateLimitWorkloads,
  ...auditWorkloads,
  ...jobWorkloads,
  ...webhookWorkloads,
  ...realtimeWorkloads,
];

/** How much slower the API-key path may be than the access-token path on the same list (issue 4's target). */
const API_KEY_MAX_SLOWDOWN = 0.1;
/** How much the in-memory rate limiter may add to the cost of a request (issue 5's target). */
const LIMITER_MAX_COST = 0.05;
/** How much auditing may add to the cost of a state change (issue 6's target). */
const AUDIT_MAX_COST = 0.25;

/** What a comparison compares: throughput (higher is better) or the server's CPU time per request (lower is). */
type Measure = 'throughput' | 'cpu';
const measured = (row: Figures, measure: Measure) =>
  measure === 'throughput' ? row.rate : row.cpuUsPerRequest;

/** The figures of a workload run in rounds (`<name> #1`, `#2`, …), in round order, or of its single row. */
function roundsOf(rows: Figures[], name: string, measure: Measure): (number | undefined)[] {
  const single = rows.find((r) => r.name === name);
  if (single) return [measured(single, measure)];
  return Array.from({ length: ROUNDS }, (_, i) => {
    const row = rows.find((r) => r.name === roundName(name, i + 1));
    return row && measured(row, measure);
  });
}

function median(values: number[]): number | undefined {
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.floor(sorted.length / 2)];
}

/**
 * Compares workload `candidate` with `reference`: prints by how much the candidate costs more — in throughput
 * lost, or in CPU time per request added — and, given `maxCost`, fails the run (exit 1) when that is more than the
 * fraction `maxCost`. Workloads run in rounds are compared round by round, each round's candidate with the
 * reference run just before it, and the median of those costs is reported: on a shared virtual machine the
 * speed of the whole machine drifts by more than the difference measured, and a pair run back to back sees the
 * same drift.
 */
function compare(
  rows: Figures[],
  candidate: string,
  reference: string,
  options: { measure: Measure; maxCost?: number; label: string },
): void {
  const as = roundsOf(rows, candidate, options.measure);
  const bs = roundsOf(rows, reference, options.measure);
  const costs = as.flatMap((a, i) => {
    const b = bs[i];
    if (!a || !b) return [];
    return [options.measure === 'throughput' ? 1 - a / b : a / b - 1];
  });
  const cost = median(costs);
  const a = median(as.filter((v): v is number => v !== undefined));
  const b = median(bs.filter((v): v is number => v !== undefined));
  if (cost === undefined || !a || !b) return;
  const what =
    options.measure === 'throughput'
      ? `${((a / b) * 100).toFixed(1)} % of the throughput (medians)`
      : `${a} vs ${b} µs of server CPU per request (medians)`;
  const pairs = costs.length > 1 ? `, the median of ${costs.length} back-to-back pairs` : '';
  const target =
    options.maxCost === undefined ? '' : ` (target: under ${(options.maxCost * 100).toFixed(0)} %)`;
  console.log(`${options.label}: ${what}, ${(cost * 100).toFixed(1)} % more cost${pairs}${target}.`);
  if (options.maxCost !== undefined && cost > options.maxCost) {
    console.error(`${options.label}: over the target.`);
    process.exitCode = 1;
  }
}

async function drive(server: BenchServer, workload: Workload): Promise<Figures> {
  const { path, ...options } = await workload.prepare(server);
  if (warmupSeconds > 0 && workload.warmup !== false) {
    await autocannon({ ...options, url: `${server.url}${path}`, connections, duration: warmupSeconds });
  }
  const cpuBefore = server.cpuMicros();
  const result = await autocannon({
    ...options,
    url: `${server.url}${path}`,
    connections,
    duration: durationSeconds,
  });
  await workload.settle?.(server);
  return {
    name: workload.name,
    rate: Math.round(result.requests.average),
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    cpuUsPerRequest: Math.round((server.cpuMicros() - cpuBefore) / Math.max(1, result.requests.total)),
    non2xx: result.non2xx,
    errors: result.errors,
  };
}

function printTable(rows: Figures[]): void {
  const baseline = rows.find((r) => r.name.startsWith('baseline'))?.rate ?? 0;
  const header = ['workload', 'req/s', 'p50 ms', 'p99 ms', 'CPU µs/req', 'vs baseline', 'non-2xx', 'errors'];
  const lines = rows.map((r) => [
    r.name,
    String(r.rate),
    r.p50Ms === undefined ? '-' : String(r.p50Ms),
    r.p99Ms === undefined ? '-' : String(r.p99Ms),
    r.cpuUsPerRequest === undefined ? '-' : String(r.cpuUsPerRequest),
    baseline ? `${((r.rate / baseline) * 100).toFixed(1)} %` : '-',
    String(r.non2xx),
    String(r.errors),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? '').length)));
  const format = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ');
  console.log(`\n${format(header)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}`);
  for (const line of lines) console.log(format(line));
  console.log(`\n${connections} connections, ${durationSeconds} s per workload, Node ${process.version}.`);
}

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const plinthEnv = { REQUIRE_EMAIL_VERIFICATION: 'false' };
const servers: Partial<Record<ServerName, BenchServer>> = {};
try {
  servers.baseline = await startBaseline();
  servers.plinth = await startPlinth(plinthEnv);
  servers['limits-off'] = await startPlinth({ ...plinthEnv, RATE_LIMITS_ENABLED: 'false' });
  servers['limits-memory'] = await startPlinth(plinthEnv);
  servers.audit = await startAuditBench(plinthEnv);
  const auditSchema = await benchSchema('bench_audit', 'the PostgreSQL audit rows');
  if (auditSchema) {
    const server = await startAuditBench({ ...plinthEnv, DATABASE_URL: auditSchema.url });
    servers['audit-postgres'] = {
      ...server,
      async stop() {
        await server.stop();
        await auditSchema.drop();
      },
    };
  }
  if (await redisReachable(redisUrl)) {
    servers['limits-redis'] = await startPlinth({ ...plinthEnv, REDIS_URL: redisUrl });
  } else {
    process.stderr.write(`Redis is not reachable at ${redisUrl}: skipping the Redis-store workload.\n`);
  }
} catch (error) {
  await Promise.all(Object.values(servers).map((s) => s.stop()));
  throw error;
}
try {
  const rows: Figures[] = [];
  for (const workload of workloads) {
    const server = 'measure' in workload ? undefined : servers[workload.server];
    if ((!('measure' in workload) && !server) || !selected(workload.name)) continue;
    process.stderr.write(`running ${workload.name} …\n`);
    rows.push(
      'measure' in workload ? await workload.measure() : await drive(server as BenchServer, workload),
    );
  }
  printTable(rows);
  compare(rows, API_KEY_LIST, JWT_LIST, {
    measure: 'throughput',
    maxCost: API_KEY_MAX_SLOWDOWN,
    label: 'API key vs access token on the member list',
  });
  // The limiter's cost is a few microseconds of a request's several hundred: CPU time per request shows it,
  // where throughput on a machine shared with the load generator varies by more than that from run to run.
  compare(rows, LIMITS_MEMORY, LIMITS_OFF, {
    measure: 'cpu',
    maxCost: LIMITER_MAX_COST,
    label: 'Rate limiting (memory store) on the member list',
  });
  compare(rows, LIMITS_REDIS, LIMITS_OFF, {
    measure: 'cpu',
    label: 'Rate limiting (Redis store) on the member list',
  });
  compare(rows, LIMITS_MEMORY, LIMITS_OFF, {
    measure: 'throughput',
    label: 'Rate limiting (memory store), throughput',
  });
  compare(rows, LIMITS_REDIS, LIMITS_OFF, {
    measure: 'throughput',
    label: 'Rate limiting (Redis store), throughput',
  });
  // Auditing's cost is the pending event's insert in the change's own transaction and the sequencer's share
  // (chaining it, in batches, counted by the workload's settle step): CPU per request is the measure the target
  // is set on; throughput is printed alongside. On PostgreSQL the replica's CPU leaves out the database server's.
  for (const [audited, plain, label] of [
    [AUDITED_CREATE, UNAUDITED_CREATE, 'Auditing a create'],
    [AUDITED_CREATE_POSTGRES, UNAUDITED_CREATE_POSTGRES, 'Auditing a create (PostgreSQL)'],
  ] as const) {
    compare(rows, audited, plain, { measure: 'cpu', maxCost: AUDIT_MAX_COST, label });
    compare(rows, audited, plain, { measure: 'throughput', label: `${label}, throughput` });
  }
  compare(rows, JOBS_SQLITE, JOBS_SQLITE_FLOOR, {
    measure: 'throughput',
    label: 'Background jobs vs their claim and finish updates alone (SQLite)',
  });
  compare(rows, JOBS_POSTGRES, JOBS_POSTGRES_FLOOR, {
    measure: 'throughput',
    label: 'Background jobs vs their claim and finish updates alone (PostgreSQL)',
  });
  compare(rows, WEBHOOK_DELIVERIES, WEBHOOK_BASELINE, {
    measure: 'throughput',
    label: 'Webhook deliveries vs raw POSTs to the same receiver',
  });
  // Realtime: what the platform adds to a change's way to a connected client, over the raw WebSocket round trip.
  for (const name of [REALTIME_CHANGE, REALTIME_DOMAIN_EVENT, REALTIME_REPLICAS]) {
    const change = rows.find((r) => r.name === name);
    const baseline = rows.find((r) => r.name === REALTIME_BASELINE);
    if (change?.p50Ms && baseline?.p50Ms !== undefined) {
      console.log(
        `${name}: p50 ${change.p50Ms} ms, p99 ${change.p99Ms} ms (raw WebSocket round trip p50 ${baseline.p50Ms} ms, p99 ${baseline.p99Ms} ms).`,
      );
    }
  }
  if (rows.some((r) => r.errors > 0 || r.non2xx > 0)) {
    console.error('Some requests failed: the figures above are not trustworthy.');
    process.exitCode = 1;
  }
} finally {
  await Promise.all(Object.values(servers).map((s) => s.stop()));
}
