import autocannon from 'autocannon';
import { type BenchServer, startBaseline, startPlinth } from './servers.ts';

/**
 * `npm run bench`: drives the baseline and Plinth with autocannon, one workload after another, and prints
 * requests per second and latency percentiles side by side. Figures from one run are comparable with each
 * other, not with another machine's. Later issues add their workloads to `workloads`.
 *
 * Environment: BENCH_DURATION (seconds per workload, default 10), BENCH_CONNECTIONS (default 50).
 */
const durationSeconds = Number(process.env.BENCH_DURATION ?? 10);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 50);

interface Workload {
  name: string;
  /** The server this workload runs against. */
  server: 'baseline' | 'plinth';
  path: string;
  method?: 'GET' | 'POST';
  headers?: Record<string, string>;
  body?: string;
}

const workloads: Workload[] = [
  { name: 'baseline: bare Fastify GET /hello', server: 'baseline', path: '/hello' },
  { name: 'plinth: GET /health/live', server: 'plinth', path: '/health/live' },
];

interface Figures {
  name: string;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  non2xx: number;
  errors: number;
}

async function drive(server: BenchServer, workload: Workload): Promise<Figures> {
  const result = await autocannon({
    url: `${server.url}${workload.path}`,
    method: workload.method ?? 'GET',
    headers: workload.headers,
    body: workload.body,
    connections,
    duration: durationSeconds,
  });
  return {
    name: workload.name,
    requestsPerSecond: Math.round(result.requests.average),
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    non2xx: result.non2xx,
    errors: result.errors,
  };
}

function printTable(rows: Figures[]): void {
  const baseline = rows.find((r) => r.name.startsWith('baseline'))?.requestsPerSecond ?? 0;
  const header = ['workload', 'req/s', 'p50 ms', 'p99 ms', 'vs baseline', 'non-2xx', 'errors'];
  const lines = rows.map((r) => [
    r.name,
    String(r.requestsPerSecond),
    String(r.p50Ms),
    String(r.p99Ms),
    baseline ? `${Math.round((r.requestsPerSecond / baseline) * 100)} %` : '-',
    String(r.non2xx),
    String(r.errors),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? '').length)));
  const format = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ');
  console.log(`\n${format(header)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}`);
  for (const line of lines) console.log(format(line));
  console.log(`\n${connections} connections, ${durationSeconds} s per workload, Node ${process.version}.`);
}

const servers: Record<Workload['server'], BenchServer> = {
  baseline: await startBaseline(),
  plinth: await startPlinth(),
};
try {
  const rows: Figures[] = [];
  for (const workload of workloads) {
    process.stderr.write(`running ${workload.name} …\n`);
    rows.push(await drive(servers[workload.server], workload));
  }
  printTable(rows);
  if (rows.some((r) => r.errors > 0 || r.non2xx > 0)) {
    console.error('Some requests failed: the figures above are not trustworthy.');
    process.exitCode = 1;
  }
} finally {
  await Promise.all(Object.values(servers).map((s) => s.stop()));
}
