import type { FastifyBaseLogger } from 'fastify';
import type { Registry } from 'prom-client';
import type { RealtimeConfig } from '../../config.ts';
import type { Clock } from '../../core/clock.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import type { ApiKeyStore } from '../apikeys/index.ts';
import type { Authenticate, RevokedSessions } from '../auth/index.ts';
import type { AccessRegistry, AccessResolver } from '../rbac/index.ts';
import type { RealtimeHub } from './hub.ts';

/** What the realtime module needs, built once in the composition root. */
export interface RealtimeDeps {
  config: RealtimeConfig;
  database: DatabaseHandle;
  clock: Clock;
  log: FastifyBaseLogger;
  /** The fan-out (hub.ts), created in the composition root because other modules publish through it too. */
  hub: RealtimeHub;
  /** The platform's authenticator that accepts access tokens and API keys. */
  authenticate: Authenticate;
  revoked: RevokedSessions;
  apiKeys: Pick<ApiKeyStore, 'verify' | 'onKeyChanged'>;
  access: AccessResolver;
  registry: AccessRegistry;
  /** The origins browser pages may connect from (`allowedOrigins`). */
  origins: ReadonlySet<string>;
  /** The app's metrics registry. */
  metrics?: Registry;
}
