import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { notificationRoutes } from './notification.routes.ts';
import {
  type NotificationDeps,
  type Notifier,
  notificationPersonalData,
  notificationRetention,
} from './notification.service.ts';

export {
  createNotifier,
  NewNotification,
  type NotificationDeps,
  type Notifier,
  toNotification,
} from './notification.service.ts';

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * In-app notifications: `app.notifications.create(db, { userId, type, title, body?, data? })`, in the
     * transaction of the change it is about; pushed live on `user:<userId>` once committed.
     */
    notifications: Notifier;
  }
}

/** The OpenAPI tags of this module's routes. */
export const notificationTags = [
  { name: 'Notifications', description: "The signed-in user's in-app notifications, read and unread." },
];

async function notifications(
  app: FastifyInstance,
  { deps, notifier }: { deps: NotificationDeps; notifier: Notifier },
): Promise<void> {
  app.decorate('notifications', notifier);
  app.addHook('onClose', async () => notifier.close());
  app.personalData.add(notificationPersonalData);
  for (const policy of notificationRetention) app.retention.add(policy);
  await app.register(notificationRoutes, { deps, prefix: '/api/v1' });
}

/** Notifications: the `notifications` table, `app.notifications`, and `/api/v1/me/notifications`. */
export const notificationsModule = fp(notifications, {
  name: 'plinth-notifications',
  dependencies: ['plinth-auth', 'plinth-realtime'],
});
