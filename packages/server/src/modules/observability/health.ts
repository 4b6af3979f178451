import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { withTimeout } from '../../core/timeout.ts';

/**
 * What a readiness check reports: `ok`, or `degraded` when the service works in a reduced mode (it stays
 * ready); a check that throws or does not answer in time makes the replica not ready.
 */
export type CheckStatus = 'ok' | 'degraded';
export type ReadinessCheck = () => Promise<CheckStatus>;

export interface CheckResult {
  status: CheckStatus | 'fail';
  latencyMs: number;
}

/** How long one readiness check may take before it counts as failed, in milliseconds. */
export const CHECK_TIMEOUT_MS = 2000;

/** The readiness checks of this replica; platform modules add theirs while the app boots. */
export class HealthChecks {
  readonly #checks = new Map<string, ReadinessCheck>();

  add(name: string, check: ReadinessCheck): void {
    if (this.#checks.has(name)) throw new Error(`readiness check "${name}" is already registered`);
    this.#checks.set(name, check);
  }

  /** Runs every check concurrently; failures are logged by the caller, not exposed. */
  async run(onFailure: (name: string, error: unknown) => void): Promise<Record<string, CheckResult>> {
    const entries = await Promise.all(
      [...this.#checks].map(async ([name, check]): Promise<[string, CheckResult]> => {
        const started = performance.now();
        try {
          const status = await withTimeout(check(), CHECK_TIMEOUT_MS, `check ${name}`);
          return [name, { status, latencyMs: elapsed(started) }];
        } catch (error) {
          onFailure(name, error);
          return [name, { status: 'fail', latencyMs: elapsed(started) }];
        }
      }),
    );
    return Object.fromEntries(entries);
  }
}

function elapsed(started: number): number {
  return Math.round((performance.now() - started) * 100) / 100;
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Readiness checks reported by `/health/ready` and `/health`. */
    healthChecks: HealthChecks;
  }
}

/** Decorates the app with its readiness-check registry. */
export const healthChecks = fp(
  async (app: FastifyInstance) => {
    app.decorate('healthChecks', new HealthChecks());
  },
  { name: 'plinth-health-checks' },
);
