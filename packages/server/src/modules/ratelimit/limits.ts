import { readFileSync } from 'node:fs';
import { z } from 'zod';

/**
 * The rate-limit table: every limit Plinth enforces, in one declarative structure. The defaults below are
 * documented in docs/configuration.md; an operator overrides any part of them with a JSON file named by
 * `RATE_LIMITS_FILE`, merged over the defaults entry by entry and validated at start-up.
 */

/**
 * One limit: `points` requests per window of `durationSeconds`, the window opening at a key's first request.
 * `burst`, when set, is a second allowance a key draws on once its window is spent: `burst.points` more
 * requests per `burst.durationSeconds` (a longer window), for the occasional spike above the steady rate.
 */
export interface LimitSpec {
  readonly points: number;
  readonly durationSeconds: number;
  readonly burst?: { readonly points: number; readonly durationSeconds: number } | undefined;
}

/** Limits that depend on the organization's plan: one entry per plan, and `default` for plans without one. */
export type PlanLimits = Readonly<Record<string, LimitSpec>> & { readonly default: LimitSpec };

export interface RateLimitTable {
  /** Per client IP, for requests that are not authenticated. */
  readonly anonymous: LimitSpec;
  /** Per client IP, on `auth` routes (sign-in, sign-up, reset, verification), authenticated or not. */
  readonly auth: LimitSpec;
  /** Per client IP: how many different accounts may fail to sign in from it (credential stuffing). */
  readonly authAccounts: LimitSpec;
  /** Per signed-in person, across all their organizations. */
  readonly user: LimitSpec;
  /** Per caller (person, API key, or IP when anonymous), on `expensive` routes. */
  readonly expensive: LimitSpec;
  /** Per API key, by the plan of its organization. */
  readonly apikey: PlanLimits;
  /** Per organization — every member and key of it together — by its plan. */
  readonly org: PlanLimits;
}

const MINUTE = 60;

/** A plan tier: `perMinute` requests a minute, and half as many again as a burst allowance per ten minutes. */
const tier = (perMinute: number): LimitSpec => ({
  points: perMinute,
  durationSeconds: MINUTE,
  burst: { points: perMinute / 2, durationSeconds: 10 * MINUTE },
});

/** The limits Plinth enforces when `RATE_LIMITS_FILE` changes nothing. */
export const DEFAULT_RATE_LIMITS: RateLimitTable = {
  anonymous: { points: 300, durationSeconds: MINUTE },
  auth: { points: 20, durationSeconds: MINUTE },
  authAccounts: { points: 20, durationSeconds: 60 * MINUTE },
  user: tier(1200),
  expensive: { points: 10, durationSeconds: MINUTE },
  apikey: {
    default: tier(600),
    free: tier(600),
    basic: tier(2000),
    premium: tier(6000),
    enterprise: tier(12_000),
  },
  org: {
    default: tier(1200),
    free: tier(1200),
    basic: tier(4000),
    premium: tier(12_000),
    enterprise: tier(30_000),
  },
};

/** Rate-limiter-flexible keeps counts as 32-bit-safe integers; a billion per window is "unlimited" enough. */
const MAX_POINTS = 1_000_000_000;
const MAX_DURATION_SECONDS = 31 * 24 * 3600;

const Window = z.strictObject({
  points: z.number().int().min(1).max(MAX_POINTS),
  durationSeconds: z.number().int().min(1).max(MAX_DURATION_SECONDS),
});
/** In the file every field of a limit is optional: what it leaves out keeps its default. */
const LimitOverride = Window.partial().extend({ burst: Window.nullable().optional() });
const PlanOverride = z.record(z.string().regex(/^(default|[a-z][a-z0-9_-]{0,39})$/), LimitOverride);
const FileSchema = z.strictObject({
  anonymous: LimitOverride.optional(),
  auth: LimitOverride.optional(),
  // Distinct accounts are counted in one window; a burst allowance would not apply to them.
  authAccounts: Window.partial().optional(),
  user: LimitOverride.optional(),
  expensive: LimitOverride.optional(),
  apikey: PlanOverride.optional(),
  org: PlanOverride.optional(),
});
type LimitOverride = z.infer<typeof LimitOverride>;

/** `override` over `base`: each field it gives replaces the base's; `burst: null` removes the base's burst. */
function merge(base: LimitSpec, override: LimitOverride | undefined): LimitSpec {
  const burst = override?.burst === undefined ? base.burst : (override.burst ?? undefined);
  return {
    points: override?.points ?? base.points,
    durationSeconds: override?.durationSeconds ?? base.durationSeconds,
    ...(burst ? { burst } : {}),
  };
}

function mergePlans(
  base: PlanLimits,
  overrides: Record<string, LimitOverride> | undefined,
  plans: readonly string[],
  path: string,
): PlanLimits {
  const merged: Record<string, LimitSpec> = { ...base };
  for (const [plan, override] of Object.entries(overrides ?? {})) {
    if (plan !== 'default' && !plans.includes(plan)) {
      throw new Error(`${path}.${plan}: "${plan}" is not a plan of this installation (ORG_PLANS)`);
    }
    // A plan new to the table starts from the `default` entry.
    merged[plan] = merge(base[plan] ?? base.default, override);
  }
  return merged as PlanLimits;
}

/**
 * The table in force: the defaults, with the JSON document `text` (the contents of `RATE_LIMITS_FILE`) merged
 * over them. `plans` are the installation's plans; the file may give limits for them and for `default`.
 * @throws Error whose message names the bad entry (`apikey.gold.points: …`).
 */
export function mergeRateLimits(text: string | undefined, plans: readonly string[]): RateLimitTable {
  if (text === undefined) return DEFAULT_RATE_LIMITS;
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new Error(`not valid JSON (${(error as Error).message})`);
  }
  const parsed = FileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.join('.') || '(top level)';
    throw new Error(`${where}: ${issue?.message ?? 'invalid'}`);
  }
  const file = parsed.data;
  const d = DEFAULT_RATE_LIMITS;
  return {
    anonymous: merge(d.anonymous, file.anonymous),
    auth: merge(d.auth, file.auth),
    authAccounts: merge(d.authAccounts, file.authAccounts),
    user: merge(d.user, file.user),
    expensive: merge(d.expensive, file.expensive),
    apikey: mergePlans(d.apikey, file.apikey, plans, 'apikey'),
    org: mergePlans(d.org, file.org, plans, 'org'),
  };
}

/** Reads and merges `RATE_LIMITS_FILE`; errors name the file's bad entry (see `mergeRateLimits`). */
export function loadRateLimits(file: string | undefined, plans: readonly string[]): RateLimitTable {
  if (file === undefined) return DEFAULT_RATE_LIMITS;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(`cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  return mergeRateLimits(text, plans);
}

/** A plan's limit, or the `default` entry's for a plan the table does not name. */
export function planLimit(limits: PlanLimits, plan: string): LimitSpec {
  return limits[plan] ?? limits.default;
}
