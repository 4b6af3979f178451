import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../config.ts';
import { DEFAULT_RATE_LIMITS, mergeRateLimits, planLimit } from './limits.ts';

const PLANS = ['free', 'basic', 'premium', 'enterprise'];

function configWith(file: string | undefined, extra: Record<string, string> = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), 'plinth-limits-config-'));
  return loadConfig({ NODE_ENV: 'test', DATA_DIR: dataDir, RATE_LIMITS_FILE: file, ...extra });
}

function fileWith(text: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'plinth-limits-')), 'limits.json');
  writeFileSync(file, text);
  return file;
}

describe('the rate-limit table', () => {
  it('has the documented defaults', () => {
    const table = configWith(undefined).rateLimits.table;
    expect(table.anonymous).toEqual({ points: 300, durationSeconds: 60 });
    expect(table.auth).toEqual({ points: 20, durationSeconds: 60 });
    expect(table.user.points).toBe(1200);
    expect(planLimit(table.apikey, 'free').points).toBe(600);
    expect(planLimit(table.apikey, 'enterprise').points).toBe(12_000);
    // A plan the table does not name gets the `default` entry.
    expect(planLimit(table.apikey, 'gold')).toEqual(table.apikey.default);
  });

  it('merges a file over the defaults, entry by entry, keeping what it leaves out', () => {
    const table = mergeRateLimits(
      JSON.stringify({ auth: { points: 5 }, apikey: { premium: { points: 7000 } }, user: { burst: null } }),
      PLANS,
    );
    expect(table.auth).toEqual({ points: 5, durationSeconds: 60 });
    expect(planLimit(table.apikey, 'premium')).toEqual({
      ...DEFAULT_RATE_LIMITS.apikey.premium,
      points: 7000,
    });
    expect(planLimit(table.apikey, 'free')).toEqual(DEFAULT_RATE_LIMITS.apikey.free);
    expect(table.user.burst).toBeUndefined();
    expect(table.anonymous).toEqual(DEFAULT_RATE_LIMITS.anonymous);
  });

  it('accepts limits for custom plans of ORG_PLANS', () => {
    const config = configWith(
      fileWith(JSON.stringify({ org: { pro: { points: 9000, durationSeconds: 60 } } })),
      {
        ORG_PLANS: 'starter,pro',
      },
    );
    expect(planLimit(config.rateLimits.table.org, 'pro').points).toBe(9000);
    expect(planLimit(config.rateLimits.table.org, 'starter')).toEqual(DEFAULT_RATE_LIMITS.org.default);
  });

  it.each([
    ['not JSON', '{ nope', /RATE_LIMITS_FILE: not valid JSON/],
    ['an unknown bucket', '{"anonymus": {"points": 1}}', /RATE_LIMITS_FILE: .*anonymus/],
    ['a zero limit', '{"auth": {"points": 0}}', /RATE_LIMITS_FILE: auth\.points: /],
    [
      'a fractional window',
      '{"user": {"durationSeconds": 1.5}}',
      /RATE_LIMITS_FILE: user\.durationSeconds: /,
    ],
    ['a text value', '{"org": {"free": {"points": "many"}}}', /RATE_LIMITS_FILE: org\.free\.points: /],
    [
      'a plan the installation lacks',
      '{"apikey": {"gold": {"points": 5}}}',
      /RATE_LIMITS_FILE: apikey\.gold: .*ORG_PLANS/,
    ],
    [
      'a burst allowance for distinct accounts',
      '{"authAccounts": {"burst": {"points": 1, "durationSeconds": 60}}}',
      /RATE_LIMITS_FILE: authAccounts: .*burst/,
    ],
    ['an unknown field', '{"user": {"points": 5, "per": "minute"}}', /RATE_LIMITS_FILE: user: .*per/],
  ])('refuses to start with %s, naming the entry', (_what, text, message) => {
    let error: unknown;
    try {
      configWith(fileWith(text));
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toMatch(message);
  });

  it('refuses to start when the file cannot be read', () => {
    expect(() => configWith('/nonexistent/limits.json')).toThrow(
      /RATE_LIMITS_FILE: cannot read \/nonexistent\/limits\.json \(ENOENT\)/,
    );
  });
});
