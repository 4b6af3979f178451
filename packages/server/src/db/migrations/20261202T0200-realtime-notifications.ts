import type { Kysely } from 'kysely';
import { columnTypes } from '../column-types.ts';
import type { Migration } from '../migrate.ts';

/**
 * Realtime tickets and in-app notifications.
 *
 * `realtime_tickets` (modules/realtime): short-lived, single-use credentials for browsers, which cannot set an
 * `Authorization` header on a WebSocket or an EventSource. Only the SHA-256 of a ticket is stored; using one
 * deletes its row in the same statement that finds it, so it works once across every replica. Each remembers
 * the session it was issued for and when that session's access token expires, which is when the connection it
 * opens is closed.
 *
 * `notifications` (modules/notifications): a user's own in-app messages. They belong to a person, not to an
 * organization (a notification can be about an account, or reach someone in several organizations), so they
 * are not org-owned and carry no row-level security policy; every query is by `user_id`.
 */
export const realtimeNotifications: Migration = {
  async up(db: Kysely<unknown>, dialect) {
    const t = columnTypes(dialect);
    await db.schema
      .createTable('realtime_tickets')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('token_hash', t.text, (c) => c.notNull().unique())
      .addColumn('user_id', t.id, (c) => c.notNull().references('users.id').onDelete('cascade'))
      .addColumn('session_id', t.id, (c) => c.notNull().references('sessions.id').onDelete('cascade'))
      .addColumn('credential_expires_at', t.timestamp, (c) => c.notNull())
      .addColumn('expires_at', t.timestamp, (c) => c.notNull())
      .addColumn('created_at', t.timestamp, (c) => c.notNull())
      .execute();
    await db.schema
      .createIndex('realtime_tickets_expiry')
      .on('realtime_tickets')
      .column('expires_at')
      .execute();

    await db.schema
      .createTable('notifications')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('user_id', t.id, (c) => c.notNull().references('users.id').onDelete('cascade'))
      .addColumn('type', t.text, (c) => c.notNull())
      .addColumn('title', 'text', (c) => c.notNull())
      .addColumn('body', 'text')
      .addColumn('data', 'text')
      .addColumn('read_at', t.timestamp)
      .addColumn('created_at', t.timestamp, (c) => c.notNull())
      .execute();
    // The list (newest first, keyset on created_at and id) and the unread filter and count.
    await db.schema
      .createIndex('notifications_user_created')
      .on('notifications')
      .columns(['user_id', 'created_at', 'id'])
      .execute();
    await db.schema
      .createIndex('notifications_user_read')
      .on('notifications')
      .columns(['user_id', 'read_at'])
      .execute();
    // Retention deletes by age.
    await db.schema.createIndex('notifications_read_at').on('notifications').column('read_at').execute();
    await db.schema
      .createIndex('notifications_created_at')
      .on('notifications')
      .column('created_at')
      .execute();
  },
};
