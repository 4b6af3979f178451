import cors from '@fastify/cors';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyPluginAsync,
  type RawReplyDefaultExpression,
  type RawRequestDefaultExpression,
  type RawServerDefault,
} from 'fastify';
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Redis } from 'ioredis';
import type { Config, TrustProxy } from './config.ts';
import { createBroadcast } from './core/broadcast.ts';
import { type Clock, systemClock } from './core/clock.ts';
import { clientErrorHandler, errorHandlingPlugin, frameworkErrorHandler } from './core/errors.ts';
import { createPersonalDataRegistry, type PersonalDataRegistry } from './core/personal-data.ts';
import { openRedis } from './core/redis.ts';
import { requestIdOf } from './core/request-id.ts';
import { requestLimitServerOptions, requestLimitsPlugin } from './core/request-limits.ts';
import { createRetentionRegistry, type RetentionRegistry } from './core/retention.ts';
import { securityHeadersPlugin } from './core/security-headers.ts';
import { httpServerTimeoutOptions, serverTimeoutOptions } from './core/server-timeouts.ts';
import { type DatabaseHandle, openDatabase } from './db/database.ts';
import { readInstallationId } from './db/installation.ts';
import { migrateToLatest, migrationStatus } from './db/migrate.ts';
import { apiDocsPlugin } from './modules/apidocs/index.ts';
import { apiKeysModule, apiKeyTags, createApiKeyStore } from './modules/apikeys/index.ts';
import { auditLogModule, auditReadsPlugin, auditTags } from './modules/audit/index.ts';
import {
  type AuthDeps,
  authModule,
  authTags,
  createAdmin,
  createAuthenticators,
  createRevokedSessions,
  createTokenService,
  systemCaller,
} from './modules/auth/index.ts';
import { defineBackupJob } from './modules/backup/index.ts';
import { createDomainEvents, eventsModule, eventTags } from './modules/events/index.ts';
import {
  createJobMetrics,
  createJobQueue,
  type JobQueue,
  jobRetention,
  jobsAdminRoutes,
} from './modules/jobs/index.ts';
import { createMailer, mailOutboxRetention, queuedMailer } from './modules/mail/index.ts';
import { createNotifier, notificationsModule, notificationTags } from './modules/notifications/index.ts';
import {
  createMetrics,
  healthChecks,
  healthRoutes,
  loadSheddingPlugin,
  loggerOptions,
  metrics,
  observabilityTag,
  RequestLogController,
} from './modules/observability/index.ts';
import { orgsModule, orgTags } from './modules/orgs/index.ts';
import { createConsentPurposeRegistry, privacyModule, privacyTags } from './modules/privacy/index.ts';
import {
  createCallerLookups,
  createRateLimiter,
  rateLimitPlugin,
  rateLimitTags,
  rateLimitUsageModule,
} from './modules/ratelimit/index.ts';
import { createAccessRegistry, createAccessResolver, rbacModule, rbacTags } from './modules/rbac/index.ts';
import {
  allowedOrigins,
  createRealtimeHub,
  orgChannel,
  realtimeModule,
  realtimeTags,
} from './modules/realtime/index.ts';
import { reportsModule, reportTags } from './modules/reports/index.ts';
import { addressPolicy, createWebhookSender, webhooksModule, webhookTags } from './modules/webhooks/index.ts';

declare module 'fastify' {
  interface FastifyInstance {
    config: Config;
    database: DatabaseHandle;
    /** The shared Redis client when `REDIS_URL` is set (scale-out mode); undefined in embedded mode. */
    redis: Redis | undefined;
    clock: Clock;
    /** The durable background job queue: modules define their jobs and schedules on it at start-up. */
    jobs: JobQueue;
    /** Every module's declared personal data, which a data export gathers (core/personal-data.ts). */
    personalData: PersonalDataRegistry;
    /** Every module's retention policies, applied daily (core/retention.ts). */
    retention: RetentionRegistry;
  }
}

/** The app `buildApp` returns: a Fastify instance whose routes are typed by their Zod schemas. */
export type PlinthApp = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression,
  RawReplyDefaultExpression,
  FastifyBaseLogger,
  ZodTypeProvider
>;

export interface AppOptions {
  /** The source of time for every rule; tests pass a fake one. */
  clock?: Clock;
  /** Where log lines go instead of stdout, as JSON lines (tests read them to check what is logged). */
  logStream?: { write(line: string): void };
  /** Extra plugins registered under `/api/v1` after the platform's modules (an application's own modules). */
  modules?: FastifyPluginAsync[];
}

