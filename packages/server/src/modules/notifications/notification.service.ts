import { type Notification, notificationErrors } from '@plinth/shared';
import type { FastifyBaseLogger } from 'fastify';
import type { Kysely } from 'kysely';
import { z } from 'zod';
import type { Clock } from '../../core/clock.ts';
import { AppError } from '../../core/errors.ts';
import { newId } from '../../core/ids.ts';
import { type ListSpec, paginate } from '../../core/pagination.ts';
import type { PersonalDataSource } from '../../core/personal-data.ts';
import { purgeAfter, type RetentionPolicy } from '../../core/retention.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import type { Database } from '../../db/schema.ts';
import { type RealtimePublisher, userChannel } from '../realtime/index.ts';
import {
  allNotificationsOf,
  countUnread,
  insertNotification,
  markAllRead,
  type NotificationRow,
  notificationExists,
  notificationsOf,
  setRead,
} from './notification.repo.ts';

/**
 * In-app notifications: a person's own messages from the platform and its modules ("your export is ready").
 * A module creates one with `app.notifications.create(db, { userId, type, title, body?, data? })`, in the
 * transaction of the change it is about when there is one; it is pushed live on `user:<userId>` as
 * `notification.created` once that transaction has committed, and listed by `GET /me/notifications`.
 */

/** What a module gives to create a notification. */
export const NewNotification = z.strictObject({
  userId: z.uuid(),
  /** `module.event`, lower case, e.g. `privacy.export_ready`: clients choose an icon or a link by it. */
  type: z
    .string()
    .regex(/^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$/)
    .max(100),
  title: z.string().min(1).max(200),
  body: z.string().max(2000).nullish(),
  /** Ids to follow and the like; never a secret (it is stored, listed, exported and pushed). */
  data: z
    .record(z.string(), z.unknown())
    .nullish()
    .refine((d) => d == null || JSON.stringify(d).length <= MAX_DATA_CHARS, {
      error: 'notification data is limited to 16 KiB',
    }),
});
export type NewNotification = z.input<typeof NewNotification>;

const MAX_DATA_CHARS = 16 * 1024;

/** `app.notifications`. */
export interface Notifier {
  /**
   * Creates a notification in `db` — the caller's transaction, or the plain builder — and pushes it on
   * `user:<userId>` once it is committed (a notification whose transaction rolls back is never pushed).
   * Throws for input that breaks the rules above: that is a bug in the calling module.
   */
  create(db: Kysely<Database>, input: NewNotification): Promise<Notification>;
  /** Stops waiting for pending pushes (the app is closing). */
  close(): void;
}

export interface NotificationDeps {
  database: Pick<DatabaseHandle, 'db'>;
  clock: Clock;
  log: FastifyBaseLogger;
  realtime: RealtimePublisher;
}

/**
 * When a notification is created inside a transaction, the push must wait for the commit, which Kysely does
 * not announce. So it waits for the row to be visible outside the transaction — which is what committed means —
 * looking again after each of these delays (ms). On SQLite the first look queues behind the transaction on the
 * one connection and answers right after the commit; on PostgreSQL it takes the next look after the commit.
 * After about 16 s the push is given up (the notification is still there, listed); a rolled-back one is never
 * found, so never pushed.
 */
const COMMIT_PROBE_DELAYS_MS = [0, 5, 10, 20, 40, 80, 160, 320, 640, 1280, 2500, 5000, 6000];

export function toNotification(row: NotificationRow): Notification {
  return {
    id: row.id,
    type: row.type,
    title: row.title,
    body: row.body,
    data: row.data === null ? null : (JSON.parse(row.data) as Record<string, unknown>),
    readAt: row.read_at,
    createdAt: row.created_at,
  };
}

