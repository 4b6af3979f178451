import { REALTIME_TICKET_PREFIX, type RealtimeTicket } from '@plinth/shared';
import type { Kysely } from 'kysely';
import type { Clock } from '../../core/clock.ts';
import { randomToken, sha256Hex } from '../../core/crypto.ts';
import { newId } from '../../core/ids.ts';
import type { Database } from '../../db/schema.ts';
import type { UserPrincipal } from '../auth/index.ts';
import { deleteExpiredTickets, insertTicket, takeTicket } from './ticket.repo.ts';

/**
 * Realtime tickets: a browser cannot send an `Authorization` header with a WebSocket handshake or an
 * EventSource request, and an access token in a URL would end up in proxies' logs and the browser's history
 * long after the page is gone. So the page asks, with its access token, for a ticket — 256 random bits, valid
 * for `REALTIME_TICKET_TTL_SECONDS` (30 s), usable once — and puts that in the URL instead. Only the ticket's
 * SHA-256 is stored (a slow hash adds nothing for 256 random bits), and the request log never writes query
 * strings.
 *
 * Tickets are issued to people only (an API key's program can send a header): a ticket stands for the session
 * it was issued in, and the connection it opens closes when that session's access token would have expired,
 * or at once when the session is revoked.
 */

/** Random bytes in a ticket: 256 bits. */
const TICKET_BYTES = 32;
/** The length of a ticket, prefix included: anything else is refused without a query. */
const TICKET_LENGTH = REALTIME_TICKET_PREFIX.length + Math.ceil((TICKET_BYTES * 4) / 3);

export interface TicketDeps {
  db: Kysely<Database>;
  clock: Clock;
  /** How long a ticket can be used, in seconds. */
  ttlSeconds: number;
}

/** A ticket for the caller's session, which was authenticated by an access token expiring at `tokenExpiresAt`. */
export async function issueTicket(
  deps: TicketDeps,
  principal: UserPrincipal,
  tokenExpiresAt: Date,
): Promise<RealtimeTicket> {
  const now = deps.clock.now();
  const ticket = `${REALTIME_TICKET_PREFIX}${randomToken(TICKET_BYTES)}`;
  // Never outlives the token it was issued with: a ticket is that token in another form.
  const expiresAt = new Date(Math.min(now.getTime() + deps.ttlSeconds * 1000, tokenExpiresAt.getTime()));
  await deleteExpiredTickets(deps.db, principal.userId, now.toISOString());
  await insertTicket(deps.db, {
    id: newId(),
    token_hash: sha256Hex(ticket),
    user_id: principal.userId,
    session_id: principal.sessionId,
    credential_expires_at: tokenExpiresAt.toISOString(),
    expires_at: expiresAt.toISOString(),
    created_at: now.toISOString(),
  });
  return { ticket, expiresAt: expiresAt.toISOString() };
}

/**
 * Spends a ticket: the person and session it stands for, and when its connection must close; undefined when
 * it is unknown, used already or expired. A ticket is spent even when it turns out to be expired.
 */
export async function redeemTicket(
  deps: Omit<TicketDeps, 'ttlSeconds'>,
  ticket: string,
): Promise<{ principal: UserPrincipal; credentialExpiresAt: number } | undefined> {
  if (ticket.length !== TICKET_LENGTH || !ticket.startsWith(REALTIME_TICKET_PREFIX)) return undefined;
  const row = await takeTicket(deps.db, sha256Hex(ticket));
  const now = deps.clock.now().getTime();
  if (!row || Date.parse(row.expires_at) <= now) return undefined;
  return {
    principal: { type: 'user', userId: row.user_id, sessionId: row.session_id },
    credentialExpiresAt: Date.parse(row.credential_expires_at),
  };
}
