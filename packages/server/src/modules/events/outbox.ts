import type { FastifyBaseLogger } from 'fastify';
import type { Kysely, Transaction } from 'kysely';
import { z } from 'zod';
import type { Clock } from '../../core/clock.ts';
import { newId } from '../../core/ids.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import type { Database } from '../../db/schema.ts';
import type { JobQueue } from '../jobs/index.ts';
import { createDomainEventCatalogue, type DomainEventCatalogue, platformDomainEvents } from './catalogue.ts';
import * as repo from './events.repo.ts';

/** The org-owned table of the outbox (declared with `registerTenantTable` when the outbox is created). */
export const EVENTS_TENANT_TABLES = ['domain_events'] as const;

/** The job that relays one event after its transaction committed. */
export const RELAY_JOB = 'events.relay';
const RelayPayload = z.strictObject({ orgId: z.uuid(), eventId: z.uuid() });
const RELAY_MAX_ATTEMPTS = 10;
const RELAY_BACKOFF_SECONDS = 5;

/** A domain event as listeners and relay targets receive it. */
export interface DomainEvent {
  id: string;
  /** `resource.verb`, from the catalogue. */
  type: string;
  orgId: string;
  /** ISO-8601, from the application clock, when the change was made. */
  occurredAt: string;
  /** The affected resource's public representation (never a secret). */
  data: Record<string, unknown>;
}

/** What a module publishes: the event's organization, type and data. */
export interface DomainEventInput {
  orgId: string;
  type: string;
  data: Record<string, unknown>;
}

/**
 * A durable consumer of events (the webhooks module): called once per event inside the relay's `withTenant`
 * transaction, so what it writes (delivery rows, jobs) commits together with the event being marked relayed, and
 * a relay that fails is retried as a whole.
 */
export interface RelayTarget {
  name: string;
  relay(db: Transaction<Database>, event: DomainEvent): Promise<void>;
}

/** An in-process consumer (realtime): called after the relay committed, on the replica that ran the relay job. */
export type DomainEventListener = (event: DomainEvent) => void | Promise<void>;

export interface DomainEvents {
  /** The declared event types; modules add theirs at start-up. */
  readonly catalogue: DomainEventCatalogue;
  /**
   * Records an event in the outbox and enqueues its relay, both in `db` — the `withTenant` transaction of the
   * change, called next to its `recordAuditEvent` — so the event exists, and is relayed, exactly when the change
   * commits; a change that rolls back publishes nothing. `type` must be declared in the catalogue.
   */
  publish(db: Transaction<Database>, event: DomainEventInput): Promise<DomainEvent>;
  /**
   * Calls `listener` with every event once it is relayed (after the commit), at least once: a relay interrupted
   * after its commit calls the listeners again when it is retried, so listeners deduplicate by `event.id` if
   * that matters. A listener's failure is logged and affects neither other listeners nor the relay. Returns a
   * function that removes the listener.
   */
  onCommitted(listener: DomainEventListener): () => void;
  /** Adds a durable consumer; at start-up. */
  addRelayTarget(target: RelayTarget): void;
}

export interface DomainEventsDeps {
  database: DatabaseHandle;
  jobs: JobQueue;
  clock: Clock;
  log: FastifyBaseLogger;
}

/**
 * The transactional outbox: `publish` writes the event and its relay job in the change's transaction; the
 * `events.relay` job (at-least-once, retried with backoff) hands it to every relay target in one transaction
 * that also marks it relayed — so a retry after a commit never fans out twice — and then to the in-process
 * listeners. Events of one organization are relayed in no guaranteed order.
 */
export function createDomainEvents(deps: DomainEventsDeps): DomainEvents {
  const { database, jobs, clock, log } = deps;
  for (const table of EVENTS_TENANT_TABLES) database.registerTenantTable(table);
  const catalogue = createDomainEventCatalogue();
  catalogue.add(platformDomainEvents);
  const targets: RelayTarget[] = [];
  const listeners = new Set<DomainEventListener>();

  jobs.define(RELAY_JOB, {
    payload: RelayPayload,
    maxAttempts: RELAY_MAX_ATTEMPTS,
    backoffSeconds: RELAY_BACKOFF_SECONDS,
    handler: async ({ orgId, eventId }) => {
      const event = await database.withTenant(orgId, async (db) => {
        const row = await repo.findDomainEvent(db, eventId);
        // Gone with its organization, or removed by retention: nothing left to relay.
        if (!row) return undefined;
        const found = toDomainEvent(row);
        if (row.relayed_at === null) {
          for (const target of targets) await target.relay(db, found);
          await repo.markRelayed(db, eventId, clock.now().toISOString());
        }
        return found;
      });
      if (event) await notify(event);
    },
  });

  async function notify(event: DomainEvent): Promise<void> {
    const outcomes = await Promise.allSettled([...listeners].map(async (listener) => listener(event)));
    for (const outcome of outcomes) {
      if (outcome.status === 'rejected') {
        log.error(
          { err: outcome.reason, eventId: event.id, type: event.type },
          'a domain event listener failed',
        );
      }
    }
  }

  return {
    catalogue,
    async publish(db, input) {
      if (!catalogue.has(input.type)) throw new Error(`event type "${input.type}" is not in the catalogue`);
      const event: DomainEvent = {
        id: newId(),
        type: input.type,
        orgId: input.orgId,
        occurredAt: clock.now().toISOString(),
        data: input.data,
      };
      await repo.insertDomainEvent(db, {
        id: event.id,
        org_id: event.orgId,
        type: event.type,
        data: JSON.stringify(event.data),
        occurred_at: event.occurredAt,
        relayed_at: null,
      });
      await jobs.enqueue(
        RELAY_JOB,
        { orgId: event.orgId, eventId: event.id },
        { db: db as Kysely<Database>, idempotencyKey: `${RELAY_JOB}:${event.id}` },
      );
      return event;
    },
    onCommitted(listener) {
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },
    addRelayTarget(target) {
      if (targets.some((t) => t.name === target.name))
        throw new Error(`relay target "${target.name}" is added twice`);
      targets.push(target);
    },
  };
}

function toDomainEvent(row: repo.DomainEventRow): DomainEvent {
  return {
    id: row.id,
    type: row.type,
    orgId: row.org_id,
    occurredAt: row.occurred_at,
    data: JSON.parse(row.data) as Record<string, unknown>,
  };
}
