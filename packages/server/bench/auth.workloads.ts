import { randomBytes } from 'node:crypto';
import { hashPassword, verifyPassword } from '../src/modules/auth/password.ts';
import type { BenchServer } from './servers.ts';
import { connections, durationSeconds, type Figures, type Measurement, type Workload } from './workload.ts';

/** The argon2id cost the server runs with by default (OWASP's minimum), so both figures pay the same hash. */
const ARGON2 = { memoryKib: 19_456, timeCost: 2, parallelism: 1 };
const PASSWORD = 'bench passphrase that is long enough 7';

/**
 * The ceiling for sign-in throughput: argon2id verifications per second on this machine, as many in flight as
 * the HTTP workloads have connections (the hashes run on libuv's thread pool, as in the server). Sign-in should
 * cost little beyond this.
 */
export const argon2VerifyRate: Measurement = {
  name: 'raw argon2id verify (m=19456, t=2, p=1)',
  async measure(): Promise<Figures> {
    const hash = await hashPassword(PASSWORD, ARGON2);
    const deadline = Date.now() + durationSeconds * 1000;
    let done = 0;
    const worker = async () => {
      while (Date.now() < deadline) {
        await verifyPassword(hash, PASSWORD, ARGON2);
        done++;
      }
    };
    await Promise.all(Array.from({ length: Math.min(connections, 16) }, worker));
    return {
      name: this.name,
      rate: Math.round(done / durationSeconds),
      p50Ms: undefined,
      p99Ms: undefined,
      non2xx: 0,
      errors: 0,
    };
  },
};

/** POSTs JSON to the server (with `headers`, e.g. an access token) and returns the JSON answer; throws unless 2xx. */
export async function post(
  server: BenchServer,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Record<string, unknown>> {
  const response = await fetch(`${server.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${path} answered ${response.status}: ${await response.text()}`);
  return (await response.json()) as Record<string, unknown>;
}

/** A fresh account on the benchmark server (which runs with REQUIRE_EMAIL_VERIFICATION=false). */
export async function account(server: BenchServer): Promise<{ email: string; password: string }> {
  const email = `loadtest-${randomBytes(6).toString('hex')}@example.com`;
  await post(server, '/api/v1/auth/signup', { email, password: PASSWORD, name: 'Load Tester' });
  return { email, password: PASSWORD };
}

export const authWorkloads: Workload[] = [
  {
    name: 'plinth: POST /api/v1/auth/login',
    server: 'plinth',
    async prepare(server) {
      const credentials = await account(server);
      return {
        path: '/api/v1/auth/login',
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(credentials),
      };
    },
  },
  {
    // Every refresh spends its token, so the workload keeps a pool of live refresh tokens: each request takes one
    // and its response puts the new one back. (autocannon resets per-connection context between iterations, so
    // the pool lives outside it.) There are as many tokens as connections, one per request in flight.
    name: 'plinth: POST /api/v1/auth/refresh (rotation)',
    server: 'plinth',
    // Stopping a run drops the answers in flight, and the tokens they carried: the pool would run dry.
    warmup: false,
    async prepare(server) {
      const credentials = await account(server);
      const pool: string[] = [];
      for (let i = 0; i < connections; i++) {
        pool.push(String((await post(server, '/api/v1/auth/login', credentials)).refreshToken));
      }
      return {
        path: '/api/v1/auth/refresh',
        requests: [
          {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            setupRequest: (request) => ({ ...request, body: JSON.stringify({ refreshToken: pool.pop() }) }),
            onResponse: (status, body) => {
              if (status === 200) pool.push((JSON.parse(body) as { refreshToken: string }).refreshToken);
            },
          },
        ],
      };
    },
  },
];
