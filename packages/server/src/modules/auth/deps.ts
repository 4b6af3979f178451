import type { FastifyBaseLogger } from 'fastify';
import type { Kysely } from 'kysely';
import type { Config } from '../../config.ts';
import type { Clock } from '../../core/clock.ts';
import type { Database } from '../../db/schema.ts';
import type { Mailer } from '../mail/index.ts';
import type { RevokedSessions } from './revocation.ts';
import type { TokenService } from './tokens.ts';

/** What the identity services need, built once in the composition root and passed in (no container). */
export interface AuthDeps {
  db: Kysely<Database>;
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
}

/** Email addresses compare equal when their NFKC forms, trimmed and lower-cased, are equal. */
export function normalizeEmail(email: string): string {
  return email.normalize('NFKC').trim().toLowerCase();
}
