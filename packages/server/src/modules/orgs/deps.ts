import type { FastifyBaseLogger } from 'fastify';
import type { Config } from '../../config.ts';
import type { Clock } from '../../core/clock.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import type { AuthDeps } from '../auth/index.ts';
import type { DomainEvents } from '../events/index.ts';
import type { Mailer } from '../mail/index.ts';
import type { AccessRegistry, AccessResolver } from '../rbac/index.ts';

/** What the organization services need, built once in the composition root. */
export interface OrgDeps {
  database: DatabaseHandle;
  config: Config;
  clock: Clock;
  log: FastifyBaseLogger;
  mailer: Mailer;
  registry: AccessRegistry;
  access: AccessResolver;
  /** For invitations: finding and creating accounts. */
  auth: AuthDeps;
  /** The domain event outbox: `member.*`, `invitation.created` and `org.updated` are published here. */
  events: DomainEvents;
}