/**
 * The composition root: builds a ready-to-listen Fastify app from a config. It is the one place that picks
 * implementations (SQLite or PostgreSQL, in-process or Redis) and registers plugins and modules in boot order.
 * It never listens; `server.ts` does.
 */
export async function buildApp(config: Config, options: AppOptions = {}): Promise<PlinthApp> {
  const appMetrics = createMetrics();
  const app = Fastify<RawServerDefault>({
    logger: loggerOptions(config, options.logStream),
    genReqId: requestIdOf,
    requestIdHeader: false,
    logController: new RequestLogController(),
    // Body limit, prototype-poisoning refusal, query parameter count: core/request-limits.ts.
    ...requestLimitServerOptions(config),
    trustProxy: trustProxyOption(config.trustProxy),
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    // Slow clients (slowloris headers, trickled bodies, idle sockets) are cut off: core/server-timeouts.ts.
    ...serverTimeoutOptions(config.timeouts),
    http: {
      ...httpServerTimeoutOptions(config.timeouts),
      // Node's HTTP parser refuses a larger request head (431, rendered by `clientErrorHandler`).
      maxHeaderSize: config.requestLimits.maxHeaderBytes,
    },
    // Errors the router raises before any hook runs (malformed URL encoding, over-long parameters).
    frameworkErrors: frameworkErrorHandler,
    // Requests Node's HTTP parser refuses (headers over MAX_HEADER_BYTES, malformed HTTP) get problem+json too.
    clientErrorHandler,
  }).withTypeProvider<ZodTypeProvider>();

  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  // JSON is the only request body the API accepts; Fastify's text/plain parser would let strings through to
  // routes that expect objects. Anything else gets 415.
  app.removeContentTypeParser('text/plain');

  const database = openDatabase(config.database, {
    log: app.log,
    onQuery: (kind, seconds) =>
      appMetrics.dbQueryDuration.observe({ dialect: config.database.dialect, kind }, seconds),
  });
  app.addHook('onClose', async () => database.close());
  if (config.autoMigrate) {
    const applied = await migrateToLatest(database.db, database.dialect);
    if (applied.length > 0) app.log.info({ migrations: applied }, 'applied database migrations');
  }

  const redis = config.redisUrl ? openRedis(config.redisUrl, app.log) : undefined;
  if (redis) app.addHook('onClose', async () => void (await redis.quit().catch(() => redis.disconnect())));

  const clock = options.clock ?? systemClock;
  app.decorate('config', config);
  app.decorate('database', database);
  app.decorate('redis', redis);
  app.decorate('clock', clock);
  const jobs = createJobQueue({
    db: database.db,
    clock,
    log: app.log,
    config: config.jobs,
    metrics: createJobMetrics(appMetrics.registry, database.db),
  });
  app.decorate('jobs', jobs);
  // The domain event outbox: modules publish in their changes' transactions; the relay job fans events out.
  const domainEvents = createDomainEvents({ database, jobs, clock, log: app.log });
  app.decorate('domainEvents', domainEvents);
  const personalData = createPersonalDataRegistry();
  app.decorate('personalData', personalData);
  const retention = createRetentionRegistry();
  app.decorate('retention', retention);
  retention.add(mailOutboxRetention);
  retention.add(jobRetention);
  // Jobs and schedules are defined while the modules register; the worker starts once every module has. Before
  // the server closes its connections, it stops taking jobs and lets running ones finish (or hands them back).
  if (config.jobs.worker) app.addHook('onReady', async () => jobs.start());
  app.addHook('preClose', async () => jobs.stop());

  const broadcast = createBroadcast(redis, app.log);
  app.addHook('onClose', async () => broadcast.close());
  const mailTransport = createMailer(config, database.db, clock, app.log);
  app.addHook('onClose', async () => mailTransport.close());
  // Every module sends through the queue: a mail is a durable job, retried while the mail server is away.
  const mailer = queuedMailer(jobs, mailTransport, config.encryptionKey);
  const revoked = await createRevokedSessions({
    db: database.db,
    clock,
    accessTokenTtlSeconds: config.auth.accessTokenTtlSeconds,
    broadcast,
    log: app.log,
  });
  app.addHook('onClose', async () => revoked.close());
  const authDeps: AuthDeps = {
    db: database.db,
    database,
    config,
    clock,
    log: app.log,
    mailer,
    tokens: await createTokenService(config.auth, config.jwtSecret),
    revoked,
  };
  if (config.auth.bootstrapAdmin && database.dialect === 'sqlite') await bootstrapAdmin(authDeps);

  const registry = createAccessRegistry();
  const access = await createAccessResolver({
    database,
    registry,
    broadcast,
    ttlSeconds: config.orgs.accessCacheTtlSeconds,
  });
  const apiKeyStore = await createApiKeyStore({
    database,
    encryptionKey: config.encryptionKey,
    clock,
    log: app.log,
    broadcast,
    cacheTtlSeconds: config.orgs.accessCacheTtlSeconds,
  });
  const callerLookups = createCallerLookups(database, config.orgs.accessCacheTtlSeconds);
  access.onOrgChanged((orgId) => {
    apiKeyStore.forgetOrg(orgId);
    callerLookups.forgetOrg(orgId);
  });
  const rateLimitDeps = {
    table: config.rateLimits.table,
    limiter: createRateLimiter(redis, await rateLimitKeyPrefix(database, redis), app.log),
    lookups: callerLookups,
    database,
    clock,
    decisions: appMetrics.rateLimitDecisions,
  };
  app.addHook('onClose', async () => apiKeyStore.close());
  // Live events to connected clients, fanned out to every replica over the broadcast (modules/realtime).
  const realtimeHub = await createRealtimeHub({ broadcast, database, clock, log: app.log });
  const notifier = createNotifier({ database, clock, log: app.log, realtime: realtimeHub });
  const authenticate = createAuthenticators(authDeps, apiKeyStore.verify);

  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });

  // Before every route: its `onRoute` hook gives each later route its class's body limit.
  await app.register(requestLimitsPlugin);
  await app.register(errorHandlingPlugin);
  await app.register(securityHeadersPlugin);
  if (config.corsOrigins.length > 0) {
    await app.register(cors, { origin: [...config.corsOrigins], credentials: true, maxAge: 600 });
  }

  await app.register(healthChecks);
  app.healthChecks.add('database', async () => {
    await database.ping();
    return 'ok';
  });
  app.healthChecks.add('migrations', async () => {
    const pending = (await migrationStatus(database.db, database.dialect)).filter(
      (m) => m.executedAt === null,
    );
    if (pending.length > 0) throw new Error(`pending migrations: ${pending.map((m) => m.name).join(', ')}`);
    return 'ok';
  });
  if (redis) {
    // Everything Plinth keeps in Redis has a per-replica fallback (rate limits in memory, caches that expire),
    // so losing Redis degrades the installation but must not take every replica out of the load balancer.
    app.healthChecks.add('redis', async () => {
      try {
        await redis.ping();
        return 'ok';
      } catch {
        // The client logs the connection failure itself, once per distinct error.
        return 'degraded';
      }
    });
  }
  // Before every route, so that an overloaded replica refuses requests before it authenticates or reads them.
  await app.register(loadSheddingPlugin, { ...config.loadShedding });

  // Before every route it limits: its `onRoute` hook records each later route's class.
  if (config.rateLimits.enabled) await app.register(rateLimitPlugin, { deps: rateLimitDeps });
  // Before every route: its `onRoute` hook equips each later route that declares `auditRead`.
  await app.register(auditReadsPlugin, { database });

  // The docs plugin records only routes registered after it, so it comes before every route.
  await app.register(apiDocsPlugin, {
    tags: [
      observabilityTag,
      ...authTags,
      ...orgTags,
      ...rbacTags,
      ...apiKeyTags,
      ...eventTags,
      ...webhookTags,
      ...auditTags,
      ...rateLimitTags,
      ...reportTags,
      ...privacyTags,
      ...realtimeTags,
      ...notificationTags,
    ],
  });
  await app.register(metrics, { metrics: appMetrics, token: config.metricsToken });
  await app.register(healthRoutes, { dialect: database.dialect });
  await app.register(authModule, { deps: authDeps, authenticateUser: authenticate.user });
  await app.register(jobsAdminRoutes, { auth: authDeps, prefix: '/api/v1' });
  const rbacDeps = { database, registry, access, clock };
  await app.register(rbacModule, { deps: rbacDeps, authenticate: authenticate.any });
  await app.register(orgsModule, {
    deps: { ...rbacDeps, config, log: app.log, mailer, auth: authDeps, events: domainEvents },
  });
  await app.register(apiKeysModule, {
    deps: {
      database,
      clock,
      registry,
      store: apiKeyStore,
      rotationGraceSeconds: config.orgs.apiKeyRotationGraceSeconds,
      events: domainEvents,
    },
  });
  await app.register(eventsModule, { events: domainEvents });
  await app.register(realtimeModule, {
    deps: {
      config: config.realtime,
      database,
      clock,
      log: app.log,
      hub: realtimeHub,
      authenticate: authenticate.any,
      revoked,
      apiKeys: apiKeyStore,
      access,
      registry,
      origins: allowedOrigins(config.corsOrigins, config.publicUrl),
      metrics: appMetrics.registry,
    },
  });
  await app.register(notificationsModule, {
    deps: { database, clock, log: app.log, realtime: realtimeHub },
    notifier,
  });
  // Every domain event reaches its organization's channel once committed (and relayed).
  domainEvents.onCommitted((event) => realtimeHub.publish(orgChannel(event.orgId), event));
  const webhookPolicy = addressPolicy(config.webhooks.allowedHosts);
  await app.register(webhooksModule, {
    deps: {
      database,
      clock,
      log: app.log,
      registry,
      jobs,
      events: domainEvents,
      mailer,
      config: config.webhooks,
      encryptionKey: config.encryptionKey,
      policy: webhookPolicy,
      sender: createWebhookSender({ policy: webhookPolicy, timeoutMs: config.webhooks.timeoutMs }),
    },
  });
  await app.register(auditLogModule, {
    deps: {
      database,
      registry,
      auth: authDeps,
      clock,
      log: app.log,
      jobs,
      archiveDir: config.privacy.auditArchiveDir,
      defaultRetentionDays: config.privacy.auditRetentionDays,
      sequenceIntervalMs: config.privacy.auditSequenceIntervalMs,
    },
  });
  await app.register(rateLimitUsageModule, { deps: rateLimitDeps });
  const consentPurposes = createConsentPurposeRegistry();
  await app.register(reportsModule, {
    deps: { database, clock, log: app.log, jobs, mailer, registry, access, purposes: consentPurposes },
  });
  // Embedded mode only: the nightly SQLite backup (on PostgreSQL nothing is declared).
  defineBackupJob({ database: config.database, backup: config.backup, jobs, clock, log: app.log });
  await app.register(privacyModule, {
    deps: {
      database,
      clock,
      log: app.log,
      purposes: consentPurposes,
      personalData,
      jobs,
      mailer,
      publicUrl: config.publicUrl,
      encryptionKey: config.encryptionKey,
      exportTtlSeconds: config.privacy.exportTtlSeconds,
      erasureGraceDays: config.privacy.erasureGraceDays,
      auth: authDeps,
      retention,
      retentionDays: config.privacy.retentionDays,
      notifications: notifier,
    },
  });
  await app.register(
    async (api) => {
      for (const module of options.modules ?? []) await api.register(module);
    },
    { prefix: '/api/v1' },
  );

  return app;
}

