import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { parseEnv } from 'node:util';
import { z } from 'zod';
import { parseRange } from './core/ip-ranges.ts';
import { loadRateLimits, type RateLimitTable } from './modules/ratelimit/limits.ts';

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

/** Bounds on what one request may make the server read and parse; each violation is a 4xx problem. */
export interface RequestLimitsConfig {
  /** Largest accepted request body on `auth` and `exempt` routes, in bytes. */
  readonly authBodyLimitBytes: number;
  /** Deepest nesting of arrays and objects in a JSON body (`[[1]]` is 2 deep). */
  readonly jsonMaxDepth: number;
  /** Most elements in any one array of a JSON body. */
  readonly jsonMaxArrayLength: number;
  /** Most members (keys) in any one object of a JSON body. */
  readonly jsonMaxObjectKeys: number;
  /** Longest accepted request target (path and query string), in characters. */
  readonly maxUrlLength: number;
  /** Most `name=value` pairs in a query string. */
  readonly maxQueryParameters: number;
  /** Largest request head (request line and headers) Node's HTTP parser accepts, in bytes. */
  readonly maxHeaderBytes: number;
  /** Bounds on a `multipart/form-data` upload, on the routes that accept one (see core/uploads.ts). */
  readonly uploads: {
    /** Largest file, in bytes. */
    readonly maxFileBytes: number;
    /** Most files in one request. */
    readonly maxFiles: number;
    /** Most non-file fields in one request. */
    readonly maxFields: number;
  };
}

/**
 * How long the HTTP server waits for a slow client, in milliseconds. Each bounds a different phase, so that a
 * client cannot hold a connection (and its memory) open by sending or reading slowly.
 */
export interface TimeoutsConfig {
  /**
   * From a connection's opening (or a keep-alive request's first byte) until the request's headers are complete
   * (Node's `headersTimeout`); this is also what closes a connection on which the client never says anything.
   */
  readonly headersMs: number;
  /** From a request's first byte until it is received whole, body included (Node's `requestTimeout`). */
  readonly requestMs: number;
  /** How long an idle keep-alive connection stays open after a response (Node's `keepAliveTimeout`). */
  readonly keepAliveMs: number;
  /**
   * How long a connection may see no traffic at all, in either direction, while a request is handled or its
   * response written (Fastify's `connectionTimeout`: the socket's inactivity timeout).
   */
  readonly connectionMs: number;
}

/** When the replica refuses new requests (503) instead of queueing them; a threshold of 0 is off. */
export interface LoadSheddingConfig {
  /** Mean event-loop delay over one sample, in milliseconds. */
  readonly maxEventLoopDelayMs: number;
  /** V8 heap in use, in bytes. */
  readonly maxHeapUsedBytes: number;
  /** Resident set size of the process, in bytes. */
  readonly maxRssBytes: number;
  /** How often the measures are sampled, in milliseconds. */
  readonly sampleIntervalMs: number;
  /** The `Retry-After` of a refused request, in seconds. */
  readonly retryAfterSeconds: number;
}

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
  /** Largest accepted request body, in bytes, on `standard` and `expensive` routes. */
  readonly bodyLimitBytes: number;
  readonly requestLimits: RequestLimitsConfig;
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
  readonly timeouts: TimeoutsConfig;
  readonly loadShedding: LoadSheddingConfig;
  readonly rateLimits: RateLimitsConfig;
  readonly jobs: JobsConfig;
  readonly webhooks: WebhooksConfig;
  readonly privacy: PrivacyConfig;
  readonly realtime: RealtimeConfig;
  readonly backup: BackupConfig;
}

/** The nightly SQLite backup of embedded mode (modules/backup); unused on PostgreSQL. */
export interface BackupConfig {
  /** Where backups are written (`BACKUP_DIR`; default `backups/` beside the SQLite file). */
  readonly dir: string;
  /** How many backups are kept, the newest (`BACKUP_KEEP`); older ones are deleted after each backup. */
  readonly keep: number;
}

