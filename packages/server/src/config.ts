import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { parseEnv } from 'node:util';
import { z } from 'zod';

/**
 * Plinth's configuration: every setting comes from environment variables (or an optional `.env` file in the
 * working directory, which never overrides a variable that is already set), is validated once at start-up and
 * frozen. No other file reads `process.env`. docs/configuration.md documents every variable.
 */

export type DatabaseConfig =
  | { readonly dialect: 'sqlite'; readonly path: string }
  | {
      readonly dialect: 'postgres';
      readonly url: string;
      readonly readUrl: string | undefined;
      readonly poolMax: number;
    };

/** `TRUST_PROXY`: whether and which proxies' `X-Forwarded-*` headers are believed (Fastify's `trustProxy`). */
export type TrustProxy = boolean | number | string[];

export interface Config {
  readonly env: 'development' | 'production' | 'test';
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  readonly database: DatabaseConfig;
  /** Apply pending migrations at start-up. */
  readonly autoMigrate: boolean;
  readonly redisUrl: string | undefined;
  readonly log: { readonly level: LogLevel; readonly pretty: boolean };
  /** Allowed CORS origins; empty means CORS is off. */
  readonly corsOrigins: readonly string[];
  /** Largest accepted request body, in bytes. */
  readonly bodyLimitBytes: number;
  readonly trustProxy: TrustProxy;
  /** Secret for signing session tokens (HS256); at least 32 bytes. */
  readonly jwtSecret: string;
  /** When set, `GET /metrics` requires `Authorization: Bearer <token>`. */
  readonly metricsToken: string | undefined;
  /** How long a graceful shutdown waits for in-flight requests, in milliseconds. */
  readonly shutdownTimeoutMs: number;
  /** The address people reach Plinth at; links in mail point here. */
  readonly publicUrl: string;
  /** 32-byte key that encrypts secrets at rest (TOTP secrets, pending refresh tokens), AES-256-GCM. */
  readonly encryptionKey: Buffer;
  readonly auth: AuthConfig;
  readonly mail: MailConfig;
  readonly orgs: OrgsConfig;
}

export interface OrgsConfig {
  /** The plans organizations can be on; the first is the plan of a new organization. */
  readonly plans: readonly string[];
  /** How long an invitation link stays valid, in seconds. */
  readonly invitationTtlSeconds: number;
  /** How long a replica may keep using a membership's permissions before it looks again, in seconds. */
  readonly accessCacheTtlSeconds: number;
  /** How long a rotated API key's old secret keeps working, in seconds, unless the rotation says otherwise. */
  readonly apiKeyRotationGraceSeconds: number;
}

export interface AuthConfig {
  /** PEM private key (Ed25519 → EdDSA, RSA → RS256) for access tokens; HS256 with `jwtSecret` when unset. */
  readonly jwtPrivateKey: string | undefined;
  readonly jwtIssuer: string;
  readonly jwtAudience: string;
  readonly accessTokenTtlSeconds: number;
  /** Sliding lifetime of a refresh token: unused for this long, the session ends. */
  readonly refreshTokenTtlSeconds: number;
  /** Absolute lifetime of a session (a refresh family), however often it is refreshed. */
  readonly sessionMaxLifetimeSeconds: number;
  /** How long after a refresh token is spent a concurrent refresh with it still gets the same new pair. */
  readonly refreshReuseGraceSeconds: number;
  readonly signupEnabled: boolean;
  readonly requireEmailVerification: boolean;
  readonly passwordMinLength: number;
  /** The lowest acceptable zxcvbn score, 0–4. */
  readonly passwordMinScore: number;
  /** How many previous passwords cannot be reused. */
  readonly passwordHistory: number;
  /** Days after which a password must be changed; 0 means never (NIST's advice). */
  readonly passwordExpiryDays: number;
  readonly argon2: { readonly memoryKib: number; readonly timeCost: number; readonly parallelism: number };
  /** Failed sign-ins (per email, and per IP ×4) before a temporary lock. */
  readonly lockoutThreshold: number;
  readonly lockoutBaseSeconds: number;
  readonly lockoutMaxSeconds: number;
  /** Bootstrap admin created at start in embedded mode when no admin exists. */
  readonly bootstrapAdmin: { readonly email: string; readonly password: string } | undefined;
}