/**
 * Where rate-limit counts live in Redis: under the installation's id, so that its replicas share budgets and
 * another installation on the same Redis does not. Without Redis the counts are in memory and need no prefix; with
 * it, a replica that cannot tell which installation it belongs to (no migrations yet, the database down) must
 * not start counting under a name its siblings do not use.
 */
async function rateLimitKeyPrefix(database: DatabaseHandle, redis: Redis | undefined): Promise<string> {
  if (!redis) return 'plinth:rl';
  const installationId = await readInstallationId(database);
  if (!installationId) {
    throw new Error('cannot read the installation id from the database: run `plinth migrate` before serving');
  }
  return `plinth:${installationId}:rl`;
}

/** Fastify's types lack the hop-count form of `trustProxy`; a hop count trusts the nearest `n` proxies. */
function trustProxyOption(
  trustProxy: TrustProxy,
): boolean | string[] | ((address: string, hop: number) => boolean) {
  return typeof trustProxy === 'number' ? (_address, hop) => hop < trustProxy : trustProxy;
}

/**
 * Embedded mode's first start: with `PLINTH_ADMIN_EMAIL`/`PLINTH_ADMIN_PASSWORD` set and no operator yet, create
 * one. There are never default accounts; without these variables, `plinth create-admin` makes the first one.
 */
async function bootstrapAdmin(deps: AuthDeps): Promise<void> {
  const admin = deps.config.auth.bootstrapAdmin;
  if (!admin) return;
  const existing = await deps.db
    .selectFrom('users')
    .select('id')
    .where('platform_role', '=', 'superadmin')
    .executeTakeFirst();
  if (existing) return;
  const { id } = await createAdmin(deps, admin, systemCaller('bootstrap'));
  deps.log.info({ userId: id }, 'created the first superadmin from PLINTH_ADMIN_EMAIL');
}