/** Limits of the realtime connections (WebSocket and SSE) of one replica; docs/configuration.md explains each. */
export interface RealtimeConfig {
  /** How long a ticket from `POST /realtime/ticket` can be used, in seconds (it works once). */
  readonly ticketTtlSeconds: number;
  /** Largest message a client may send, in bytes; a larger one is answered with an error and ignored. */
  readonly maxMessageBytes: number;
  /** Most channels one connection may follow. */
  readonly maxSubscriptions: number;
  /** Most connections one user (or API key) may hold open on one replica. */
  readonly maxConnectionsPerUser: number;
  /** Most connections one replica holds open. */
  readonly maxConnections: number;
  /** How often the server pings each connection, in ms; one that has not answered the previous ping is dropped. */
  readonly pingIntervalMs: number;
  /** How many bytes may wait unsent for one client before it is dropped as a slow consumer. */
  readonly maxBufferedBytes: number;
}

export interface PrivacyConfig {
  /** How long a finished data export can be downloaded (its archive is then removed), in seconds. */
  readonly exportTtlSeconds: number;
  /** How long after an erasure request the account is erased; signing in meanwhile cancels it. */
  readonly erasureGraceDays: number;
  /** Retention policies whose default the operator overrides: policy name → days (`RETENTION_DAYS`). */
  readonly retentionDays: Readonly<Record<string, number>>;
  /** Days audit events are kept before archiving, for chains without a setting of their own; 0 keeps them for ever. */
  readonly auditRetentionDays: number;
  /** Where archived audit segments are written. */
  readonly auditArchiveDir: string;
  /** Between two passes of a replica's audit sequencer, which chains pending events, in milliseconds. */
  readonly auditSequenceIntervalMs: number;
}

export interface WebhooksConfig {
  /**
   * Hosts (exact names, case-insensitive) and IP addresses or CIDR ranges that webhook URLs may reach although
   * they are not public (`WEBHOOK_ALLOWED_HOSTS`); empty by default.
   */
  readonly allowedHosts: readonly string[];
  /** Whether endpoint URLs must be https (in production); http is accepted otherwise. */
  readonly requireHttps: boolean;
  /** How long one delivery attempt may take, connection to response body, in milliseconds. */
  readonly timeoutMs: number;
  /** An endpoint whose attempts have all failed for this many days is turned off; 0 never turns one off. */
  readonly autoDisableDays: number;
  /** How long a rotated signing secret keeps signing alongside the new one by default, in seconds. */
  readonly rotationGraceSeconds: number;
}

export interface JobsConfig {
  /** Whether this process runs background jobs and schedules (a replica may serve requests only). */
  readonly worker: boolean;
  /** How many jobs of one queue this process runs at once, for queues not in `queueConcurrency`. */
  readonly concurrency: number;
  /** Queues whose concurrency differs from `concurrency`: queue name → jobs at once (`JOBS_QUEUE_CONCURRENCY`). */
  readonly queueConcurrency: Readonly<Record<string, number>>;
  /** How often an idle worker looks for due jobs and schedules, in milliseconds. */
  readonly pollIntervalMs: number;
  /** How long a claimed job stays with its worker without a heartbeat before another may take it, in seconds. */
  readonly visibilityTimeoutSeconds: number;
  /** How long a shutdown waits for running jobs before handing them back to the queue, in milliseconds. */
  readonly shutdownGraceMs: number;
}

