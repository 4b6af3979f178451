import {
  MarkNotificationsBody,
  MarkNotificationsResult,
  Notification,
  NotificationPage,
  UpdateNotificationBody,
} from '@plinth/shared';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { idParam } from '../../core/ids.ts';
import { listQuerySchema } from '../../core/pagination.ts';
import { jsonResponse, problemResponses } from '../../core/responses.ts';
import { userOf } from '../auth/index.ts';
import {
  listNotifications,
  markNotificationsRead,
  type NotificationDeps,
  notificationListSpec,
  updateNotification,
} from './notification.service.ts';

const meRoute = { tags: ['Notifications'], security: [{ bearerAuth: [] }] };
const NotificationParams = z.object({ notificationId: idParam('Not a notification id.') });
const NotificationListQuery = listQuerySchema(notificationListSpec);

/**
 * The caller's own notifications: `GET /api/v1/me/notifications`, `PATCH /api/v1/me/notifications/{id}` and
 * `PATCH /api/v1/me/notifications` (mark all read). People only: an API key acts for an organization, and a
 * notification belongs to a person. Another person's notification is "not found".
 */
export const notificationRoutes: FastifyPluginAsyncZod<{ deps: NotificationDeps }> = async (
  app,
  { deps },
) => {
  app.addHook('onRequest', app.authenticate);

  app.get(
    '/me/notifications',
    {
      schema: {
        ...meRoute,
        summary: 'My notifications',
        description:
          'Newest first by default; `unread=true` lists only the unread ones. `unreadCount` counts every unread notification, whatever the page. New ones are also pushed live on the `user:<userId>` realtime channel.',
        operationId: 'listMyNotifications',
        querystring: NotificationListQuery,
        response: {
          200: jsonResponse(NotificationPage, 'A page of notifications.'),
          ...problemResponses(400, 401, 403),
        },
      },
    },
    async (request) => listNotifications(deps, userOf(request).userId, request.query),
  );

  app.patch(
    '/me/notifications',
    {
      schema: {
        ...meRoute,
        summary: 'Mark all my notifications read',
        description:
          'Marks every unread notification read — or only those created at or before `before`, so that one that arrived after the client last looked stays unread.',
        operationId: 'markMyNotificationsRead',
        body: MarkNotificationsBody,
        response: {
          200: jsonResponse(MarkNotificationsResult, 'How many were marked.'),
          ...problemResponses(400, 401, 403),
        },
      },
    },
    async (request) => markNotificationsRead(deps, userOf(request).userId, request.body.before),
  );

  app.patch(
    '/me/notifications/:notificationId',
    {
      schema: {
        ...meRoute,
        summary: 'Mark a notification read or unread',
        description: 'Marking a read notification read again keeps the time it was first read.',
        operationId: 'updateMyNotification',
        params: NotificationParams,
        body: UpdateNotificationBody,
        response: {
          200: jsonResponse(Notification, 'The notification.'),
          ...problemResponses(400, 401, 403, 404),
        },
      },
    },
    async (request) =>
      updateNotification(deps, userOf(request).userId, request.params.notificationId, request.body.read),
  );
};
