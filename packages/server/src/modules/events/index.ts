import { EventType } from '@plinth/shared';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { jsonResponse, problemResponses } from '../../core/responses.ts';
import { purgeAfter, type RetentionPolicy } from '../../core/retention.ts';
import type { DomainEvents } from './outbox.ts';
import { domainEventPersonalData } from './personal-data.ts';

export {
  createDomainEventCatalogue,
  type DomainEventCatalogue,
  type DomainEventStatement,
  defineDomainEvents,
  platformDomainEvents,
} from './catalogue.ts';
export {
  createDomainEvents,
  type DomainEvent,
  type DomainEventInput,
  type DomainEventListener,
  type DomainEvents,
  type DomainEventsDeps,
  EVENTS_TENANT_TABLES,
  RELAY_JOB,
  type RelayTarget,
} from './outbox.ts';

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * The domain event outbox: `publish(trx, { orgId, type, data })` in a change's transaction,
     * `onCommitted(listener)` to hear every event once it is relayed, and the event type `catalogue`.
     */
    domainEvents: DomainEvents;
  }
}

/** The OpenAPI tags of this module's routes. */
export const eventTags = [
  {
    name: 'Events',
    description: 'The domain event catalogue: what webhooks and realtime clients can receive.',
  },
];

/**
 * Relayed events are kept this long: deliveries carry their own copy of the payload, so the outbox row is only
 * needed until it is relayed (and for an operator looking into a relay problem).
 */
export const domainEventRetention: RetentionPolicy = {
  name: 'domain_events',
  description: 'domain events already relayed to webhooks and listeners',
  days: 7,
  apply: purgeAfter({ table: 'domain_events', after: ['relayed_at'] }),
};

const EventTypeList = z.object({ data: z.array(EventType) }).meta({ id: 'EventTypeList' });

const eventTypeRoutes: FastifyPluginAsyncZod<{ events: DomainEvents }> = async (app, { events }) => {
  app.get(
    '/event-types',
    {
      schema: {
        tags: ['Events'],
        security: [],
        summary: 'Event types',
        description:
          'Every domain event type the installation publishes, which webhook subscriptions accept (and `*` for all).',
        operationId: 'listEventTypes',
        response: { 200: jsonResponse(EventTypeList, 'The declared event types.'), ...problemResponses() },
      },
    },
    async () => ({ data: [...events.catalogue.list()] }),
  );
};

async function eventsPlugin(app: FastifyInstance, { events }: { events: DomainEvents }): Promise<void> {
  app.retention.add(domainEventRetention);
  app.personalData.add(domainEventPersonalData);
  await app.register(eventTypeRoutes, { events, prefix: '/api/v1' });
}

/** The event catalogue's route (`GET /api/v1/event-types`), and the outbox's retention policy and personal data. */
export const eventsModule = fp(eventsPlugin, { name: 'plinth-events' });
