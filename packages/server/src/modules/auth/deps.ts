import type { FastifyBaseLogger } from 'fastify';
import type { Kysely } from 'kysely';
import type { Config } from '../../config.ts';
import type { Clock } from '../../core/clock.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import type { Database } from '../../db/schema.ts';
import type { Mailer } from '../mail/index.ts';
import type { RevokedSessions } from './revocation.ts';
import type { TokenService } from './tokens.ts';

/** What the identity services need, built once in the composition root and passed in (no container). */
export interface AuthDeps {
  db: Kysely<Database>;
  /** For changes that are audited: their transaction is the audit chain's (see account-audit.ts). */
  database: Pick<DatabaseHandle, 'withTenant'>;
  config: Config;
  clock: Clock;
  log: FastifyBaseLogger;
  mailer: Mailer;
  tokens: TokenService;
  revoked: RevokedSessions;
}

/** Where a request comes from, as recorded on sessions and used for throttling. */
export interface ClientInfo {
  ip: string;
  userAgent: string | undefined;
  /** The request's id, recorded with the audit events it causes. */
  requestId: string | null;
}

/** Email addresses compare equal when their NFKC forms, trimmed and lower-cased, are equal. */
export function normalizeEmail(email: string): string {
  return email.normalize('NFKC').trim().toLowerCase();
}
