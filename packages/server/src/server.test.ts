import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { Agent, request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import type { Dialect } from './db/database.ts';
import { testDialects } from './test/dialects.ts';
import { createTestDatabase, type TestDatabase } from './test/harness.ts';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const FIXTURE = 'packages/server/src/test/fixtures/slow-server.ts';
/** Generous bound for anything a child process must do (start, answer, exit); never a timing assertion. */
const PATIENCE_MS = 20_000;

interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

/** A Plinth server in a child process, with its stdout log lines parsed as they arrive. */
class ServerProcess {
  readonly child: ChildProcessWithoutNullStreams;
  readonly lines: LogLine[] = [];
  /** stdout lines that are not JSON (there must be none with LOG_FORMAT=json). */
  readonly unparsed: string[] = [];
  stderr = '';
  readonly exited: Promise<number | null>;
  #buffer = '';
  #waiters: (() => void)[] = [];

  constructor(env: Record<string, string>) {
    this.child = spawn(process.execPath, ['--import', 'tsx', FIXTURE], {
      cwd: repoRoot,
      env: { PATH: process.env.PATH ?? '', ...env },
    });
    this.child.stdout.on('data', (chunk: Buffer) => this.#onStdout(chunk.toString()));
    this.child.stderr.on('data', (chunk: Buffer) => {
      this.stderr += chunk.toString();
    });
    this.exited = new Promise((resolve) => this.child.on('exit', (code) => resolve(code)));
  }

  #onStdout(text: string): void {
    this.#buffer += text;
    const complete = this.#buffer.split('\n');
    this.#buffer = complete.pop() ?? '';
    for (const line of complete.filter(Boolean)) {
      try {
        this.lines.push(JSON.parse(line) as LogLine);
      } catch {
        this.unparsed.push(line);
      }
    }
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /** Resolves with the first log line matching `predicate`, waiting for it at most `PATIENCE_MS`. */
  async waitForLog(predicate: (line: LogLine) => boolean, what: string): Promise<LogLine> {
    const deadline = Date.now() + PATIENCE_MS;
    for (;;) {
      const found = this.lines.find(predicate);
      if (found) return found;
      if (Date.now() > deadline || this.child.exitCode !== null) {
        throw new Error(`no log line ${what}; stdout: ${JSON.stringify(this.lines)}; stderr: ${this.stderr}`);
      }
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
  }

  /** Kills the process if a failed test left it running. */
  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }
}

/** A port nothing listens on right now, for the child to listen on (it cannot report a port 0 back). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (!address || typeof address === 'string') throw new Error('no port');
  return address.port;
}

interface HttpResult {
  status: number;
  body: string;
}

/** One GET over its own TCP connection (or `agent`'s), failing with the socket error code if it cannot. */
function get(port: number, path: string, agent: Agent | false = false): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, agent }, (res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => {
        body += chunk.toString();
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.setTimeout(PATIENCE_MS, () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end();
  });
}

/** Processes and databases a test started, stopped and dropped after it whatever its outcome. */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function startServerProcess(dialect: Dialect, env: Record<string, string> = {}) {
  const database = await createTestDatabase(dialect);
  cleanups.push(() => database.drop());
  const port = await freePort();
  const server = new ServerProcess({
    NODE_ENV: 'test',
    HOST: '127.0.0.1',
    PORT: String(port),
    DATA_DIR: database.dataDir,
    DATABASE_URL: database.url,
    AUTO_MIGRATE: 'true',
    LOG_LEVEL: 'info',
    LOG_FORMAT: 'json',
    ...env,
  });
  cleanups.push(() => server.kill());
  await server.waitForLog((l) => l.msg.startsWith('Plinth listening on'), 'saying the server listens');
  expect((await get(port, '/health/live')).status).toBe(200);
  return { server, port, database };
}

function describeDatabase(dialect: Dialect, database: TestDatabase): string {
  if (dialect === 'sqlite') return `SQLite ${join(database.dataDir, 'plinth.db')}`;
  const url = new URL(database.url);
  return `PostgreSQL ${url.hostname}:${url.port || 5432}${url.pathname}`;
}

describe.each(testDialects)('plinth server process (%s)', (dialect) => {
  it('logs one start-up line naming its address and database, as JSON lines only', async () => {
    const { server, port, database } = await startServerProcess(dialect);
    const startLines = server.lines.filter((l) => l.msg.startsWith('Plinth listening'));
    expect(startLines.map((l) => l.msg)).toEqual([
      `Plinth listening on http://127.0.0.1:${port} (database: ${describeDatabase(dialect, database)})`,
    ]);
    const password = new URL(database.url).password;
    if (password) expect(JSON.stringify(server.lines)).not.toContain(password);
    expect(server.unparsed).toEqual([]);
  });

  it('on SIGTERM finishes the request in flight, refuses new connections, and exits 0', async () => {
    const { server, port } = await startServerProcess(dialect);

    const slow = get(port, '/api/v1/slow');
    // Awaited below; this only keeps a failure earlier in the test from also reporting an unhandled rejection.
    slow.catch(() => {});
    await server.waitForLog((l) => l.msg === 'slow request started', 'for the slow request');
    server.child.kill('SIGTERM');
    const shutdown = await server.waitForLog((l) => l.msg.startsWith('shutting down'), 'about shutting down');
    expect(shutdown.signal).toBe('SIGTERM');

    // Once shutdown has begun, a load balancer's new connection must not reach a handler: the listening
    // socket is closed (refused), or was closing with the connection still in the kernel's accept queue
    // (reset before any byte of the request was read), or Fastify answers 503 while it closes.
    const late = await get(port, '/health/live').then(
      (res) => res.status,
      (error: NodeJS.ErrnoException) => error.code,
    );
    expect(['ECONNREFUSED', 'ECONNRESET', 503]).toContain(late);

    expect(await slow).toEqual({ status: 200, body: JSON.stringify({ done: true }) });
    expect(await server.exited).toBe(0);
    expect(server.lines.filter((l) => l.msg.startsWith('shutting down'))).toHaveLength(1);
    expect(server.unparsed).toEqual([]);
  });

  it('does not let an idle keep-alive connection hold up shutdown', async () => {
    // Fastify keeps idle connections open for 72 s; were they not closed on shutdown, the process would hit
    // SHUTDOWN_TIMEOUT_MS and exit 1 instead of 0.
    const { server, port } = await startServerProcess(dialect, { SHUTDOWN_TIMEOUT_MS: '5000' });
    const agent = new Agent({ keepAlive: true });
    cleanups.push(async () => agent.destroy());
    expect((await get(port, '/health/live', agent)).status).toBe(200);
    // The socket returns to the agent's free list just after the response ends.
    const idleSockets = () => Object.values(agent.freeSockets).flat().length;
    for (let tries = 0; tries < 100 && idleSockets() === 0; tries++)
      await new Promise((r) => setTimeout(r, 10));
    expect(idleSockets()).toBe(1);

    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
  });

  it('exits 1 when in-flight requests outlast SHUTDOWN_TIMEOUT_MS', async () => {
    const { server, port } = await startServerProcess(dialect, { SHUTDOWN_TIMEOUT_MS: '200' });
    const slow = get(port, '/api/v1/slow').catch(
      (error: NodeJS.ErrnoException) => error.code ?? error.message,
    );
    await server.waitForLog((l) => l.msg === 'slow request started', 'for the slow request');
    server.child.kill('SIGTERM');

    expect(await server.exited).toBe(1);
    expect(server.lines.some((l) => /timeout/i.test(l.msg))).toBe(true);
    // The request that was cut off fails visibly rather than hanging the client.
    expect(await slow).not.toEqual({ status: 200, body: JSON.stringify({ done: true }) });
  });
});
