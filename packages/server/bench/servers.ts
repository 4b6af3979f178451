import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeUnlimitedRateLimitsFile } from '../src/test/rate-limits.ts';

const serverRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

/** A server process under load, and how to stop it. */
export interface BenchServer {
  readonly url: string;
  /** CPU time the server process has used so far (user + system), in microseconds. */
  cpuMicros(): number;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      probe.close(() => resolve(port));
    });
  });
}

async function waitUntilUp(url: string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null)
      throw new Error(`server exited with code ${child.exitCode} before answering`);
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`server at ${url} did not come up within 30 s`);
}

/**
 * CPU time of a child process from /proc (Linux): fields 14 and 15 of `/proc/<pid>/stat`, user and system time,
 * in clock ticks of 10 ms (USER_HZ is 100 on every Linux architecture Node supports).
 */
function cpuMicrosOf(child: ChildProcess): () => number {
  return () => {
    const stat = readFileSync(`/proc/${child.pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may contain spaces; count fields after it.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10_000;
  };
}

function stopper(child: ChildProcess, cleanup: () => void = () => {}): () => Promise<void> {
  return () =>
    new Promise((resolve) => {
      child.once('exit', () => {
        cleanup();
        resolve();
      });
      child.kill('SIGTERM');
    });
}

/** The bare Fastify baseline. */
export async function startBaseline(): Promise<BenchServer> {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(serverRoot, 'bench/baseline-server.ts'), String(port)],
    {
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  );
  const url = `http://127.0.0.1:${port}`;
  await waitUntilUp(`${url}/hello`, child);
  return { url, cpuMicros: cpuMicrosOf(child), stop: stopper(child) };
}

/**
 * Plinth as an operator runs it: `plinth serve` in production mode on a fresh SQLite file, logging at `info`
 * to a discarded stdout (so the cost of writing log lines is included, as in production). Its rate limits are
 * so high that no workload reaches them — the limiter does all its work on every request but never refuses —
 * unless `env` names another `RATE_LIMITS_FILE`.
 */
export async function startPlinth(
  env: Record<string, string> = {},
  command: string[] = [join(serverRoot, 'bin/plinth.js'), 'serve'],
): Promise<BenchServer> {
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), 'plinth-bench-'));
  const child = spawn(process.execPath, command, {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: {
      PATH: process.env.PATH,
      NODE_ENV: 'production',
      PORT: String(port),
      DATA_DIR: dataDir,
      AUTO_MIGRATE: 'true',
      JWT_SECRET: randomBytes(32).toString('base64url'),
      ENCRYPTION_KEY: randomBytes(32).toString('base64'),
      RATE_LIMITS_FILE: writeUnlimitedRateLimitsFile(dataDir, ['free', 'basic', 'premium', 'enterprise']),
      ...env,
    },
  });
  const url = `http://127.0.0.1:${port}`;
  await waitUntilUp(`${url}/health/live`, child);
  return {
    url,
    cpuMicros: cpuMicrosOf(child),
    stop: stopper(child, () => rmSync(dataDir, { recursive: true, force: true })),
  };
}

/** Plinth with the audit benchmark's extra module (audit-server.ts), started like `plinth serve`. */
export function startAuditBench(env: Record<string, string> = {}): Promise<BenchServer> {
  return startPlinth(env, ['--import', 'tsx', join(serverRoot, 'bench/audit-server.ts')]);
}

/** Whether a Redis server answers at `url` (a TCP connection within a second). */
export function redisReachable(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect({ host: hostname, port: Number(port || 6379), timeout: 1000 });
    const done = (reachable: boolean) => {
      socket.destroy();
      resolve(reachable);
    };
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
    socket.once('timeout', () => done(false));
  });
}
