import { z } from 'zod';
import { defineErrors } from './errors.ts';
import { Page } from './pagination.ts';

/** In-app notifications (`/api/v1/me/notifications`): a user's own messages from the platform and its modules. */

export const notificationErrors = defineErrors({
  /** No notification with this id belongs to the caller. */
  NOTIFICATION_NOT_FOUND: { status: 404, title: 'No such notification.' },
});

export const Notification = z
  .object({
    id: z.uuid(),
    type: z
      .string()
      .meta({ description: 'What it is about, `module.event`.', example: 'privacy.export_ready' }),
    title: z.string(),
    body: z.string().nullable(),
    data: z
      .record(z.string(), z.unknown())
      .nullable()
      .meta({ description: 'Machine-readable details (ids to follow), never a secret.' }),
    readAt: z.string().nullable().meta({ description: 'When it was marked read; null while unread.' }),
    createdAt: z.string(),
  })
  .meta({ id: 'Notification' });
export type Notification = z.infer<typeof Notification>;

export const NotificationPage = Page(Notification)
  .extend({
    unreadCount: z.number().int().meta({ description: "How many of the caller's notifications are unread." }),
  })
  .meta({ id: 'NotificationPage' });
export type NotificationPage = z.infer<typeof NotificationPage>;

export const UpdateNotificationBody = z
  .strictObject({ read: z.boolean().meta({ description: 'true marks it read; false unread again.' }) })
  .meta({ id: 'UpdateNotificationBody' });

export const MarkNotificationsBody = z
  .strictObject({
    read: z.literal(true).meta({ description: 'Marks every unread notification read.' }),
    before: z.iso.datetime({ offset: true }).optional().meta({
      description:
        'Only those created at or before this time (e.g. the newest one the client has shown), so that one that arrived meanwhile stays unread.',
    }),
  })
  .meta({ id: 'MarkNotificationsBody' });

export const MarkNotificationsResult = z
  .object({ updated: z.number().int().meta({ description: 'How many were marked read.' }) })
  .meta({ id: 'MarkNotificationsResult' });
