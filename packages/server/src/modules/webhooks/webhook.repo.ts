import type { Insertable, Selectable, Transaction, Updateable } from 'kysely';
import type {
  Database,
  WebhookDeliveriesTable,
  WebhookDeliveryAttemptsTable,
  WebhookEndpointsTable,
} from '../../db/schema.ts';

/**
 * SQL over `webhook_endpoints`, `webhook_deliveries` and `webhook_delivery_attempts`. Every function takes a
 * `withTenant` transaction: the tables are org-owned, and the tenant scope adds the organization to each query.
 */

export type EndpointRow = Selectable<WebhookEndpointsTable>;
export type DeliveryRow = Selectable<WebhookDeliveriesTable>;
export type AttemptRow = Selectable<WebhookDeliveryAttemptsTable>;

export function findEndpoint(db: Transaction<Database>, id: string): Promise<EndpointRow | undefined> {
  return db.selectFrom('webhook_endpoints').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function countEndpoints(db: Transaction<Database>): Promise<number> {
  const row = await db
    .selectFrom('webhook_endpoints')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

export function activeEndpoints(db: Transaction<Database>): Promise<EndpointRow[]> {
  return db.selectFrom('webhook_endpoints').selectAll().where('active', '=', 1).orderBy('id').execute();
}

export async function insertEndpoint(db: Transaction<Database>, row: Insertable<WebhookEndpointsTable>) {
  await db.insertInto('webhook_endpoints').values(row).execute();
}

export async function updateEndpoint(
  db: Transaction<Database>,
  id: string,
  changes: Updateable<WebhookEndpointsTable>,
): Promise<void> {
  await db.updateTable('webhook_endpoints').set(changes).where('id', '=', id).execute();
}

export async function deleteEndpoint(db: Transaction<Database>, id: string): Promise<void> {
  await db.deleteFrom('webhook_endpoints').where('id', '=', id).execute();
}

/**
 * Turns an active endpoint off for `reason`; false when it was already off (another delivery, or a member, did
 * first), so that only one caller records and announces it.
 */
export async function disableEndpoint(
  db: Transaction<Database>,
  id: string,
  reason: 'gone' | 'failing',
  at: string,
): Promise<boolean> {
  const result = await db
    .updateTable('webhook_endpoints')
    .set({ active: 0, disabled_reason: reason, disabled_at: at, updated_at: at })
    .where('id', '=', id)
    .where('active', '=', 1)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

export async function insertDelivery(db: Transaction<Database>, row: Insertable<WebhookDeliveriesTable>) {
  await db.insertInto('webhook_deliveries').values(row).execute();
}

export function findDelivery(
  db: Transaction<Database>,
  endpointId: string,
  id: string,
): Promise<DeliveryRow | undefined> {
  return db
    .selectFrom('webhook_deliveries')
    .selectAll()
    .where('id', '=', id)
    .where('endpoint_id', '=', endpointId)
    .executeTakeFirst();
}

export function findDeliveryById(db: Transaction<Database>, id: string): Promise<DeliveryRow | undefined> {
  return db.selectFrom('webhook_deliveries').selectAll().where('id', '=', id).executeTakeFirst();
}

/**
 * Records the outcome of attempt `attempt`, only if the delivery is still pending with `attempt - 1` attempts
 * (a second run of the same attempt's job changes nothing); true when this call recorded it.
 */
export async function recordAttempt(
  db: Transaction<Database>,
  deliveryId: string,
  attempt: number,
  changes: Updateable<WebhookDeliveriesTable>,
): Promise<boolean> {
  const result = await db
    .updateTable('webhook_deliveries')
    .set({ ...changes, attempts: attempt })
    .where('id', '=', deliveryId)
    .where('status', '=', 'pending')
    .where('attempts', '=', attempt - 1)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/** The note on deliveries dropped because their endpoint was turned off. */
export const TURNED_OFF = 'Not sent: the endpoint is turned off.';

/**
 * Ends the pending deliveries of an endpoint that was turned off (or just one of them, `deliveryId`) as failed,
 * without another attempt; their scheduled attempt jobs then find nothing to do. Returns how many.
 */
export async function dropPending(
  db: Transaction<Database>,
  endpointId: string,
  at: string,
  deliveryId?: string,
): Promise<number> {
  let query = db
    .updateTable('webhook_deliveries')
    .set({ status: 'failed', next_attempt_at: null, last_error: TURNED_OFF, updated_at: at, finished_at: at })
    .where('endpoint_id', '=', endpointId)
    .where('status', '=', 'pending');
  if (deliveryId !== undefined) query = query.where('id', '=', deliveryId);
  const result = await query.executeTakeFirst();
  return Number(result.numUpdatedRows);
}

export async function insertAttempt(
  db: Transaction<Database>,
  row: Insertable<WebhookDeliveryAttemptsTable>,
) {
  await db.insertInto('webhook_delivery_attempts').values(row).execute();
}

export function attemptsOf(db: Transaction<Database>, deliveryId: string): Promise<AttemptRow[]> {
  return db
    .selectFrom('webhook_delivery_attempts')
    .selectAll()
    .where('delivery_id', '=', deliveryId)
    .orderBy('attempt')
    .execute();
}
