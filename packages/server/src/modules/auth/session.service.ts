import { authErrors } from '@plinth/shared';
import type { Kysely, Transaction } from 'kysely';
import { decryptSecret, encryptSecret, randomToken, sha256Hex } from '../../core/crypto.ts';
import { AppError } from '../../core/errors.ts';
import { newId } from '../../core/ids.ts';
import type { Database } from '../../db/schema.ts';
import { auditAccount, selfCaller, systemCaller } from './account-audit.ts';
import type { AuthDeps, ClientInfo } from './deps.ts';

/** What a successful sign-in or refresh returns (the body of `POST /auth/login` and `/auth/refresh`). */
export interface TokenPair {
  accessToken: string;
  refreshToken: string;
  tokenType: 'Bearer';
  /** Lifetime of the access token, in seconds. */
  expiresIn: number;
}

export interface SessionView {
  id: string;
  userAgent: string | null;
  ip: string | null;
  createdAt: string;
  lastUsedAt: string;
  current: boolean;
}

const addSeconds = (date: Date, seconds: number) => new Date(date.getTime() + seconds * 1000).toISOString();

async function issuePair(
  deps: AuthDeps,
  trx: Transaction<Database>,
  session: { id: string; userId: string; expiresAt: string },
  now: Date,
): Promise<TokenPair> {
  const refreshToken = randomToken(32);
  const slidingEnd = addSeconds(now, deps.config.auth.refreshTokenTtlSeconds);
  await trx
    .insertInto('refresh_tokens')
    .values({
      id: newId(),
      session_id: session.id,
      token_hash: sha256Hex(refreshToken),
      created_at: now.toISOString(),
      // A refresh token never outlives its family's absolute end.
      expires_at: slidingEnd < session.expiresAt ? slidingEnd : session.expiresAt,
      spent_at: null,
      successor: null,
    })
    .execute();
  const access = await deps.tokens.signAccessToken({ userId: session.userId, sessionId: session.id }, now);
  return { accessToken: access.token, refreshToken, tokenType: 'Bearer', expiresIn: access.expiresIn };
}

/**
 * Starts a new session (a new refresh family) for a user who has just proved who they are, recording the
 * sign-in (`user.signed_in`, the session as its target) on the account's chain.
 */
export async function startSession(deps: AuthDeps, userId: string, client: ClientInfo): Promise<TokenPair> {
  const now = deps.clock.now();
  const session = {
    id: newId(),
    userId,
    expiresAt: addSeconds(now, deps.config.auth.sessionMaxLifetimeSeconds),
  };
  return auditAccount(deps, userId, selfCaller(userId, client, session.id), async (trx, record) => {
    await trx
      .insertInto('sessions')
      .values({
        id: session.id,
        user_id: userId,
        user_agent: client.userAgent?.slice(0, 512) ?? null,
        ip: client.ip,
        created_at: now.toISOString(),
        last_used_at: now.toISOString(),
        expires_at: session.expiresAt,
        revoked_at: null,
        revoked_reason: null,
      })
      .execute();
    const pair = await issuePair(deps, trx, session, now);
    await record({ action: 'user.signed_in', target: { type: 'session', id: session.id } });
    // Signing in during an erasure's grace period is how its owner calls it off.
    const cancelled = await trx
      .updateTable('users')
      .set({ erasure_scheduled_for: null })
      .where('id', '=', userId)
      .where('erasure_scheduled_for', 'is not', null)
      .executeTakeFirst();
    if (Number(cancelled.numUpdatedRows) > 0) {
      await record({ action: 'user.erasure_cancelled', target: { type: 'user', id: userId } });
    }
    return pair;
  });
}

/**
 * Exchanges a refresh token for a new pair (rotation). The old token is spent; presenting a spent token again
 * revokes the whole family, since either the client or a thief holds a copy — except within the grace window
 * after it was spent, where a concurrent refresh by the same client (two tabs, a retry) gets the very same new
 * pair instead of signing the user out.
 */
