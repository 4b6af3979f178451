import { emailOf, eraseFromJson, type PersonalDataSource } from '../../core/personal-data.ts';
import { containsText } from '../../db/database.ts';

/**
 * The outbox's copies of a person: an event's data is the public representation of what changed (a member, an
 * invitation), so it carries their address and name until the event expires (`domain_events`, 7 days after it
 * was relayed). The export lists the events that carry their address; the erasure writes `[erased]` in place
 * of it and of their name, keeping the event (an unrelayed one must still reach its webhooks and listeners).
 */
export const domainEventPersonalData: PersonalDataSource = {
  name: 'domainEvents',
  async export(db, userId) {
    const email = await emailOf(db, userId);
    if (email === undefined) return [];
    const rows = await db
      .selectFrom('domain_events')
      .select(['id', 'org_id', 'type', 'occurred_at'])
      .where(containsText(db, 'data', JSON.stringify(email)))
      .orderBy('occurred_at')
      .orderBy('id')
      .execute();
    return rows.map((r) => ({ id: r.id, orgId: r.org_id, type: r.type, occurredAt: r.occurred_at }));
  },
  erase: (db, subject) => eraseFromJson(db, { table: 'domain_events', column: 'data' }, subject),
};