export function createNotifier(deps: NotificationDeps): Notifier {
  let closed = false;
  const push = (notification: Notification, userId: string) =>
    deps.realtime
      .publish(userChannel(userId), {
        type: 'notification.created',
        id: notification.id,
        occurredAt: notification.createdAt,
        data: notification,
      })
      .catch((err: unknown) => deps.log.warn({ err }, 'cannot push a notification'));

  const pushWhenCommitted = async (notification: Notification, userId: string) => {
    for (const delay of COMMIT_PROBE_DELAYS_MS) {
      if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay).unref());
      if (closed) return;
      try {
        if (await notificationExists(deps.database.db, notification.id)) {
          await push(notification, userId);
          return;
        }
      } catch (err) {
        if (closed) return;
        deps.log.warn({ err }, 'cannot look for a notification to push');
      }
    }
    deps.log.debug({ notificationId: notification.id }, 'notification not committed in time: not pushed');
  };

  return {
    async create(db, input) {
      const { userId, type, title, body, data } = NewNotification.parse(input);
      const row: NotificationRow = {
        id: newId(),
        user_id: userId,
        type,
        title,
        body: body ?? null,
        data: data == null ? null : JSON.stringify(data),
        read_at: null,
        created_at: deps.clock.now().toISOString(),
      };
      await insertNotification(db, row);
      const notification = toNotification(row);
      if (db.isTransaction) void pushWhenCommitted(notification, userId);
      else await push(notification, userId);
      return notification;
    },
    close() {
      closed = true;
    },
  };
}

export const notificationListSpec = {
  sort: { createdAt: 'created_at' },
  defaultSort: '-createdAt',
  filters: {
    unread: z
      .enum(['true', 'false'])
      .meta({ description: '`true`: only unread notifications; `false`: only read ones.' }),
  },
} satisfies ListSpec<'createdAt', { unread: z.ZodEnum<{ true: 'true'; false: 'false' }> }>;

/** A page of the caller's notifications, newest first by default, with how many are unread in all. */
export async function listNotifications(
  deps: Pick<NotificationDeps, 'database'>,
  userId: string,
  query: { limit: number; cursor?: string | undefined; sort: string; unread?: 'true' | 'false' | undefined },
) {
  const db = deps.database.db;
  const unread = query.unread === undefined ? undefined : query.unread === 'true';
  const { unread: _filter, ...page } = query;
  const { data, nextCursor } = await paginate(notificationsOf(db, userId, unread), page, {
    ...notificationListSpec,
    filterColumns: {},
  } as ListSpec<string, z.ZodRawShape>);
  return { data: data.map(toNotification), nextCursor, unreadCount: await countUnread(db, userId) };
}

/** Marks one of the caller's notifications read or unread, and tells the caller's other tabs. */
export async function updateNotification(
  deps: NotificationDeps,
  userId: string,
  id: string,
  read: boolean,
): Promise<Notification> {
  const row = await setRead(deps.database.db, userId, id, read ? deps.clock.now().toISOString() : null);
  if (!row) throw new AppError(notificationErrors.NOTIFICATION_NOT_FOUND);
  const notification = toNotification(row);
  await deps.realtime
    .publish(userChannel(userId), {
      type: 'notification.updated',
      data: { id: notification.id, readAt: notification.readAt },
    })
    .catch((err: unknown) => deps.log.warn({ err }, 'cannot push a notification change'));
  return notification;
}

/** Marks all the caller's unread notifications (created at or before `before`) read. */
export async function markNotificationsRead(
  deps: NotificationDeps,
  userId: string,
  before: string | undefined,
): Promise<{ updated: number }> {
  const now = deps.clock.now().toISOString();
  const cutoff = before === undefined ? undefined : new Date(before).toISOString();
  const updated = await markAllRead(deps.database.db, userId, now, cutoff);
  if (updated > 0) {
    await deps.realtime
      .publish(userChannel(userId), {
        type: 'notification.read_all',
        data: { readAt: now, before: cutoff ?? null, updated },
      })
      .catch((err: unknown) => deps.log.warn({ err }, 'cannot push a notification change'));
  }
  return { updated };
}

/** The `notifications` section of a data export: every notification, oldest first, as the API shows them. */
export const notificationPersonalData: PersonalDataSource = {
  name: 'notifications',
  export: async (db, userId) => (await allNotificationsOf(db, userId)).map(toNotification),
  // Nothing to erase: the rows go with the account (on delete cascade).
};

/** How long notifications are kept: a read one 90 days after it was read, any one a year after it was made. */
export const notificationRetention: RetentionPolicy[] = [
  {
    name: 'notifications_read',
    description: 'notifications, 90 days after they were read',
    days: 90,
    apply: purgeAfter({ table: 'notifications', after: ['read_at'] }),
  },
  {
    name: 'notifications',
    description: 'every notification, read or not, a year after it was created',
    days: 365,
    apply: purgeAfter({ table: 'notifications', after: ['created_at'] }),
  },
];
