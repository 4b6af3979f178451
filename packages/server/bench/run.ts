import autocannon from 'autocannon';
import { argon2VerifyRate, authWorkloads } from './auth.workloads.ts';
import { API_KEY_LIST, JWT_LIST, orgWorkloads } from './orgs.workloads.ts';
import { type BenchServer, startBaseline, startPlinth } from './servers.ts';
import { connections, durationSeconds, type Figures, type Measurement, type Workload } from './workload.ts';

/**
 * `npm run bench`: drives the baseline and Plinth with autocannon, one workload after another, and prints
 * throughput and latency percentiles side by side. Figures from one run are comparable with each other, not
 * with another machine's. Each issue adds its workloads to `workloads`.
 *
 * Environment: BENCH_DURATION (seconds per workload, default 10), BENCH_CONNECTIONS (default 50).
 */
const get = (path: string) => async () => ({ path });

const workloads: (Workload | Measurement)[] = [
  { name: 'baseline: bare Fastify GET /hello', server: 'baseline', prepare: get('/hello') },
  { name: 'plinth: GET /health/live', server: 'plinth', prepare: get('/health/live') },
  argon2VerifyRate,
  ...authWorkloads,
  ...orgWorkloads,
];

/** How much slower the API-key path may be than the access-token path on the same list (issue 4's target). */
const API_KEY_MAX_SLOWDOWN = 0.1;

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

const baseline = await startBaseline();
const plinth = await startPlinth({ REQUIRE_EMAIL_VERIFICATION: 'false' }).catch(async (error: unknown) => {
  await baseline.stop();
  throw error;
});
const servers: Record<Workload['server'], BenchServer> = { baseline, plinth };
try {
  const rows: Figures[] = [];
  for (const workload of workloads) {
    process.stderr.write(`running ${workload.name} …\n`);
    rows.push(
      'measure' in workload ? await workload.measure() : await drive(servers[workload.server], workload),
    );
  }
  printTable(rows);
  const jwt = rows.find((r) => r.name === JWT_LIST)?.rate;
  const key = rows.find((r) => r.name === API_KEY_LIST)?.rate;
  if (jwt && key) {
    const slowdown = 1 - key / jwt;
    console.log(
      `API key vs access token on the member list: ${((key / jwt) * 100).toFixed(1)} % of the throughput (target: at least ${((1 - API_KEY_MAX_SLOWDOWN) * 100).toFixed(0)} %).`,
    );
    if (slowdown > API_KEY_MAX_SLOWDOWN) {
      console.error('The API-key path is more than 10 % slower than the access-token path.');
      process.exitCode = 1;
    }
  }
  if (rows.some((r) => r.errors > 0 || r.non2xx > 0)) {
    console.error('Some requests failed: the figures above are not trustworthy.');
    process.exitCode = 1;
  }
} finally {
  await Promise.all(Object.values(servers).map((s) => s.stop()));
}
