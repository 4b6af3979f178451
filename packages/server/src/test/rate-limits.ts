import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** More requests per window than any test or benchmark sends: the limiter does all its work and never refuses. */
const UNLIMITED = { points: 1_000_000_000, durationSeconds: 60, burst: null };

/**
 * Writes a `RATE_LIMITS_FILE` under `dir` whose every limit is effectively infinite for an installation with
 * these `plans` (`ORG_PLANS`), and returns its path. Test
 * apps and the benchmark run with it, so that suites and load tests that send many requests from one address
 * measure and check what they are about rather than the default limits; the limiter still runs on every
 * request. Rate-limit tests set `RATE_LIMITS_FILE` themselves.
 */
export function writeUnlimitedRateLimitsFile(dir: string, plans: readonly string[]): string {
  const file = join(dir, 'rate-limits.unlimited.json');
  // Each plan gets an entry: the defaults have one for each built-in plan, which `default` would not override.
  const everyPlan = Object.fromEntries(['default', ...plans].map((plan) => [plan, UNLIMITED]));
  const limits = {
    anonymous: UNLIMITED,
    auth: UNLIMITED,
    authAccounts: { points: UNLIMITED.points, durationSeconds: UNLIMITED.durationSeconds },
    user: UNLIMITED,
    expensive: UNLIMITED,
    apikey: everyPlan,
    org: everyPlan,
  };
  writeFileSync(file, JSON.stringify(limits));
  return file;
}
