import { type Kysely, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PlinthApp } from '../app.ts';
import { newId } from '../core/ids.ts';
import { AUDIT_TENANT_TABLES } from '../modules/audit/index.ts';
import { EVENTS_TENANT_TABLES } from '../modules/events/index.ts';
import { REPORT_TENANT_TABLES } from '../modules/reports/index.ts';
import { WEBHOOK_TENANT_TABLES } from '../modules/webhooks/index.ts';
import { bearer } from '../test/auth-helpers.ts';
import { testDialects } from '../test/dialects.ts';
import { buildTestApp } from '../test/harness.ts';
import { addMember, createApiKey, createOrg, signedInUser, type TestUser } from '../test/org-helpers.ts';
import { type Database, PLATFORM_TENANT_TABLES } from './schema.ts';

// The database's own defence of tenant isolation. On PostgreSQL every org-owned table carries a forced
// row-level security policy on the transaction's `app.org_id` (or `app.cross_tenant`), so SQL that forgets the
// scope — raw SQL, which the query builders' guard cannot see — finds and changes nothing. The test apps connect
// as a role that owns the tables but is neither a superuser nor BYPASSRLS, as production's application role
// must be, so these tests run under the policies exactly as production does.

describe.each(testDialects)('org-owned tables (%s)', (dialect) => {
  let app: PlinthApp;

  beforeAll(async () => {
    app = await buildTestApp(dialect);
  });

  afterAll(async () => {
    await app?.close();
  });

  it('each has a required org_id column, on which the scope and the policies filter', async () => {
    const tables = await app.database.db.introspection.getTables();
    for (const name of PLATFORM_TENANT_TABLES) {
      const table = tables.find((t) => t.name === name);
      expect(table, name).toBeDefined();
      expect(
        table?.columns.find((c) => c.name === 'org_id'),
        name,
      ).toMatchObject({ isNullable: false });
    }
  });
});

/** A PostgreSQL error: row-level security refusals carry SQLSTATE 42501 (insufficient_privilege). */
const RLS_VIOLATION = { code: '42501' };