export async function refreshSession(deps: AuthDeps, refreshToken: string): Promise<TokenPair> {
  const now = deps.clock.now();
  const nowIso = now.toISOString();
  const tokenHash = sha256Hex(refreshToken);
  const key = deps.config.encryptionKey;

  const outcome = await deps.db
    .transaction()
    .execute(async (trx) => {
      const row = await trx
        .selectFrom('refresh_tokens')
        .innerJoin('sessions', 'sessions.id', 'refresh_tokens.session_id')
        .innerJoin('users', 'users.id', 'sessions.user_id')
        .select([
          'refresh_tokens.id as tokenId',
          'refresh_tokens.expires_at as tokenExpiresAt',
          'refresh_tokens.spent_at as spentAt',
          'refresh_tokens.successor as successor',
          'sessions.id as sessionId',
          'sessions.user_id as userId',
          'sessions.expires_at as sessionExpiresAt',
          'sessions.revoked_at as revokedAt',
          'users.disabled_at as disabledAt',
        ])
        .where('refresh_tokens.token_hash', '=', tokenHash)
        .executeTakeFirst();
      if (!row || row.revokedAt || row.disabledAt || row.sessionExpiresAt <= nowIso)
        return { kind: 'invalid' as const };

      const session = { id: row.sessionId, userId: row.userId, expiresAt: row.sessionExpiresAt };
      const fromGrace = () => {
        const graceEnd = addSeconds(
          new Date(row.spentAt ?? nowIso),
          deps.config.auth.refreshReuseGraceSeconds,
        );
        if (row.successor && nowIso <= graceEnd) {
          return {
            kind: 'pair' as const,
            pair: JSON.parse(decryptSecret(key, row.successor, row.tokenId)) as TokenPair,
          };
        }
        return { kind: 'reuse' as const, sessionId: row.sessionId, userId: row.userId };
      };
      if (row.spentAt) return fromGrace();
      if (row.tokenExpiresAt <= nowIso) return { kind: 'invalid' as const };

      const pair = await issuePair(deps, trx, session, now);
      // Spend the token only if nobody else did meanwhile; the loser of a race reads the winner's successor.
      const spent = await trx
        .updateTable('refresh_tokens')
        .set({ spent_at: nowIso, successor: encryptSecret(key, JSON.stringify(pair), row.tokenId) })
        .where('id', '=', row.tokenId)
        .where('spent_at', 'is', null)
        .executeTakeFirst();
      if (Number(spent.numUpdatedRows) === 0) {
        throw new ConcurrentRefresh();
      }
      await trx
        .updateTable('sessions')
        .set({ last_used_at: nowIso })
        .where('id', '=', row.sessionId)
        .execute();
      return { kind: 'pair' as const, pair };
    })
    .catch(async (error: unknown) => {
      if (error instanceof ConcurrentRefresh)
        return refreshSession(deps, refreshToken).then((pair) => ({ kind: 'pair' as const, pair }));
      throw error;
    });

  if (outcome.kind === 'pair') return outcome.pair;
  if (outcome.kind === 'reuse') {
    const { sessionId, userId } = outcome;
    await auditAccount(deps, userId, systemCaller('auth'), async (trx, record) => {
      await revokeSessions(deps, trx, [sessionId], 'refresh_token_reuse');
      await record({
        action: 'session.revoked',
        target: { type: 'session', id: sessionId },
        outcome: 'denied',
      });
    });
    deps.log.warn({ sessionId: outcome.sessionId }, 'refresh token reused after rotation: session revoked');
  }
  throw new AppError(authErrors.INVALID_REFRESH_TOKEN);
}

/** Raised inside the refresh transaction when another request spent the same token first; the refresh is retried. */
class ConcurrentRefresh extends Error {}

/**
 * Ends sessions at once, in `db` (the caller's audited transaction): their refresh tokens stop working and their
 * access tokens are refused on next use. The in-memory revocation list learns of them before the transaction
 * commits; should it then roll back, a session is refused a little early, never accepted late.
 */
