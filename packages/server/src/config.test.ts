import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Config, ConfigError, loadConfig } from './config.ts';

/** A valid secret, so tests that are not about secrets never write a secrets file. */
const SECRET = 's'.repeat(32);
/** A valid ENCRYPTION_KEY: 32 bytes, base64. */
const KEY = Buffer.alloc(32, 7).toString('base64');
const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

let dataDir: string;
beforeEach(() => {
  dataDir = mkdtempSync(join(tmpdir(), 'plinth-config-'));
});
afterEach(() => {
  rmSync(dataDir, { recursive: true, force: true });
});

/** The ConfigError `loadConfig(env)` throws; fails the test if it does not throw one. */
function configErrorOf(env: Record<string, string | undefined>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('loadConfig accepted an invalid configuration');
}

/** The variables a ConfigError names, in the order it names them. */
function namedVariables(error: ConfigError): string[] {
  return [...error.message.matchAll(/^ {2}([A-Z_]+): /gm)].map((m) => m[1] ?? '');
}

describe('loadConfig defaults', () => {
  it('listens on 127.0.0.1:3000 with SQLite in ./data and conservative HTTP settings', () => {
    const config = loadConfig({ JWT_SECRET: SECRET });
    expect(config).toMatchObject({
      env: 'development',
      host: '127.0.0.1',
      port: 3000,
      dataDir: resolve('data'),
      database: { dialect: 'sqlite', path: resolve('data', 'plinth.db') },
      autoMigrate: true,
      redisUrl: undefined,
      log: { level: 'info', pretty: true },
      corsOrigins: [],
      bodyLimitBytes: 1024 * 1024,
      trustProxy: false,
      jwtSecret: SECRET,
      metricsToken: undefined,
      shutdownTimeoutMs: 10_000,
    });
  });

  it('treats an empty variable as unset', () => {
    const config = loadConfig({ JWT_SECRET: SECRET, PORT: '', HOST: '', CORS_ORIGINS: '', TRUST_PROXY: '' });
    expect(config.port).toBe(3000);
    expect(config.host).toBe('127.0.0.1');
    expect(config.corsOrigins).toEqual([]);
    expect(config.trustProxy).toBe(false);
  });

  it('logs JSON outside development unless told otherwise', () => {
    expect(loadConfig({ JWT_SECRET: SECRET, ENCRYPTION_KEY: KEY, NODE_ENV: 'production' }).log.pretty).toBe(
      false,
    );
    expect(
      loadConfig({ JWT_SECRET: SECRET, ENCRYPTION_KEY: KEY, NODE_ENV: 'production', LOG_FORMAT: 'pretty' })
        .log.pretty,
    ).toBe(true);
    expect(loadConfig({ JWT_SECRET: SECRET, LOG_FORMAT: 'json' }).log.pretty).toBe(false);
  });

  it('reads every setting an operator can give', () => {
    const config = loadConfig({
      JWT_SECRET: SECRET,
      HOST: '0.0.0.0',
      PORT: '8080',
      LOG_LEVEL: 'warn',
      BODY_LIMIT_BYTES: '2048',
      REDIS_URL: 'rediss://cache.example.com:6380',
      METRICS_TOKEN: 'm'.repeat(16),
      SHUTDOWN_TIMEOUT_MS: '0',
    });
    expect(config).toMatchObject({
      host: '0.0.0.0',
      port: 8080,
      log: { level: 'warn' },
      bodyLimitBytes: 2048,
      redisUrl: 'rediss://cache.example.com:6380',
      metricsToken: 'm'.repeat(16),
      shutdownTimeoutMs: 0,
    });
  });
});

describe('DATABASE_URL', () => {
  it.each(['postgres://plinth:pw@db.example.com:5432/plinth', 'postgresql://db.example.com/plinth'])(
    'selects PostgreSQL for %s and does not migrate on start-up by default',
    (url) => {
      const config = loadConfig({ JWT_SECRET: SECRET, DATABASE_URL: url });
      expect(config.database).toEqual({ dialect: 'postgres', url, readUrl: undefined, poolMax: 10 });
      expect(config.autoMigrate).toBe(false);
    },
  );

  it('takes a PostgreSQL read replica and pool size', () => {
    const config = loadConfig({
      JWT_SECRET: SECRET,
      DATABASE_URL: 'postgres://primary.example.com/plinth',
      DATABASE_READ_URL: 'postgres://replica.example.com/plinth',
      DATABASE_POOL_MAX: '25',
      AUTO_MIGRATE: 'true',
    });
    expect(config.database).toEqual({
      dialect: 'postgres',
      url: 'postgres://primary.example.com/plinth',
      readUrl: 'postgres://replica.example.com/plinth',
      poolMax: 25,
    });
    expect(config.autoMigrate).toBe(true);
  });

  it.each([
    ['sqlite:/x/y.db', '/x/y.db'],
    ['sqlite:relative/y.db', resolve('relative/y.db')],
    ['/var/lib/plinth/app.db', '/var/lib/plinth/app.db'],
    ['data/app.db', resolve('data/app.db')],
  ])('selects SQLite for %s, at an absolute path', (url, path) => {
    const config = loadConfig({ JWT_SECRET: SECRET, DATABASE_URL: url });
    expect(config.database).toEqual({ dialect: 'sqlite', path });
    expect(config.autoMigrate).toBe(true);
  });

  it('puts the default SQLite file inside DATA_DIR', () => {
    const config = loadConfig({ JWT_SECRET: SECRET, DATA_DIR: dataDir });
    expect(config.dataDir).toBe(dataDir);
    expect(config.database).toEqual({ dialect: 'sqlite', path: join(dataDir, 'plinth.db') });
  });

  it('lets AUTO_MIGRATE=false turn off start-up migrations on SQLite', () => {
    expect(loadConfig({ JWT_SECRET: SECRET, AUTO_MIGRATE: 'false' }).autoMigrate).toBe(false);
  });
});