export interface MailConfig {
  /** SMTP server (`smtp://user:pass@host:587`, `smtps://…`); unset means the development outbox. */
  readonly smtpUrl: string | undefined;
  readonly from: string;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
type LogLevel = (typeof LOG_LEVELS)[number];

/** Raised when the environment does not describe a valid configuration; `message` names each bad variable. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

const booleanString = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'], { error: 'must be true or false' })
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

const integer = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d+$/, { error: `must be a whole number between ${min} and ${max}` })
    .transform(Number)
    .pipe(
      z
        .number()
        .min(min, { error: `must be at least ${min}` })
        .max(max, { error: `must be at most ${max}` }),
    );

const ipOrCidr = /^(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9a-fA-F:]+:[0-9a-fA-F:.]*)(?:\/\d{1,3})?$/;

const POSTGRES_URL = /^postgres(ql)?:\/\//;

const corsOrigins = z
  .string()
  .default('')
  .transform((value, ctx) => {
    const origins = value
      .split(',')
      .map((o) => o.trim())
      .filter(Boolean);
    for (const origin of origins) {
      if (!isOrigin(origin))
        ctx.addIssue({
          code: 'custom',
          message: `"${origin}" is not an origin like https://app.example.com`,
        });
    }
    return origins;
  });

const trustProxy = z
  .string()
  .default('false')
  .transform((value, ctx): TrustProxy => {
    const parsed = parseTrustProxy(value);
    if (parsed !== undefined) return parsed;
    ctx.addIssue({
      code: 'custom',
      message: 'must be true, false, a hop count, or a comma-separated list of IP addresses or CIDRs',
    });
    return z.NEVER;
  });

const EnvSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  HOST: z.string().min(1).default('127.0.0.1'),
  PORT: integer(0, 65535).default(3000),
  DATA_DIR: z.string().min(1).default('./data'),
  DATABASE_URL: z.string().min(1).optional(),
  DATABASE_READ_URL: z.string().regex(POSTGRES_URL, { error: 'must be a postgres:// URL' }).optional(),
  DATABASE_POOL_MAX: integer(1, 1000).default(10),
  AUTO_MIGRATE: booleanString.optional(),
  REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\//, { error: 'must be a redis:// or rediss:// URL' })
    .optional(),
  LOG_LEVEL: z.enum(LOG_LEVELS).default('info'),
  LOG_FORMAT: z.enum(['json', 'pretty']).optional(),
  CORS_ORIGINS: corsOrigins,
  BODY_LIMIT_BYTES: integer(1, 1024 * 1024 * 1024).default(1024 * 1024),
  TRUST_PROXY: trustProxy,
  JWT_SECRET: z.string().min(32, { error: 'must be at least 32 characters' }).optional(),
  METRICS_TOKEN: z.string().min(16, { error: 'must be at least 16 characters' }).optional(),
  SHUTDOWN_TIMEOUT_MS: integer(0, 600_000).default(10_000),
  PUBLIC_URL: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).optional(),
  ENCRYPTION_KEY: z
    .string()
    .refine((v) => Buffer.from(v, 'base64').length === 32, { error: 'must be 32 bytes, base64-encoded' })
    .optional(),
  JWT_PRIVATE_KEY: z
    .string()
    .refine((v) => v.includes('-----BEGIN PRIVATE KEY-----'), { error: 'must be a PKCS#8 PEM private key' })
    .optional(),
  JWT_ISSUER: z.string().min(1).optional(),
  JWT_AUDIENCE: z.string().min(1).default('plinth-api'),
  ACCESS_TOKEN_TTL_SECONDS: integer(60, 86_400).default(900),
  REFRESH_TOKEN_TTL_SECONDS: integer(300, 90 * 86_400).default(7 * 86_400),
  SESSION_MAX_LIFETIME_SECONDS: integer(300, 365 * 86_400).default(30 * 86_400),
  REFRESH_REUSE_GRACE_SECONDS: integer(0, 120).default(10),
  SIGNUP_ENABLED: booleanString.default(true),
  REQUIRE_EMAIL_VERIFICATION: booleanString.default(true),
  PASSWORD_MIN_LENGTH: integer(8, 64).default(15),
  PASSWORD_MIN_SCORE: integer(0, 4).default(3),
  PASSWORD_HISTORY: integer(0, 24).default(5),
  PASSWORD_EXPIRY_DAYS: integer(0, 3650).default(0),
  ARGON2_MEMORY_KIB: integer(19_456, 4_194_304).default(19_456),
  ARGON2_TIME_COST: integer(2, 100).default(2),
  ARGON2_PARALLELISM: integer(1, 16).default(1),
  LOCKOUT_THRESHOLD: integer(1, 100).default(5),
  LOCKOUT_BASE_SECONDS: integer(1, 3600).default(60),
  LOCKOUT_MAX_SECONDS: integer(1, 86_400).default(900),
  PLINTH_ADMIN_EMAIL: z.email({ error: 'must be an email address' }).optional(),
  PLINTH_ADMIN_PASSWORD: z.string().optional(),
  SMTP_URL: z
    .string()
    .regex(/^smtps?:\/\//, { error: 'must be an smtp:// or smtps:// URL' })
    .optional(),
  MAIL_FROM: z.string().min(3).default('Plinth <no-reply@localhost>'),
  ORG_PLANS: z
    .string()
    .default('free,basic,premium,enterprise')
    .transform((v) => [...new Set(v.split(',').map((p) => p.trim()))].filter(Boolean))
    .pipe(
      z
        .array(z.string().regex(/^[a-z][a-z0-9_-]{0,39}$/, { error: 'plan names are lower-case words' }))
        .min(1, { error: 'name at least one plan' }),
    ),
  INVITATION_TTL_SECONDS: integer(300, 90 * 86_400).default(7 * 86_400),
  ACCESS_CACHE_TTL_SECONDS: integer(0, 3600).default(60),
  API_KEY_ROTATION_GRACE_SECONDS: integer(0, 30 * 86_400).default(86_400),
});

/**
 * Rules between variables, checked on the raw values so that they are reported together with every other
 * problem, even when some variable is invalid on its own.
 */
function crossVariableProblems(env: Record<string, string>): string[] {
  const problems: string[] = [];
  if (env.DATABASE_READ_URL !== undefined && !POSTGRES_URL.test(env.DATABASE_URL ?? '')) {
    problems.push('DATABASE_READ_URL: read replicas need DATABASE_URL to point at PostgreSQL');
  }
  if (env.NODE_ENV === 'production' && env.JWT_SECRET === undefined) {
    problems.push('JWT_SECRET: is required when NODE_ENV=production');
  }
  if (env.NODE_ENV === 'production' && env.ENCRYPTION_KEY === undefined) {
    problems.push('ENCRYPTION_KEY: is required when NODE_ENV=production');
  }
  if ((env.PLINTH_ADMIN_EMAIL === undefined) !== (env.PLINTH_ADMIN_PASSWORD === undefined)) {
    problems.push('PLINTH_ADMIN_PASSWORD: PLINTH_ADMIN_EMAIL and PLINTH_ADMIN_PASSWORD go together');
  }
  return problems;
}

/**
 * Parses and validates the configuration.
 * @param env the variables to read; defaults to `process.env` merged over `./.env`.
 * @throws ConfigError naming every invalid or missing variable.
 */
export function loadConfig(env: Record<string, string | undefined> = processEnvWithDotEnv()): Config {
  // An empty variable means "not set", as operators expect from `FOO= plinth serve`.
  const present = Object.fromEntries(
    Object.entries(env).filter(
      (entry): entry is [string, string] => entry[1] !== undefined && entry[1] !== '',
    ),
  );
  const parsed = EnvSchema.safeParse(present);
  const problems = [
    ...(parsed.success ? [] : parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`)),
    ...crossVariableProblems(present),
  ];
  if (!parsed.success || problems.length > 0) {
    throw new ConfigError(`Invalid configuration:\n${problems.map((p) => `  ${p}`).join('\n')}`);
  }
  const e = parsed.data;
  const dataDir = resolve(e.DATA_DIR);
  const database = parseDatabaseUrl(
    e.DATABASE_URL ?? join(e.DATA_DIR, 'plinth.db'),
    e.DATABASE_READ_URL,
    e.DATABASE_POOL_MAX,
  );
  // Only once everything else is valid: a refused configuration must not leave a secrets file behind.
  const jwtSecret = e.JWT_SECRET ?? developmentSecret(dataDir, 'JWT_SECRET');
  const encryptionKey = Buffer.from(
    e.ENCRYPTION_KEY ?? developmentSecret(dataDir, 'ENCRYPTION_KEY'),
    'base64',
  );
  const publicUrl = (
    e.PUBLIC_URL ?? `http://${e.HOST.includes(':') ? `[${e.HOST}]` : e.HOST}:${e.PORT}`
  ).replace(/\/$/, '');

  return deepFreeze({
    env: e.NODE_ENV,
    host: e.HOST,
    port: e.PORT,
    dataDir,
    database,
    autoMigrate: e.AUTO_MIGRATE ?? database.dialect === 'sqlite',
    redisUrl: e.REDIS_URL,
    log: {
      level: e.LOG_LEVEL,
      pretty: (e.LOG_FORMAT ?? (e.NODE_ENV === 'development' ? 'pretty' : 'json')) === 'pretty',
    },
    corsOrigins: e.CORS_ORIGINS,
    bodyLimitBytes: e.BODY_LIMIT_BYTES,
    trustProxy: e.TRUST_PROXY,
    jwtSecret,
    metricsToken: e.METRICS_TOKEN,
    shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_MS,
    publicUrl,
    encryptionKey,
    auth: {
      jwtPrivateKey: e.JWT_PRIVATE_KEY,
      jwtIssuer: e.JWT_ISSUER ?? publicUrl,
      jwtAudience: e.JWT_AUDIENCE,
      accessTokenTtlSeconds: e.ACCESS_TOKEN_TTL_SECONDS,
      refreshTokenTtlSeconds: e.REFRESH_TOKEN_TTL_SECONDS,
      sessionMaxLifetimeSeconds: e.SESSION_MAX_LIFETIME_SECONDS,
      refreshReuseGraceSeconds: e.REFRESH_REUSE_GRACE_SECONDS,
      signupEnabled: e.SIGNUP_ENABLED,
      requireEmailVerification: e.REQUIRE_EMAIL_VERIFICATION,
      passwordMinLength: e.PASSWORD_MIN_LENGTH,
      passwordMinScore: e.PASSWORD_MIN_SCORE,
      passwordHistory: e.PASSWORD_HISTORY,
      passwordExpiryDays: e.PASSWORD_EXPIRY_DAYS,
      argon2: {
        memoryKib: e.ARGON2_MEMORY_KIB,
        timeCost: e.ARGON2_TIME_COST,
        parallelism: e.ARGON2_PARALLELISM,
      },
      lockoutThreshold: e.LOCKOUT_THRESHOLD,
      lockoutBaseSeconds: e.LOCKOUT_BASE_SECONDS,
      lockoutMaxSeconds: e.LOCKOUT_MAX_SECONDS,
      bootstrapAdmin:
        e.PLINTH_ADMIN_EMAIL && e.PLINTH_ADMIN_PASSWORD
          ? { email: e.PLINTH_ADMIN_EMAIL, password: e.PLINTH_ADMIN_PASSWORD }
          : undefined,
    },
    mail: { smtpUrl: e.SMTP_URL, from: e.MAIL_FROM },
    orgs: {
      plans: e.ORG_PLANS,
      invitationTtlSeconds: e.INVITATION_TTL_SECONDS,
      accessCacheTtlSeconds: e.ACCESS_CACHE_TTL_SECONDS,
      apiKeyRotationGraceSeconds: e.API_KEY_ROTATION_GRACE_SECONDS,
    },
  });
}

/** `postgres://…` selects PostgreSQL; `sqlite:<path>` or a plain file path selects SQLite. */
function parseDatabaseUrl(value: string, readUrl: string | undefined, poolMax: number): DatabaseConfig {
  if (POSTGRES_URL.test(value)) return { dialect: 'postgres', url: value, readUrl, poolMax };
  const path = value.startsWith('sqlite:') ? value.slice('sqlite:'.length) : value;
  return { dialect: 'sqlite', path: isAbsolute(path) ? path : resolve(path) };
}

function parseTrustProxy(value: string): TrustProxy | undefined {
  const v = value.trim().toLowerCase();
  if (v === 'true') return true;
  if (v === 'false') return false;
  if (/^\d+$/.test(v)) return Number(v);
  const list = v.split(',').map((s) => s.trim());
  return list.every((s) => ipOrCidr.test(s)) ? list : undefined;
}

function isOrigin(value: string): boolean {
  try {
    const url = new URL(value);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.origin === value;
  } catch {
    return false;
  }
}

/**
 * In development and tests a missing secret is generated once and kept in `<DATA_DIR>/secrets.json`
 * (mode 0600), so sessions survive restarts without anyone having to invent a key.
 */
function developmentSecret(dataDir: string, name: string): string {
  const file = join(dataDir, 'secrets.json');
  const secrets = existsSync(file) ? readSecrets(file, name) : {};
  const existing = secrets[name];
  if (typeof existing === 'string' && existing.length > 0) return existing;
  const secret = randomBytes(32).toString('base64url');
  mkdirSync(dataDir, { recursive: true });
  // `mode` applies only when the file is created; an existing file is narrowed before the secret is written.
  if (existsSync(file)) chmodSync(file, 0o600);
  writeFileSync(file, `${JSON.stringify({ ...secrets, [name]: secret }, null, 2)}\n`, { mode: 0o600 });
  return secret;
}

function readSecrets(file: string, name: string): Record<string, unknown> {
  try {
    const secrets: unknown = JSON.parse(readFileSync(file, 'utf8'));
    if (secrets && typeof secrets === 'object' && !Array.isArray(secrets))
      return secrets as Record<string, unknown>;
  } catch {
    // Reported below, like a file that parses to something other than an object.
  }
  // Silently replacing the file would sign everyone out and lose any other secret in it; the operator decides.
  throw new ConfigError(
    `Invalid configuration:\n  ${name}: not set, and ${file} (where development secrets are kept) is not a JSON object; fix or delete it`,
  );
}

function processEnvWithDotEnv(): Record<string, string | undefined> {
  const file = resolve('.env');
  const fromFile = existsSync(file) ? parseEnv(readFileSync(file, 'utf8')) : {};
  return { ...fromFile, ...process.env };
}

function deepFreeze<T>(value: T): T {
  // A Buffer (the encryption key) cannot be frozen; it is never handed out for writing.
  if (value && typeof value === 'object' && !ArrayBuffer.isView(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