// Row-level security exists on PostgreSQL only; on SQLite the application layer (tenant.test.ts) is the defence.
if (testDialects.includes('postgres')) {
  describe('row-level security (postgres)', () => {
    let app: PlinthApp;
    let db: Kysely<Database>;
    let ownerA: TestUser;
    let ownerB: TestUser;
    let orgA: string;
    let orgB: string;

    /** An organization-owned row as raw SQL sees it: every org-owned table has these two columns. */
    type TenantRow = { id: string; org_id: string };

    /** Every row of `table`, of every organization, read deliberately across tenants. */
    const allRows = (table: string) =>
      app.database.acrossTenants(async (trx) => {
        const { rows } = await sql<TenantRow>`select id, org_id from ${sql.table(table)} order by id`.execute(
          trx,
        );
        return rows;
      });

    /** Every org-owned table's rows, for asserting that nothing changed. */
    const snapshot = async () => {
      const tables: Record<string, unknown[]> = {};
      for (const table of PLATFORM_TENANT_TABLES) {
        tables[table] = await app.database.acrossTenants(
          async (trx) => (await sql`select * from ${sql.table(table)} order by id`.execute(trx)).rows,
        );
      }
      return tables;
    };

    /** Runs `work` in a transaction whose `app.org_id` is `orgId`, as `withTenant` sets it. */
    const scopedTo = <T>(orgId: string, work: (trx: Kysely<Database>) => Promise<T>) =>
      db.transaction().execute(async (trx) => {
        await sql`select set_config('app.org_id', ${orgId}, true)`.execute(trx);
        return work(trx);
      });

    beforeAll(async () => {
      app = await buildTestApp('postgres');
      // The plain query builder, guard and all: raw SQL passes the guard, so only the policies stand in its way.
      db = app.database.db;
      ownerA = await signedInUser(app, 'owner-a@example.test');
      ownerB = await signedInUser(app, 'owner-b@example.test');
      orgA = (await createOrg(app, ownerA.accessToken, 'Org A')).id;
      orgB = (await createOrg(app, ownerB.accessToken, 'Org B')).id;
      // A row in every org-owned table of both organizations: memberships and invitations (by inviting a
      // member), a custom role and an API key.
      for (const [owner, orgId, suffix] of [
        [ownerA, orgA, 'a'],
        [ownerB, orgB, 'b'],
      ] as const) {
        await addMember(app, owner.accessToken, orgId, `member-${suffix}@example.test`, 'member');
        const role = await app.inject({
          method: 'POST',
          url: `/api/v1/orgs/${orgId}/roles`,
          headers: bearer(owner.accessToken),
          payload: { name: `auditor-${suffix}`, permissions: ['members:read'] },
        });
        expect(role.statusCode, role.body).toBe(201);
        await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
      }
    });

    afterAll(async () => {
      await app?.close();
    });

    it('runs the tests as a role that is neither superuser nor BYPASSRLS, and owns the tables', async () => {
      const { rows } = await sql<{ rolsuper: boolean; rolbypassrls: boolean }>`
        select rolsuper, rolbypassrls from pg_roles where rolname = current_user`.execute(db);
      expect(rows).toEqual([{ rolsuper: false, rolbypassrls: false }]);
      // The owner of a table escapes its policies unless they are forced: this is why FORCE matters.
      const owners = await sql<{ tablename: string; owned: boolean }>`
        select tablename, tableowner = current_user as owned from pg_tables
        where schemaname = current_schema() and tablename = any(${[...PLATFORM_TENANT_TABLES]})`.execute(db);
      expect(owners.rows).toHaveLength(PLATFORM_TENANT_TABLES.length);
      expect(owners.rows.every((r) => r.owned)).toBe(true);
    });

    it('enables and forces the tenant policy on every org-owned table', async () => {
      // The platform's and those a module registers (the audit log's, the event outbox's, the webhooks', the
      // usage reports').
      const orgOwned = [
        ...PLATFORM_TENANT_TABLES,
        ...AUDIT_TENANT_TABLES,
        ...EVENTS_TENANT_TABLES,
        ...WEBHOOK_TENANT_TABLES,
        ...REPORT_TENANT_TABLES,
      ];
      const { rows } = await sql<{ relname: string; relrowsecurity: boolean; relforcerowsecurity: boolean }>`
        select relname, relrowsecurity, relforcerowsecurity from pg_class
        where relnamespace = current_schema()::regnamespace and relname = any(${orgOwned})
        order by relname`.execute(db);
      expect(rows).toEqual(
        [...orgOwned].sort().map((relname) => ({ relname, relrowsecurity: true, relforcerowsecurity: true })),
      );
      const policies = await sql<{ tablename: string; cmd: string }>`
        select tablename, cmd from pg_policies
        where schemaname = current_schema() and policyname = 'tenant_isolation'`.execute(db);
      expect(policies.rows.map((p) => p.tablename).sort()).toEqual([...orgOwned].sort());
      expect(policies.rows.every((p) => p.cmd === 'ALL')).toBe(true);
    });

    it('returns nothing to a query that forgets the scope', async () => {
      for (const table of PLATFORM_TENANT_TABLES) {
        // Both organizations have rows, so an empty answer is the policy at work.
        const orgs = new Set((await allRows(table)).map((r) => r.org_id));
        expect(orgs, table).toEqual(new Set([orgA, orgB]));

        const { rows } = await sql`select * from ${sql.table(table)}`.execute(db);
        expect(rows, table).toEqual([]);
      }
    });

    it('returns only the organization’s rows to a query scoped with app.org_id', async () => {
      for (const table of PLATFORM_TENANT_TABLES) {
        const ownA = (await allRows(table)).filter((r) => r.org_id === orgA).map((r) => r.id);
        const seen = await scopedTo(orgA, async (trx) => {
          const { rows } =
            await sql<TenantRow>`select id, org_id from ${sql.table(table)} order by id`.execute(trx);
          return rows;
        });
        expect(
          seen.map((r) => r.id),
          table,
        ).toEqual(ownA);
      }
    });

    it('forgets the scope when its transaction ends, on the same connection', async () => {
      const visible = await db.connection().execute(async (connection) => {
        await connection.transaction().execute(async (trx) => {
          await sql`select set_config('app.org_id', ${orgA}, true)`.execute(trx);
        });
        const { rows } = await sql`select * from memberships`.execute(connection);
        return rows;
      });
      expect(visible).toEqual([]);
    });

    it('refuses to insert another organization’s row, scoped or not', async () => {
      const before = await snapshot();
      const now = new Date().toISOString();
      const insertForB = (trx: Kysely<Database>) =>
        sql`insert into memberships (id, org_id, user_id, role, created_at, updated_at)
            values (${newId()}, ${orgB}, ${ownerA.userId}, 'owner', ${now}, ${now})`.execute(trx);
      await expect(scopedTo(orgA, insertForB)).rejects.toMatchObject(RLS_VIOLATION);
      await expect(insertForB(db)).rejects.toMatchObject(RLS_VIOLATION);
      expect(await snapshot()).toEqual(before);
    });

    it('refuses to move a row to another organization', async () => {
      const before = await snapshot();
      const ownA = (await allRows('memberships')).filter((r) => r.org_id === orgA);
      await expect(
        scopedTo(orgA, (trx) =>
          sql`update memberships set org_id = ${orgB} where id = ${ownA[0]?.id ?? ''}`.execute(trx),
        ),
      ).rejects.toMatchObject(RLS_VIOLATION);
      expect(await snapshot()).toEqual(before);
    });

    it('updates and deletes nothing without a scope', async () => {
      const before = await snapshot();
      for (const table of PLATFORM_TENANT_TABLES) {
        const updated = await sql`update ${sql.table(table)} set org_id = org_id`.execute(db);
        expect(updated.numAffectedRows, table).toBe(0n);
        const deleted = await sql`delete from ${sql.table(table)}`.execute(db);
        expect(deleted.numAffectedRows, table).toBe(0n);
      }
      expect(await snapshot()).toEqual(before);
    });

    it('updates and deletes nothing of another organization while scoped to one', async () => {
      const before = await snapshot();
      for (const table of PLATFORM_TENANT_TABLES) {
        const theirs = (await allRows(table)).filter((r) => r.org_id === orgB).map((r) => r.id);
        await scopedTo(orgA, async (trx) => {
          const updated =
            await sql`update ${sql.table(table)} set org_id = org_id where id = any(${theirs})`.execute(trx);
          expect(updated.numAffectedRows, table).toBe(0n);
          const deleted = await sql`delete from ${sql.table(table)} where id = any(${theirs})`.execute(trx);
          expect(deleted.numAffectedRows, table).toBe(0n);
        });
      }
      expect(await snapshot()).toEqual(before);
    });

    it('shows every organization’s rows with app.cross_tenant on', async () => {
      for (const table of PLATFORM_TENANT_TABLES) {
        const seen = await db.transaction().execute(async (trx) => {
          await sql`select set_config('app.cross_tenant', 'on', true)`.execute(trx);
          const { rows } = await sql<TenantRow>`select id, org_id from ${sql.table(table)}`.execute(trx);
          return rows;
        });
        expect(new Set(seen.map((r) => r.org_id)), table).toEqual(new Set([orgA, orgB]));
      }
    });
  });
}
