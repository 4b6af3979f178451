import { type Insertable, type Selectable, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PlinthApp } from '../app.ts';
import { newId } from '../core/ids.ts';
import { testDialects } from '../test/dialects.ts';
import { buildTestApp } from '../test/harness.ts';
import { addMember, createOrg, signedInUser, type TestUser } from '../test/org-helpers.ts';
import { type MembershipsTable, PLATFORM_TENANT_TABLES } from './schema.ts';
import { UnscopedTenantAccessError } from './tenant.ts';

// The application layer of tenant isolation, exercised on a real database of each dialect: the plain query
// builders refuse org-owned tables outright, `withTenant` confines every query to one organization, and
// `acrossTenants` is the one deliberate way to see them all. The organizations and their members are made
// through the HTTP API, as users would; the database is queried directly because the query builders are what
// is under test.

type MembershipRow = Selectable<MembershipsTable>;

describe.each(testDialects)('tenant-scoped data access (%s)', (dialect) => {
  let app: PlinthApp;
  let ownerA: TestUser;
  let memberA: TestUser;
  let ownerB: TestUser;
  let memberB: TestUser;
  let orgA: string;
  let orgB: string;

  beforeAll(async () => {
    app = await buildTestApp(dialect);
    ownerA = await signedInUser(app, 'owner-a@example.test');
    ownerB = await signedInUser(app, 'owner-b@example.test');
    orgA = (await createOrg(app, ownerA.accessToken, 'Org A')).id;
    orgB = (await createOrg(app, ownerB.accessToken, 'Org B')).id;
    memberA = await addMember(app, ownerA.accessToken, orgA, 'member-a@example.test', 'member');
    memberB = await addMember(app, ownerB.accessToken, orgB, 'member-b@example.test', 'member');
  });

  afterAll(async () => {
    await app?.close();
  });

  /** Every membership of both organizations, read deliberately across tenants, ordered by id. */
  const allMemberships = (): Promise<MembershipRow[]> =>
    app.database.acrossTenants((db) => db.selectFrom('memberships').selectAll().orderBy('id').execute());

  const membershipOf = async (orgId: string, userId: string): Promise<MembershipRow> => {
    const row = (await allMemberships()).find((m) => m.org_id === orgId && m.user_id === userId);
    if (!row) throw new Error(`no membership of ${userId} in ${orgId}`);
    return row;
  };

  /** A membership row for `orgId` and a user who is not yet a member of it. */
  const newMembership = (orgId: string, userId: string): Insertable<MembershipsTable> => {
    const now = new Date().toISOString();
    return { id: newId(), org_id: orgId, user_id: userId, role: 'viewer', created_at: now, updated_at: now };
  };

  describe('the plain query builder', () => {
    /**
     * Asserts that building or running `query` is refused. A subquery over an org-owned table is refused as soon
     * as it is turned into part of the outer query (the guard runs when a builder becomes a node), before
     * anything is sent to the database, so the refusal may come synchronously.
     */
    const expectRefused = (query: () => Promise<unknown>) =>
      expect(Promise.resolve().then(query)).rejects.toThrow(UnscopedTenantAccessError);

    it('refuses to read any org-owned table', async () => {
      for (const table of PLATFORM_TENANT_TABLES) {
        await expectRefused(() => app.database.db.selectFrom(table).selectAll().execute());
        await expectRefused(() => app.database.readDb.selectFrom(table).selectAll().execute());
      }
    });

    it('refuses an org-owned table reached through a join, a subquery or a common table expression', async () => {
      const { db } = app.database;
      await expectRefused(() =>
        db
          .selectFrom('users')
          .innerJoin('memberships', 'memberships.user_id', 'users.id')
          .select('users.email')
          .execute(),
      );
      await expectRefused(() =>
        db
          .selectFrom('users')
          .leftJoin('api_keys', 'api_keys.created_by', 'users.id')
          .select('users.email')
          .execute(),
      );
      await expectRefused(() =>
        db
          .selectFrom('users')
          .select('email')
          .where('id', 'in', db.selectFrom('memberships').select('user_id'))
          .execute(),
      );
      await expectRefused(() =>
        db
          .selectFrom('organizations')
          .select('id')
          .where((eb) =>
            eb.exists(eb.selectFrom('invitations').select('id').whereRef('org_id', '=', 'organizations.id')),
          )
          .execute(),
      );
      await expectRefused(() =>
        db
          .with('member_ids', (qb) => qb.selectFrom('memberships').select('user_id'))
          .selectFrom('member_ids')
          .selectAll()
          .execute(),
      );
    });

    it('refuses to insert, update or delete org-owned rows, and changes nothing', async () => {
      const { db } = app.database;
      const before = await allMemberships();
      const target = await membershipOf(orgB, memberB.userId);

      await expectRefused(() =>
        db.insertInto('memberships').values(newMembership(orgA, memberB.userId)).execute(),
      );
      await expectRefused(() =>
        db.updateTable('memberships').set({ role: 'owner' }).where('id', '=', target.id).execute(),
      );
      await expectRefused(() => db.deleteFrom('memberships').where('id', '=', target.id).execute());
      // An org-owned table named only in a condition is still a way to reach its rows.
      await expectRefused(() =>
        db
          .updateTable('users')
          .set({ name: 'Renamed' })
          .where('id', 'in', db.selectFrom('memberships').select('user_id'))
          .execute(),
      );
      await expectRefused(() =>
        db.deleteFrom('organizations').where('id', 'in', db.selectFrom('roles').select('org_id')).execute(),
      );

      expect(await allMemberships()).toEqual(before);
    });

    it('works for tables that belong to no organization', async () => {
      const { db } = app.database;
      const users = await db.selectFrom('users').select('id').execute();
      expect(users.map((u) => u.id)).toEqual(
        expect.arrayContaining([ownerA.userId, memberA.userId, ownerB.userId, memberB.userId]),
      );
      const orgs = await db.selectFrom('organizations').select('id').execute();
      expect(orgs.map((o) => o.id)).toEqual(expect.arrayContaining([orgA, orgB]));
    });

    it('allows schema changes that name org-owned tables, as migrations make them', async () => {
      const { db } = app.database;
      const index = `memberships_role_${newId().slice(-12)}`;
      await db.schema.createIndex(index).on('memberships').column('role').execute();
      await db.schema.dropIndex(index).execute();
    });
  });

  describe('withTenant', () => {
    it('reads only the organization’s own rows', async () => {
      const all = await allMemberships();
      const ownA = all.filter((m) => m.org_id === orgA).map((m) => m.id);
      // Both organizations have rows, so seeing only A's means the scope filtered B's out.
      expect(ownA.length).toBeGreaterThan(0);
      expect(all.some((m) => m.org_id === orgB)).toBe(true);

      const seen = await app.database.withTenant(orgA, (db) =>
        db.selectFrom('memberships').selectAll().orderBy('id').execute(),
      );
      expect(seen.map((m) => m.id)).toEqual(ownA);

      // Under an alias too: the scope follows the name the query gives the table.
      const aliased = await app.database.withTenant(orgA, (db) =>
        db.selectFrom('memberships as m').select('m.id').orderBy('m.id').execute(),
      );
      expect(aliased.map((m) => m.id)).toEqual(ownA);

      // A condition naming the other organization cannot widen the scope.
      const asked = await app.database.withTenant(orgA, (db) =>
        db.selectFrom('memberships').selectAll().where('org_id', '=', orgB).execute(),
      );
      expect(asked).toEqual([]);
    });

    it('confines joins: an inner join sees only the organization’s members', async () => {
      const rows = await app.database.withTenant(orgA, (db) =>
        db
          .selectFrom('memberships')
          .innerJoin('users', 'users.id', 'memberships.user_id')
          .select(['users.id', 'memberships.org_id'])
          .execute(),
      );
      expect(rows.map((r) => r.id).sort()).toEqual([ownerA.userId, memberA.userId].sort());
      expect(rows.every((r) => r.org_id === orgA)).toBe(true);
    });

    it('confines outer joins without turning them into inner joins', async () => {
      const rows = await app.database.withTenant(orgA, (db) =>
        db
          .selectFrom('users')
          .leftJoin('memberships', 'memberships.user_id', 'users.id')
          .select(['users.id as userId', 'memberships.org_id as orgId'])
          .execute(),
      );
      const orgOf = new Map(rows.map((r) => [r.userId, r.orgId]));
      // Every user is listed (users belong to no organization); only A's memberships are joined to them.
      expect(orgOf.get(ownerA.userId)).toBe(orgA);
      expect(orgOf.get(memberA.userId)).toBe(orgA);
      expect(orgOf.get(ownerB.userId)).toBeNull();
      expect(orgOf.get(memberB.userId)).toBeNull();
      expect(rows.some((r) => r.orgId === orgB)).toBe(false);
    });

    it('confines subqueries', async () => {
      const rows = await app.database.withTenant(orgA, (db) =>
        db
          .selectFrom('users')
          .select('id')
          .where('id', 'in', db.selectFrom('memberships').select('user_id'))
          .execute(),
      );
      expect(rows.map((r) => r.id).sort()).toEqual([ownerA.userId, memberA.userId].sort());
    });

    it('updates nothing of another organization, even by id', async () => {
      const before = await allMemberships();
      const target = await membershipOf(orgB, memberB.userId);
      const result = await app.database.withTenant(orgA, (db) =>
        db.updateTable('memberships').set({ role: 'owner' }).where('id', '=', target.id).executeTakeFirst(),
      );
      expect(Number(result.numUpdatedRows)).toBe(0);
      expect(await allMemberships()).toEqual(before);
    });

    it('deletes nothing of another organization, even by id', async () => {
      const before = await allMemberships();
      const target = await membershipOf(orgB, memberB.userId);
      const result = await app.database.withTenant(orgA, (db) =>
        db.deleteFrom('memberships').where('id', '=', target.id).executeTakeFirst(),
      );
      expect(Number(result.numDeletedRows)).toBe(0);
      expect(await allMemberships()).toEqual(before);
    });

    it('refuses an update that would move its own row to another organization', async () => {
      const before = await allMemberships();
      const own = await membershipOf(orgA, memberA.userId);
      try {
        await expect(
          app.database.withTenant(orgA, (db) =>
            db.updateTable('memberships').set({ org_id: orgB }).where('id', '=', own.id).execute(),
          ),
        ).rejects.toThrow();
        expect(await allMemberships()).toEqual(before);
      } finally {
        // Should the update ever get through, put the row back so the other tests still see A's member.
        await app.database.acrossTenants((db) =>
          db.updateTable('memberships').set({ org_id: orgA }).where('id', '=', own.id).execute(),
        );
      }
    });

    it('refuses an insert that names another organization', async () => {
      const before = await allMemberships();
      await expect(
        app.database.withTenant(orgA, (db) =>
          db.insertInto('memberships').values(newMembership(orgB, memberA.userId)).execute(),
        ),
      ).rejects.toThrow(UnscopedTenantAccessError);
      // One row for the organization and one for another, in the same statement: refused as a whole.
      await expect(
        app.database.withTenant(orgA, (db) =>
          db
            .insertInto('memberships')
            .values([newMembership(orgA, memberB.userId), newMembership(orgB, memberA.userId)])
            .execute(),
        ),
      ).rejects.toThrow(UnscopedTenantAccessError);
      expect(await allMemberships()).toEqual(before);
    });

    it('refuses an insert that does not name its organization', async () => {
      const before = await allMemberships();
      const { org_id: _orgId, ...withoutOrg } = newMembership(orgA, memberB.userId);
      await expect(
        app.database.withTenant(orgA, (db) =>
          // The types require org_id; code that built its row loosely must still be stopped at run time.
          db
            .insertInto('memberships')
            .values(withoutOrg as Insertable<MembershipsTable>)
            .execute(),
        ),
      ).rejects.toThrow(UnscopedTenantAccessError);
      expect(await allMemberships()).toEqual(before);
    });

    it('refuses an upsert, which could update another organization’s row', async () => {
      const before = await allMemberships();
      const theirs = await membershipOf(orgB, memberB.userId);
      await expect(
        app.database.withTenant(orgA, (db) =>
          db
            .insertInto('memberships')
            .values({ ...newMembership(orgA, memberB.userId), id: theirs.id })
            .onConflict((oc) => oc.column('id').doUpdateSet({ role: 'owner' }))
            .execute(),
        ),
      ).rejects.toThrow(UnscopedTenantAccessError);
      expect(await allMemberships()).toEqual(before);
    });

    it('keeps the scope on every branch of a condition written as raw SQL, in a where and in a join', async () => {
      const theirs = await membershipOf(orgB, memberB.userId);
      // `a or b`: without parentheses around the query's own condition, the scope would bind to `b` alone.
      const read = await app.database.withTenant(orgA, (db) =>
        db.selectFrom('memberships').select('id').where(sql<boolean>`id = ${theirs.id} or 1 = 0`).execute(),
      );
      expect(read).toEqual([]);
      const joined = await app.database.withTenant(orgA, (db) =>
        db
          .selectFrom('users')
          .innerJoin('memberships', (join) => join.on(sql<boolean>`memberships.user_id = users.id or 1 = 0`))
          .select('memberships.org_id')
          .execute(),
      );
      expect(new Set(joined.map((r) => r.org_id))).toEqual(new Set([orgA]));
      const before = await allMemberships();
      const changed = await app.database.withTenant(orgA, (db) =>
        db
          .updateTable('memberships')
          .set({ role: 'owner' })
          .where(sql<boolean>`id = ${theirs.id} or 1 = 0`)
          .executeTakeFirst(),
      );
      expect(Number(changed.numUpdatedRows)).toBe(0);
      expect(await allMemberships()).toEqual(before);
    });

    it('refuses a table it cannot see: one given as raw SQL, or a merge', async () => {
      await expect(
        app.database.withTenant(orgA, (db) => db.selectFrom(sql`memberships`.as('m')).selectAll().execute()),
      ).rejects.toThrow(UnscopedTenantAccessError);
      await expect(
        app.database.withTenant(orgA, (db) =>
          db
            .mergeInto('memberships')
            .using('users', 'users.id', 'memberships.user_id')
            .whenMatched()
            .thenUpdateSet({ role: 'owner' })
            .execute(),
        ),
      ).rejects.toThrow(UnscopedTenantAccessError);
    });

    it('inserts the organization’s own rows', async () => {
      const row = newMembership(orgA, memberB.userId);
      await app.database.withTenant(orgA, (db) => db.insertInto('memberships').values(row).execute());
      try {
        expect(await membershipOf(orgA, memberB.userId)).toMatchObject({ id: row.id, role: 'viewer' });
      } finally {
        await app.database.withTenant(orgA, (db) =>
          db.deleteFrom('memberships').where('id', '=', row.id).execute(),
        );
      }
    });
  });

  describe('acrossTenants', () => {
    it('sees every organization’s rows', async () => {
      const rows = await app.database.acrossTenants((db) =>
        db.selectFrom('memberships').select(['org_id', 'user_id']).execute(),
      );
      expect(rows).toEqual(
        expect.arrayContaining([
          { org_id: orgA, user_id: ownerA.userId },
          { org_id: orgA, user_id: memberA.userId },
          { org_id: orgB, user_id: ownerB.userId },
          { org_id: orgB, user_id: memberB.userId },
        ]),
      );
    });
  });
});