export interface RateLimitsConfig {
  /** Whether requests are rate-limited at all (off only when a gateway in front does it). */
  readonly enabled: boolean;
  /** The limits: the defaults with `RATE_LIMITS_FILE` merged over them. */
  readonly table: RateLimitTable;
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
  /**
   * The IP addresses and CIDR ranges superadmin routes (`/api/v1/admin/…`) accept requests from; empty means
   * anywhere. Matched against the client address as `TRUST_PROXY` determines it.
   */
  readonly superadminAllowedIps: readonly string[];
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

/**
 * `name=number` pairs, comma-separated (e.g. `sessions=60,mail_outbox=7`), as an object; empty by default. Names
 * are lower-case identifiers; whether each names something that exists is checked where the names are known.
 */
const namedNumbers = (format: { digits: number; example: string; unit: string }) =>
  z
    .string()
    .default('')
    .transform((v) =>
      v
        .split(',')
        .map((entry) => entry.trim())
        .filter(Boolean),
    )
    .pipe(
      z.array(
        z.string().regex(new RegExp(`^[a-z][a-z0-9_.-]{0,63}=\\d{1,${format.digits}}$`), {
          error: `write name=${format.unit} pairs, comma-separated, e.g. ${format.example}`,
        }),
      ),
    )
    .transform(
      (entries): Record<string, number> =>
        Object.fromEntries(entries.map((entry) => [entry.split('=')[0], Number(entry.split('=')[1])])),
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

const ipAllowlist = z
  .string()
  .default('')
  .transform((value, ctx) => {
    const entries = value
      .split(',')
      .map((entry) => entry.trim())
      .filter(Boolean);
    for (const entry of entries) {
      if (!parseRange(entry))
        ctx.addIssue({ code: 'custom', message: `"${entry}" is not an IP address or CIDR range` });
    }
    return entries;
  });

/** A host name as a URL carries it (letters, digits, hyphens, dots; no scheme, port or path). */
const HOST_NAME =
  /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

const webhookAllowedHosts = z
  .string()
  .default('')
  .transform((value, ctx) => {
    const entries = value
      .split(',')
      .map((entry) => entry.trim().toLowerCase())
      .filter(Boolean);
    for (const entry of entries) {
      if (!parseRange(entry) && !HOST_NAME.test(entry))
        ctx.addIssue({ code: 'custom', message: `"${entry}" is not a host name, IP address or CIDR range` });
    }
    return entries;
  });

const MIB = 1024 * 1024;

/** The server timeouts' defaults, in milliseconds (docs/configuration.md explains each). */
const DEFAULT_TIMEOUTS_MS = {
  HEADERS_TIMEOUT_MS: 10_000,
  REQUEST_TIMEOUT_MS: 30_000,
  // Longer than a load balancer's usual 60 s idle timeout, so that the balancer, not Plinth, closes an idle
  // connection: otherwise it may send a request on a connection Plinth is closing, and answer it with a 502.
  KEEP_ALIVE_TIMEOUT_MS: 72_000,
  CONNECTION_TIMEOUT_MS: 60_000,
} as const;

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
  AUTH_BODY_LIMIT_BYTES: integer(1024, 1024 * 1024).default(16 * 1024),
  JSON_MAX_DEPTH: integer(1, 1000).default(32),
  JSON_MAX_ARRAY_LENGTH: integer(1, 10_000_000).default(10_000),
  JSON_MAX_OBJECT_KEYS: integer(1, 1_000_000).default(1000),
  MAX_URL_LENGTH: integer(256, 1024 * 1024).default(8192),
  MAX_QUERY_PARAMETERS: integer(1, 100_000).default(100),
  MAX_HEADER_BYTES: integer(1024, 1024 * 1024).default(16 * 1024),
  UPLOAD_MAX_FILE_BYTES: integer(1, 1024 * 1024 * 1024 * 100).default(10 * 1024 * 1024),
  UPLOAD_MAX_FILES: integer(1, 1000).default(10),
  UPLOAD_MAX_FIELDS: integer(0, 1000).default(20),
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
  SUPERADMIN_ALLOWED_IPS: ipAllowlist,
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
  HEADERS_TIMEOUT_MS: integer(100, 600_000).default(DEFAULT_TIMEOUTS_MS.HEADERS_TIMEOUT_MS),
  REQUEST_TIMEOUT_MS: integer(100, 3_600_000).default(DEFAULT_TIMEOUTS_MS.REQUEST_TIMEOUT_MS),
  KEEP_ALIVE_TIMEOUT_MS: integer(100, 600_000).default(DEFAULT_TIMEOUTS_MS.KEEP_ALIVE_TIMEOUT_MS),
  CONNECTION_TIMEOUT_MS: integer(100, 3_600_000).default(DEFAULT_TIMEOUTS_MS.CONNECTION_TIMEOUT_MS),
  LOAD_SHED_MAX_EVENT_LOOP_DELAY_MS: integer(0, 60_000).default(1000),
  LOAD_SHED_MAX_HEAP_USED_MIB: integer(0, 1024 * 1024).default(0),
  LOAD_SHED_MAX_RSS_MIB: integer(0, 1024 * 1024).default(0),
  // Well above the 10 ms ticks the event-loop delay is measured with: a sample with no tick in it reads as an
  // infinite delay.
  LOAD_SHED_SAMPLE_INTERVAL_MS: integer(100, 60_000).default(1000),
  LOAD_SHED_RETRY_AFTER_SECONDS: integer(1, 3600).default(10),
  RATE_LIMITS_ENABLED: booleanString.default(true),
  DATA_EXPORT_TTL_SECONDS: integer(3600, 30 * 86_400).default(7 * 86_400),
  ERASURE_GRACE_DAYS: integer(0, 365).default(14),
  AUDIT_RETENTION_DAYS: integer(0, 36_500).default(0),
  AUDIT_ARCHIVE_DIR: z.string().min(1).optional(),
  AUDIT_SEQUENCE_INTERVAL_MS: integer(10, 60_000).default(100),
  RETENTION_DAYS: namedNumbers({ digits: 5, example: 'sessions=60,mail_outbox=7', unit: 'days' }),
  JOBS_WORKER: booleanString.default(true),
  JOBS_CONCURRENCY: integer(1, 256).default(4),
  JOBS_QUEUE_CONCURRENCY: namedNumbers({ digits: 3, example: 'webhooks=16,reports=1', unit: 'jobs' }).pipe(
    z.record(z.string(), z.number().int().min(1).max(256)),
  ),
  JOBS_POLL_INTERVAL_MS: integer(10, 600_000).default(1000),
  JOBS_VISIBILITY_TIMEOUT_SECONDS: integer(5, 86_400).default(300),
  JOBS_SHUTDOWN_GRACE_MS: integer(0, 600_000).default(10_000),
  BACKUP_DIR: z.string().min(1).optional(),
  BACKUP_KEEP: integer(1, 1000).default(7),
  WEBHOOK_ALLOWED_HOSTS: webhookAllowedHosts,
  WEBHOOK_TIMEOUT_MS: integer(1000, 60_000).default(15_000),
  WEBHOOK_AUTO_DISABLE_DAYS: integer(0, 365).default(5),
  WEBHOOK_SECRET_ROTATION_GRACE_SECONDS: integer(0, 7 * 86_400).default(86_400),
  RATE_LIMITS_FILE: z.string().optional(),
  REALTIME_TICKET_TTL_SECONDS: integer(5, 300).default(30),
  REALTIME_MAX_MESSAGE_BYTES: integer(256, 65_536).default(4096),
  REALTIME_MAX_SUBSCRIPTIONS: integer(1, 1000).default(100),
  REALTIME_MAX_CONNECTIONS_PER_USER: integer(1, 1000).default(10),
  REALTIME_MAX_CONNECTIONS: integer(1, 1_000_000).default(10_000),
  REALTIME_PING_INTERVAL_MS: integer(1000, 600_000).default(30_000),
  REALTIME_MAX_BUFFERED_BYTES: integer(16 * 1024, 256 * MIB).default(MIB),
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
  // Each compared only when both values are whole numbers; a malformed one is reported on its own.
  const ms = (name: keyof typeof DEFAULT_TIMEOUTS_MS) => {
    const value = env[name] ?? String(DEFAULT_TIMEOUTS_MS[name]);
    return /^\d+$/.test(value) ? Number(value) : undefined;
  };
  const headers = ms('HEADERS_TIMEOUT_MS');
  const request = ms('REQUEST_TIMEOUT_MS');
  if (headers !== undefined && request !== undefined && headers > request) {
    // Node refuses this combination: the headers are part of the request.
    problems.push('HEADERS_TIMEOUT_MS: must not be longer than REQUEST_TIMEOUT_MS');
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
  const rateLimitTable = rateLimitsFrom(e.RATE_LIMITS_FILE, e.ORG_PLANS);
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
    requestLimits: {
      authBodyLimitBytes: e.AUTH_BODY_LIMIT_BYTES,
      jsonMaxDepth: e.JSON_MAX_DEPTH,
      jsonMaxArrayLength: e.JSON_MAX_ARRAY_LENGTH,
      jsonMaxObjectKeys: e.JSON_MAX_OBJECT_KEYS,
      maxUrlLength: e.MAX_URL_LENGTH,
      maxQueryParameters: e.MAX_QUERY_PARAMETERS,
      maxHeaderBytes: e.MAX_HEADER_BYTES,
      uploads: {
        maxFileBytes: e.UPLOAD_MAX_FILE_BYTES,
        maxFiles: e.UPLOAD_MAX_FILES,
        maxFields: e.UPLOAD_MAX_FIELDS,
      },
    },
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
      superadminAllowedIps: e.SUPERADMIN_ALLOWED_IPS,
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
    timeouts: {
      headersMs: e.HEADERS_TIMEOUT_MS,
      requestMs: e.REQUEST_TIMEOUT_MS,
      keepAliveMs: e.KEEP_ALIVE_TIMEOUT_MS,
      connectionMs: e.CONNECTION_TIMEOUT_MS,
    },
    loadShedding: {
      maxEventLoopDelayMs: e.LOAD_SHED_MAX_EVENT_LOOP_DELAY_MS,
      maxHeapUsedBytes: e.LOAD_SHED_MAX_HEAP_USED_MIB * MIB,
      maxRssBytes: e.LOAD_SHED_MAX_RSS_MIB * MIB,
      sampleIntervalMs: e.LOAD_SHED_SAMPLE_INTERVAL_MS,
      retryAfterSeconds: e.LOAD_SHED_RETRY_AFTER_SECONDS,
    },
    rateLimits: { enabled: e.RATE_LIMITS_ENABLED, table: rateLimitTable },
    privacy: {
      exportTtlSeconds: e.DATA_EXPORT_TTL_SECONDS,
      erasureGraceDays: e.ERASURE_GRACE_DAYS,
      retentionDays: e.RETENTION_DAYS,
      auditRetentionDays: e.AUDIT_RETENTION_DAYS,
      auditArchiveDir: resolve(e.AUDIT_ARCHIVE_DIR ?? join(dataDir, 'audit-archives')),
      auditSequenceIntervalMs: e.AUDIT_SEQUENCE_INTERVAL_MS,
    },
    realtime: {
      ticketTtlSeconds: e.REALTIME_TICKET_TTL_SECONDS,
      maxMessageBytes: e.REALTIME_MAX_MESSAGE_BYTES,
      maxSubscriptions: e.REALTIME_MAX_SUBSCRIPTIONS,
      maxConnectionsPerUser: e.REALTIME_MAX_CONNECTIONS_PER_USER,
      maxConnections: e.REALTIME_MAX_CONNECTIONS,
      pingIntervalMs: e.REALTIME_PING_INTERVAL_MS,
      maxBufferedBytes: e.REALTIME_MAX_BUFFERED_BYTES,
    },
    webhooks: {
      allowedHosts: e.WEBHOOK_ALLOWED_HOSTS,
      requireHttps: e.NODE_ENV === 'production',
      timeoutMs: e.WEBHOOK_TIMEOUT_MS,
      autoDisableDays: e.WEBHOOK_AUTO_DISABLE_DAYS,
      rotationGraceSeconds: e.WEBHOOK_SECRET_ROTATION_GRACE_SECONDS,
    },
    backup: {
      dir: resolve(
        e.BACKUP_DIR ?? join(database.dialect === 'sqlite' ? dirname(database.path) : dataDir, 'backups'),
      ),
      keep: e.BACKUP_KEEP,
    },
    jobs: {
      worker: e.JOBS_WORKER,
      concurrency: e.JOBS_CONCURRENCY,
      queueConcurrency: e.JOBS_QUEUE_CONCURRENCY,
      pollIntervalMs: e.JOBS_POLL_INTERVAL_MS,
      visibilityTimeoutSeconds: e.JOBS_VISIBILITY_TIMEOUT_SECONDS,
      shutdownGraceMs: e.JOBS_SHUTDOWN_GRACE_MS,
    },
  });
}

/** The rate-limit table, or a ConfigError naming the file's bad entry. */
function rateLimitsFrom(file: string | undefined, plans: readonly string[]): RateLimitTable {
  try {
    return loadRateLimits(file, plans);
  } catch (error) {
    throw new ConfigError(`Invalid configuration:\n  RATE_LIMITS_FILE: ${(error as Error).message}`);
  }
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
