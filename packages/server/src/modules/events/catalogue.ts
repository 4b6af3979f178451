import { EventTypeName } from '@plinth/shared';

/**
 * The domain event catalogue: every event type the installation can publish, declared as data by the module
 * that owns the resource (`defineDomainEvents({ 'booking.created': { description } })`) and added at start-up
 * (`app.domainEvents.catalogue.add(…)`), as permissions are. Publishing an undeclared type is a programming
 * error; webhook subscriptions are validated against the catalogue, and `GET /api/v1/event-types` lists it.
 */

/** One event type: its name (`resource.verb`) and a one-line description for the API docs and the console. */
export interface DomainEventStatement {
  type: string;
  description: string;
}

export interface DomainEventCatalogue {
  add(statements: readonly DomainEventStatement[]): void;
  has(type: string): boolean;
  /** Every declared type, sorted by name. */
  list(): readonly DomainEventStatement[];
}

/** Turns `{ 'member.added': { description } }` into statements, checking each name's shape. */
export function defineDomainEvents(specs: Record<string, { description: string }>): DomainEventStatement[] {
  return Object.entries(specs).map(([type, { description }]) => {
    if (!EventTypeName.safeParse(type).success)
      throw new Error(`"${type}" is not a resource.verb event type`);
    return { type, description };
  });
}

export function createDomainEventCatalogue(): DomainEventCatalogue {
  const types = new Map<string, DomainEventStatement>();
  return {
    add(statements) {
      for (const statement of statements) {
        if (types.has(statement.type)) throw new Error(`event type "${statement.type}" is declared twice`);
        types.set(statement.type, statement);
      }
    },
    has: (type) => types.has(type),
    list: () => [...types.values()].sort((a, b) => (a.type < b.type ? -1 : a.type > b.type ? 1 : 0)),
  };
}

/**
 * The platform's own events. Each `data` is the resource's public representation as the API returns it —
 * never a secret (no key secret, no token or its hash).
 */
export const platformDomainEvents = defineDomainEvents({
  'org.updated': {
    description: "The organization's name, slug or settings changed. Data: the organization.",
  },
  'member.added': { description: 'Someone joined the organization. Data: the member.' },
  'member.removed': { description: 'A membership ended (removed or left). Data: the member as it was.' },
  'member.role_changed': {
    description: "A member's role changed. Data: the member, with `previousRole`.",
  },
  'invitation.created': { description: 'Someone was invited. Data: the invitation (never its token).' },
  'apikey.created': { description: 'An API key was created. Data: the key (never its secret).' },
  'apikey.rotated': { description: "An API key's secret was replaced. Data: the key (never its secret)." },
  'apikey.revoked': { description: 'An API key was revoked. Data: the key.' },
});