export async function revokeSessions(
  deps: AuthDeps,
  db: Kysely<Database>,
  sessionIds: readonly string[],
  reason: string,
): Promise<void> {
  if (sessionIds.length === 0) return;
  await db
    .updateTable('sessions')
    .set({ revoked_at: deps.clock.now().toISOString(), revoked_reason: reason })
    .where('id', 'in', sessionIds)
    .where('revoked_at', 'is', null)
    .execute();
  await deps.revoked.add(sessionIds);
}

/**
 * Ends every live session of a user, optionally keeping one (the caller's own, after a password change), in `db`.
 * Returns how many ended.
 */
export async function revokeUserSessions(
  deps: AuthDeps,
  db: Kysely<Database>,
  userId: string,
  reason: string,
  keep?: string,
): Promise<number> {
  let query = db
    .selectFrom('sessions')
    .select('id')
    .where('user_id', '=', userId)
    .where('revoked_at', 'is', null);
  if (keep) query = query.where('id', '!=', keep);
  const ids = (await query.execute()).map((r) => r.id);
  await revokeSessions(deps, db, ids, reason);
  return ids.length;
}

/** Signs out of the caller's session (`session.revoked`). */
export function logout(deps: AuthDeps, caller: { userId: string; sessionId: string }, client: ClientInfo) {
  return auditAccount(
    deps,
    caller.userId,
    selfCaller(caller.userId, client, caller.sessionId),
    async (trx, record) => {
      await revokeSessions(deps, trx, [caller.sessionId], 'logout');
      await record({ action: 'session.revoked', target: { type: 'session', id: caller.sessionId } });
    },
  );
}

/** Ends every session of the caller's account, this one included (`user.sessions_revoked`). */
export function logoutEverywhere(
  deps: AuthDeps,
  caller: { userId: string; sessionId: string },
  client: ClientInfo,
) {
  return auditAccount(
    deps,
    caller.userId,
    selfCaller(caller.userId, client, caller.sessionId),
    async (trx, record) => {
      await revokeUserSessions(deps, trx, caller.userId, 'logout_all');
      await record({ action: 'user.sessions_revoked', target: { type: 'user', id: caller.userId } });
    },
  );
}

/** The user's live sessions, newest first, marking the caller's own. */
export async function listSessions(
  deps: AuthDeps,
  userId: string,
  currentSessionId: string,
): Promise<SessionView[]> {
  const now = deps.clock.now().toISOString();
  const rows = await deps.db
    .selectFrom('sessions')
    .select(['id', 'user_agent', 'ip', 'created_at', 'last_used_at'])
    .where('user_id', '=', userId)
    .where('revoked_at', 'is', null)
    .where('expires_at', '>', now)
    // Alive only while its current refresh token is: a session unused past the sliding window has ended.
    .where((eb) =>
      eb.exists(
        eb
          .selectFrom('refresh_tokens')
          .select('refresh_tokens.id')
          .whereRef('refresh_tokens.session_id', '=', 'sessions.id')
          .where('refresh_tokens.spent_at', 'is', null)
          .where('refresh_tokens.expires_at', '>', now),
      ),
    )
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .execute();
  return rows.map((r) => ({
    id: r.id,
    userAgent: r.user_agent,
    ip: r.ip,
    createdAt: r.created_at,
    lastUsedAt: r.last_used_at,
    current: r.id === currentSessionId,
  }));
}

/** Ends one of the user's own sessions (`session.revoked`); another user's session id is "not found". */
export async function revokeOwnSession(
  deps: AuthDeps,
  caller: { userId: string; sessionId: string },
  sessionId: string,
  client: ClientInfo,
): Promise<void> {
  const row = await deps.db
    .selectFrom('sessions')
    .select('id')
    .where('id', '=', sessionId)
    .where('user_id', '=', caller.userId)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  if (!row) throw new AppError(authErrors.SESSION_NOT_FOUND);
  await auditAccount(
    deps,
    caller.userId,
    selfCaller(caller.userId, client, caller.sessionId),
    async (trx, record) => {
      await revokeSessions(deps, trx, [sessionId], 'user_revoked');
      await record({ action: 'session.revoked', target: { type: 'session', id: sessionId } });
    },
  );
}
