import { type Kysely, sql } from 'kysely';
import type { Dialect } from '../database.ts';

/**
 * Row-level security for an org-owned table, on PostgreSQL (SQLite has none; the application layer in
 * db/tenant.ts is the defence there, and on PostgreSQL too). A row is visible and writable only when the
 * transaction's `app.org_id` names its organization, or `app.cross_tenant` is on — both set with `SET LOCAL`
 * semantics by `withTenant`/`acrossTenants`. Without either, a query sees nothing. `FORCE` applies the policy to
 * the table's owner too, so an installation that runs with a single database role is still protected;
 * superusers and `BYPASSRLS` roles are never subject to it, which is why the application must not use one (see
 * docs/operations.md).
 *
 * Part of the migrations' public surface: a module's migration calls it for each org-owned table it creates.
 * Its SQL must never change meaning for tables already created with it; a new policy needs a new helper.
 */
export async function enableTenantIsolation(
  db: Kysely<unknown>,
  dialect: Dialect,
  table: string,
): Promise<void> {
  if (dialect !== 'postgres') return;
  const condition = sql`org_id = nullif(current_setting('app.org_id', true), '')::uuid
    or current_setting('app.cross_tenant', true) = 'on'`;
  await createTenantPolicy(db, table, condition);
}

/**
 * The same isolation for a table whose `org_id` is text rather than a UUID: the audit tables, whose key names a
 * chain — an organization's id, `user:<id>` or `platform` (see modules/audit/record.ts). The setting is compared
 * as text, so a chain name that is not a UUID never fails a cast.
 */
export async function enableChainIsolation(
  db: Kysely<unknown>,
  dialect: Dialect,
  table: string,
): Promise<void> {
  if (dialect !== 'postgres') return;
  const condition = sql`org_id = nullif(current_setting('app.org_id', true), '')
    or current_setting('app.cross_tenant', true) = 'on'`;
  await createTenantPolicy(db, table, condition);
}

async function createTenantPolicy(
  db: Kysely<unknown>,
  table: string,
  condition: ReturnType<typeof sql>,
): Promise<void> {
  const name = sql.table(table);
  await sql`alter table ${name} enable row level security`.execute(db);
  await sql`alter table ${name} force row level security`.execute(db);
  await sql`create policy tenant_isolation on ${name} using (${condition}) with check (${condition})`.execute(
    db,
  );
}
