import { emailOf, eraseFromJson, type PersonalDataSource } from '../../core/personal-data.ts';
import { containsText } from '../../db/database.ts';

/**
 * Webhook deliveries as disclosures of a person: a delivery's payload is a copy of a domain event, sent to an
 * organization's endpoint, so it may carry their address and name (kept 30 days, `webhook_deliveries`). The
 * export lists the deliveries that carried their address, naming the receiving host (never the whole URL, which
 * often holds the receiver's secret); the erasure writes `[erased]` in place of the address and name in the
 * payloads, and drops the receivers' response texts that quote either.
 */
export const webhookPersonalData: PersonalDataSource = {
  name: 'webhookDeliveries',
  async export(db, userId) {
    const email = await emailOf(db, userId);
    if (email === undefined) return [];
    const rows = await db
      .selectFrom('webhook_deliveries')
      .innerJoin('webhook_endpoints', 'webhook_endpoints.id', 'webhook_deliveries.endpoint_id')
      .select([
        'webhook_deliveries.id',
        'webhook_deliveries.org_id',
        'webhook_deliveries.event_type',
        'webhook_deliveries.status',
        'webhook_deliveries.created_at',
        'webhook_endpoints.url',
      ])
      .where(containsText(db, 'webhook_deliveries.payload', JSON.stringify(email)))
      .orderBy('webhook_deliveries.created_at')
      .orderBy('webhook_deliveries.id')
      .execute();
    return rows.map((r) => ({
      id: r.id,
      orgId: r.org_id,
      eventType: r.event_type,
      receiver: new URL(r.url).host,
      status: r.status,
      createdAt: r.created_at,
    }));
  },
  async erase(db, subject) {
    await eraseFromJson(db, { table: 'webhook_deliveries', column: 'payload' }, subject);
    const quotes = (column: string) => [
      containsText(db, column, subject.email),
      containsText(db, column, subject.name),
    ];
    await db
      .updateTable('webhook_deliveries')
      .set({ last_response_body: null })
      .where((eb) => eb.or(quotes('last_response_body')))
      .execute();
    await db
      .updateTable('webhook_delivery_attempts')
      .set({ response_body: null })
      .where((eb) => eb.or(quotes('response_body')))
      .execute();
  },
};
