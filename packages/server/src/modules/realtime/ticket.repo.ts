import type { Kysely, Selectable } from 'kysely';
import type { Database, RealtimeTicketsTable } from '../../db/schema.ts';

/** All SQL of realtime tickets. The table is not org-owned: a ticket belongs to a person's session. */

export type TicketRow = Selectable<RealtimeTicketsTable>;

export async function insertTicket(db: Kysely<Database>, row: TicketRow): Promise<void> {
  await db.insertInto('realtime_tickets').values(row).execute();
}

/** Removes the user's tickets that have expired unused (each sign-in page load makes one). */
export async function deleteExpiredTickets(db: Kysely<Database>, userId: string, now: string): Promise<void> {
  await db
    .deleteFrom('realtime_tickets')
    .where('user_id', '=', userId)
    .where('expires_at', '<=', now)
    .execute();
}

/**
 * Takes the ticket with this hash: deletes it and returns what it held, in one statement, so that of two uses at
 * once — on one replica or two — exactly one gets the row. An expired one is taken (and so removed) too; the
 * caller refuses it.
 */
export async function takeTicket(db: Kysely<Database>, tokenHash: string): Promise<TicketRow | undefined> {
  return db
    .deleteFrom('realtime_tickets')
    .where('token_hash', '=', tokenHash)
    .returningAll()
    .executeTakeFirst();
}