describe('CORS_ORIGINS and TRUST_PROXY', () => {
  it('reads a comma-separated origin list, trimming spaces', () => {
    const config = loadConfig({
      JWT_SECRET: SECRET,
      CORS_ORIGINS: 'https://console.example.com, http://localhost:5173',
    });
    expect(config.corsOrigins).toEqual(['https://console.example.com', 'http://localhost:5173']);
  });

  it.each([
    ['true', true],
    ['FALSE', false],
    ['2', 2],
    ['10.0.0.0/8, 127.0.0.1', ['10.0.0.0/8', '127.0.0.1']],
    ['::1', ['::1']],
  ])('reads TRUST_PROXY=%s', (value, expected) => {
    expect(loadConfig({ JWT_SECRET: SECRET, TRUST_PROXY: value }).trustProxy).toEqual(expected);
  });
});

describe('invalid configuration', () => {
  it.each([
    ['PORT', { PORT: 'abc' }, /whole number/],
    ['PORT', { PORT: '70000' }, /at most 65535/],
    ['PORT', { PORT: '-1' }, /whole number/],
    ['LOG_LEVEL', { LOG_LEVEL: 'loud' }, /fatal/],
    ['CORS_ORIGINS', { CORS_ORIGINS: 'not-a-url' }, /not-a-url/],
    ['CORS_ORIGINS', { CORS_ORIGINS: 'https://console.example.com/' }, /not an origin/],
    ['CORS_ORIGINS', { CORS_ORIGINS: 'https://ok.example.com,ftp://files.example.com' }, /ftp:/],
    ['TRUST_PROXY', { TRUST_PROXY: 'garbage' }, /hop count/],
    ['DATABASE_READ_URL', { DATABASE_READ_URL: 'postgres://replica.example.com/plinth' }, /PostgreSQL/],
    ['DATABASE_READ_URL', { DATABASE_URL: 'postgres://db/p', DATABASE_READ_URL: 'mysql://r/p' }, /postgres/],
    ['JWT_SECRET', { JWT_SECRET: 'too-short' }, /at least 32/],
    ['REDIS_URL', { REDIS_URL: 'http://x' }, /redis:\/\//],
    ['BODY_LIMIT_BYTES', { BODY_LIMIT_BYTES: '0' }, /at least 1/],
    ['NODE_ENV', { NODE_ENV: 'staging' }, /development/],
    ['AUTO_MIGRATE', { AUTO_MIGRATE: 'maybe' }, /true or false/],
    ['METRICS_TOKEN', { METRICS_TOKEN: 'short' }, /at least 16/],
  ])('refuses a bad %s and names it', (variable, env, why) => {
    const error = configErrorOf({ JWT_SECRET: SECRET, DATA_DIR: dataDir, ...env });
    expect(namedVariables(error)).toEqual([variable]);
    expect(error.message).toMatch(why);
  });

  it('requires JWT_SECRET and ENCRYPTION_KEY in production and names them', () => {
    const error = configErrorOf({ NODE_ENV: 'production', DATA_DIR: dataDir });
    expect(namedVariables(error).sort()).toEqual(['ENCRYPTION_KEY', 'JWT_SECRET']);
    expect(error.message).toContain('NODE_ENV=production');
    expect(existsSync(join(dataDir, 'secrets.json'))).toBe(false);
  });

  it('names every bad variable at once, so one restart is enough to see them all', () => {
    const error = configErrorOf({
      NODE_ENV: 'production',
      DATA_DIR: dataDir,
      PORT: 'abc',
      CORS_ORIGINS: 'not-a-url',
      TRUST_PROXY: 'garbage',
      DATABASE_READ_URL: 'postgres://replica.example.com/plinth',
    });
    expect(namedVariables(error).sort()).toEqual([
      'CORS_ORIGINS',
      'DATABASE_READ_URL',
      'ENCRYPTION_KEY',
      'JWT_SECRET',
      'PORT',
      'TRUST_PROXY',
    ]);
  });
});

describe('development secrets', () => {
  const secretsFile = () => join(dataDir, 'secrets.json');

  it.each(['development', 'test'])(
    'generates JWT_SECRET in %s into DATA_DIR/secrets.json, readable by the owner only',
    (nodeEnv) => {
      const config = loadConfig({ NODE_ENV: nodeEnv, DATA_DIR: dataDir });
      expect(config.jwtSecret.length).toBeGreaterThanOrEqual(32);
      expect(statSync(secretsFile()).mode & 0o777).toBe(0o600);
      const secrets = JSON.parse(readFileSync(secretsFile(), 'utf8'));
      expect(secrets).toEqual({ JWT_SECRET: config.jwtSecret, ENCRYPTION_KEY: expect.any(String) });
      expect(Buffer.from(secrets.ENCRYPTION_KEY, 'base64').equals(config.encryptionKey)).toBe(true);
      expect(config.encryptionKey.length).toBe(32);
    },
  );

  it('reuses the generated secret on the next start, so sessions survive restarts', () => {
    const first = loadConfig({ DATA_DIR: dataDir });
    const second = loadConfig({ DATA_DIR: dataDir });
    expect(second.jwtSecret).toBe(first.jwtSecret);
  });

  it('generates a different secret for another data directory', () => {
    const other = mkdtempSync(join(tmpdir(), 'plinth-config-'));
    try {
      expect(loadConfig({ DATA_DIR: other }).jwtSecret).not.toBe(loadConfig({ DATA_DIR: dataDir }).jwtSecret);
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });

  it('keeps the other secrets in the file and narrows a too-open file to 0600', () => {
    writeFileSync(secretsFile(), JSON.stringify({ OTHER_SECRET: 'keep-me' }));
    chmodSync(secretsFile(), 0o644);
    const config = loadConfig({ DATA_DIR: dataDir });
    expect(JSON.parse(readFileSync(secretsFile(), 'utf8'))).toEqual({
      OTHER_SECRET: 'keep-me',
      JWT_SECRET: config.jwtSecret,
      ENCRYPTION_KEY: expect.any(String),
    });
    expect(statSync(secretsFile()).mode & 0o777).toBe(0o600);
  });

  it('prefers explicit secrets and writes no file', () => {
    const config = loadConfig({ DATA_DIR: dataDir, JWT_SECRET: SECRET, ENCRYPTION_KEY: KEY });
    expect(config.jwtSecret).toBe(SECRET);
    expect(config.encryptionKey.equals(Buffer.from(KEY, 'base64'))).toBe(true);
    expect(existsSync(secretsFile())).toBe(false);
  });

  it.each([
    ['a variable is invalid', { PORT: 'abc' }],
    ['variables contradict each other', { DATABASE_READ_URL: 'postgres://replica.example.com/plinth' }],
  ])('writes no secrets file when the configuration is refused because %s', (_why, env) => {
    configErrorOf({ DATA_DIR: dataDir, ...env });
    expect(existsSync(secretsFile())).toBe(false);
  });

  it('refuses a corrupt secrets file with a ConfigError naming it, instead of replacing the secret', () => {
    writeFileSync(secretsFile(), '{ not json');
    const error = configErrorOf({ DATA_DIR: dataDir });
    expect(namedVariables(error)).toEqual(['JWT_SECRET']);
    expect(error.message).toContain(secretsFile());
    expect(readFileSync(secretsFile(), 'utf8')).toBe('{ not json');
  });
});

describe('the returned config', () => {
  it('is frozen all the way down', () => {
    const config = loadConfig({
      JWT_SECRET: SECRET,
      CORS_ORIGINS: 'https://console.example.com',
      TRUST_PROXY: '10.0.0.1',
    });
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.database)).toBe(true);
    expect(Object.isFrozen(config.log)).toBe(true);
    expect(Object.isFrozen(config.corsOrigins)).toBe(true);
    expect(Object.isFrozen(config.trustProxy)).toBe(true);
    // Modules are strict mode: writing to the config throws instead of silently changing behaviour.
    const writable = config as { -readonly [K in keyof Config]: Config[K] };
    expect(() => {
      writable.port = 1;
    }).toThrow(TypeError);
    expect(() => (config.corsOrigins as string[]).push('https://evil.example.net')).toThrow(TypeError);
    expect(config.port).toBe(3000);
  });
});

describe('plinth serve with a bad configuration', () => {
  it('exits non-zero and names the bad variable on stderr', async () => {
    const child = spawn(process.execPath, ['packages/server/bin/plinth.js', 'serve'], {
      cwd: REPO_ROOT,
      // Only what the CLI needs: nothing from the test's own environment may make the configuration valid.
      env: { PATH: process.env.PATH, HOME: process.env.HOME, PORT: 'abc', DATA_DIR: dataDir },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 20_000,
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((done) =>
      child.on('close', (exitCode, exitSignal) => done([exitCode, exitSignal])),
    );
    expect(signal).toBeNull();
    expect(code).toBe(1);
    expect(stderr).toMatch(/^ {2}PORT: /m);
    expect(existsSync(join(dataDir, 'secrets.json'))).toBe(false);
  });
});
