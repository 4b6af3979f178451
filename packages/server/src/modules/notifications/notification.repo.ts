import type { Kysely, Selectable } from 'kysely';
import type { Database, NotificationsTable } from '../../db/schema.ts';

/**
 * All SQL of notifications. The table belongs to people, not organizations: every query names the user, and
 * the service only ever passes the caller's own id, so another person's notification is never loaded.
 */

export type NotificationRow = Selectable<NotificationsTable>;

export async function insertNotification(db: Kysely<Database>, row: NotificationRow): Promise<void> {
  await db.insertInto('notifications').values(row).execute();
}

/** The user's notifications as a query the list paginates; `unread` keeps only the unread (or only the read). */
export function notificationsOf(db: Kysely<Database>, userId: string, unread: boolean | undefined) {
  let query = db.selectFrom('notifications').selectAll().where('user_id', '=', userId);
  if (unread === true) query = query.where('read_at', 'is', null);
  if (unread === false) query = query.where('read_at', 'is not', null);
  return query;
}

export async function countUnread(db: Kysely<Database>, userId: string): Promise<number> {
  const row = await db
    .selectFrom('notifications')
    .select((eb) => eb.fn.countAll<number>().as('count'))
    .where('user_id', '=', userId)
    .where('read_at', 'is', null)
    .executeTakeFirstOrThrow();
  return Number(row.count);
}

/** Whether the notification exists (committed), whoever's it is: the live push waits for this. */
export async function notificationExists(db: Kysely<Database>, id: string): Promise<boolean> {
  return (
    (await db.selectFrom('notifications').select('id').where('id', '=', id).executeTakeFirst()) !== undefined
  );
}

/**
 * Marks one of the user's notifications read (keeping the first time it was read) or unread; the row as it is
 * now, or undefined when the user has no such notification.
 */
export async function setRead(
  db: Kysely<Database>,
  userId: string,
  id: string,
  readAt: string | null,
): Promise<NotificationRow | undefined> {
  return db
    .updateTable('notifications')
    .set((eb) => ({
      read_at: readAt === null ? null : eb.fn.coalesce('read_at', eb.val(readAt)),
    }))
    .where('id', '=', id)
    .where('user_id', '=', userId)
    .returningAll()
    .executeTakeFirst();
}

/** Marks every unread notification of the user read (those created at or before `before`, when given). */
export async function markAllRead(
  db: Kysely<Database>,
  userId: string,
  readAt: string,
  before: string | undefined,
): Promise<number> {
  let query = db
    .updateTable('notifications')
    .set({ read_at: readAt })
    .where('user_id', '=', userId)
    .where('read_at', 'is', null);
  if (before !== undefined) query = query.where('created_at', '<=', before);
  const result = await query.executeTakeFirst();
  return Number(result.numUpdatedRows);
}

/** Every notification of the user, oldest first, for the data export. */
export async function allNotificationsOf(db: Kysely<Database>, userId: string): Promise<NotificationRow[]> {
  return db
    .selectFrom('notifications')
    .selectAll()
    .where('user_id', '=', userId)
    .orderBy('created_at')
    .orderBy('id')
    .execute();
}
