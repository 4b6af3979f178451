import type { FastifyRequest } from 'fastify';
import type { Transaction } from 'kysely';
import type { Database } from '../../db/schema.ts';
import {
  type AuditActorRef,
  type AuditEventInput,
  accountChain,
  PLATFORM_CHAIN,
  withAuditedTransaction,
} from '../audit/record.ts';
import { userOf } from './authenticate.ts';
import type { AuthDeps, ClientInfo } from './deps.ts';

/**
 * Who changes an account, and from where: the audit trail of identity. Every change to an account, a session or a
 * sign-in counter runs through {@link auditAccount}, which appends its events to the account's own chain (or the
 * installation's, when no account is involved) in the transaction that makes the change.
 */
export interface AccountCaller {
  actor: AuditActorRef;
  /** The request, if the change comes from one (a CLI command or a scheduled task has none). */
  client: ClientInfo | null;
}

/** Where a request comes from: its address (as `TRUST_PROXY` decides), user agent and id. */
export function clientOf(request: FastifyRequest): ClientInfo {
  const userAgent = request.headers['user-agent'];
  return {
    ip: request.ip,
    userAgent: typeof userAgent === 'string' ? userAgent : undefined,
    requestId: request.id,
  };
}

/** The signed-in person acting on their own account, from an authenticated request. */
export function callerOf(request: FastifyRequest): AccountCaller {
  const principal = userOf(request);
  return selfCaller(principal.userId, clientOf(request), principal.sessionId);
}

/** A person acting on their own account, in the session they signed in with (none while signing in). */
export function selfCaller(userId: string, client: ClientInfo | null, sessionId?: string): AccountCaller {
  return { actor: { type: 'user', id: userId, via: sessionId }, client };
}

/** Someone not (yet) known to be anybody: a sign-in attempt for an address with no account. */
export function anonymousCaller(client: ClientInfo): AccountCaller {
  return { actor: { type: 'user', id: 'anonymous' }, client };
}

/** The platform itself: a CLI command, the embedded-mode bootstrap, a scheduled task. */
export function systemCaller(component: string): AccountCaller {
  return { actor: { type: 'system', id: component }, client: null };
}

/** Records events on an account's chain; what {@link auditAccount} hands its work. */
export type RecordAccountEvent = (event: AuditEventInput) => Promise<void>;

/**
 * Runs `work` in one transaction with the events it records: on the chain of `accountId`, or the installation's
 * chain when it is null. The change and its events commit together or not at all.
 */
export function auditAccount<T>(
  deps: Pick<AuthDeps, 'database' | 'clock'>,
  accountId: string | null,
  caller: AccountCaller,
  work: (db: Transaction<Database>, record: RecordAccountEvent) => Promise<T>,
): Promise<T> {
  const client = caller.client;
  return withAuditedTransaction(
    deps.database,
    {
      orgId: accountId === null ? PLATFORM_CHAIN : accountChain(accountId),
      actor: caller.actor,
      requestId: client?.requestId ?? null,
      ip: client?.ip ?? null,
      // Attacker-chosen text: bounded, as on sessions, so one request cannot bloat the log.
      userAgent: client?.userAgent?.slice(0, 512) ?? null,
      clock: deps.clock,
    },
    work,
  );
}
