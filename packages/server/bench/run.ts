import autocannon from 'autocannon';
import { argon2VerifyRate, authWorkloads } from './auth.workloads.ts';
import { API_KEY_LIST, JWT_LIST, orgWorkloads } from './orgs.workloads.ts';
import { LIMITS_MEMORY, LIMITS_OFF, LIMITS_REDIS, rateLimitWorkloads } from './ratelimit.workloads.ts';
import { type BenchServer, redisReachable, startBaseline, startPlinth } from './servers.ts';
import {
  connections,
  durationSeconds,
  type Figures,
  type Measurement,
  type ServerName,
  type Workload,
} from './workload.ts';

/**
 * `npm run bench`: drives the baseline and Plinth with autocannon, one workload after another, and prints
 * throughput and latency percentiles side by side. Figures from one run are comparable with each other, not
 * with another machine's. Each issue adds its workloads to `workloads`.
 *
 * Environment: BENCH_DURATION (seconds per workload, default 10), BENCH_CONNECTIONS (default 50), REDIS_URL
 * (the Redis of the Redis-store workload, default redis://127.0.0.1:6379; skipped when unreachable).
 */
const get = (path: string) => async () => ({ path });

const workloads: (Workload | Measurement)[] = [
  { name: 'baseline: bare Fastify GET /hello', server: 'baseline', prepare: get('/hello') },
  { name: 'plinth: GET /health/live', server: 'plinth', prepare: get('/health/live') },
  argon2VerifyRate,
  ...authWorkloads,
  ...orgWorkloads,
  ...rateLimitWorkloads,
];

/** How much slower the API-key path may be than the access-token path on the same list (issue 4's target). */
const API_KEY_MAX_SLOWDOWN = 0.1;
/** How much the in-memory rate limiter may add to the cost of a request (issue 5's target). */
const LIMITER_MAX_COST = 0.05;

/**
 * Compares two rows' throughput: prints `label` with the ratio and, given a `maxLoss`, fails the run (exit 1)
 * when `slower` lost more than that fraction of `faster`'s throughput.
 */
function compare(
  rows: Figures[],
  slower: string,
  faster: string,
  maxLoss: number | undefined,
  label: string,
): void {
  const a = rows.find((r) => r.name === slower)?.rate;
  const b = rows.find((r) => r.name === faster)?.rate;
  if (!a || !b) return;
  const loss = 1 - a / b;
  const target = maxLoss === undefined ? '' : ` (target: under ${(maxLoss * 100).toFixed(0)} %)`;
  console.log(
    `${label}: ${((a / b) * 100).toFixed(1)} % of the throughput, ${(loss * 100).toFixed(1)} % cost${target}.`,
  );
  if (maxLoss !== undefined && loss > maxLoss) {
    console.error(`${label}: over the target.`);
    process.exitCode = 1;
  }
}

async function drive(server: BenchServer, workload: Workload): Promise<Figures> {
  const { path, ...options } = await workload.prepare(server);
  const result = await autocannon({
    ...options,
    url: `${server.url}${path}`,
    connections,
    duration: durationSeconds,
  });
  return {
    name: workload.name,
    rate: Math.round(result.requests.average),
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    non2xx: result.non2xx,
    errors: result.errors,
  };
}

function printTable(rows: Figures[]): void {
  const baseline = rows.find((r) => r.name.startsWith('baseline'))?.rate ?? 0;
  const header = ['workload', 'req/s', 'p50 ms', 'p99 ms', 'vs baseline', 'non-2xx', 'errors'];
  const lines = rows.map((r) => [
    r.name,
    String(r.rate),
    r.p50Ms === undefined ? '-' : String(r.p50Ms),
    r.p99Ms === undefined ? '-' : String(r.p99Ms),
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
  servers['plinth-limits-off'] = await startPlinth({ ...plinthEnv, RATE_LIMITS_ENABLED: 'false' });
  if (await redisReachable(redisUrl)) {
    servers['plinth-redis'] = await startPlinth({ ...plinthEnv, REDIS_URL: redisUrl });
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
    if (!('measure' in workload) && !server) continue;
    process.stderr.write(`running ${workload.name} …\n`);
    rows.push(
      'measure' in workload ? await workload.measure() : await drive(server as BenchServer, workload),
    );
  }
  printTable(rows);
  compare(rows, API_KEY_LIST, JWT_LIST, API_KEY_MAX_SLOWDOWN, 'API key vs access token on the member list');
  compare(
    rows,
    LIMITS_MEMORY,
    LIMITS_OFF,
    LIMITER_MAX_COST,
    'Rate limiting (memory store) on the member list',
  );
  compare(rows, LIMITS_REDIS, LIMITS_OFF, undefined, 'Rate limiting (Redis store) on the member list');
  if (rows.some((r) => r.errors > 0 || r.non2xx > 0)) {
    console.error('Some requests failed: the figures above are not trustworthy.');
    process.exitCode = 1;
  }
} finally {
  await Promise.all(Object.values(servers).map((s) => s.stop()));
}
