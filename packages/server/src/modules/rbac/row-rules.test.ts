import { defineErrors, Page, Permission, Role } from '@plinth/shared';
import type { FastifyPluginAsync } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { type Kysely, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { PlinthApp } from '../../app.ts';
import { AppError } from '../../core/errors.ts';
import { newId } from '../../core/ids.ts';
import { jsonResponse, problemResponses } from '../../core/responses.ts';
import { columnTypes } from '../../db/column-types.ts';
import { enableTenantIsolation } from '../../db/migrations/tenant-isolation.ts';
import { UnscopedTenantAccessError } from '../../db/tenant.ts';
import { bearer, expectProblem } from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { buildTestApp } from '../../test/harness.ts';
import { addMember, createOrg, signedInUser, type TestUser } from '../../test/org-helpers.ts';
import {
  accessOf,
  definePermissions,
  type OrgAccess,
  OrgParams,
  type RowRules,
  rowCondition,
} from './index.ts';

// The extension points a domain module uses, exercised by a small module that exists only in this test: it
// declares its own org-owned table, permissions and built-in role, guards its routes with a permission, and
// narrows what a `customer` sees with a row-level rule — as the fleet module does for vehicles.

/** The test module's table; the platform's `Database` type does not know it. */
interface TestNotesTable {
  id: string;
  org_id: string;
  owner_id: string;
  body: string;
}
interface TestDb {
  test_notes: TestNotesTable;
}

const notesErrors = defineErrors({ NOTE_NOT_FOUND: { status: 404, title: 'No such note.' } });
const Note = z.object({ id: z.uuid(), ownerId: z.uuid(), body: z.string() });
const NoteParams = OrgParams.extend({ noteId: z.uuid() });

/** The one user a row belongs to; only people hold the `customer` role, so an API key has no rows of its own. */
function userIdOf(access: OrgAccess): string {
  if (access.principal.type !== 'user') throw new Error('a customer is always a person');
  return access.principal.userId;
}

/** A customer sees only the notes it wrote; every other role sees all its organization's notes. */
const noteRules: RowRules<TestDb, 'test_notes'> = {
  customer: (eb, access) => eb('test_notes.owner_id', '=', userIdOf(access)),
};

const toNote = (row: TestNotesTable) => ({ id: row.id, ownerId: row.owner_id, body: row.body });

/** The test-only module, registered under `/api/v1` through `AppOptions.modules`. */
const notesModule: FastifyPluginAsync = async (plain) => {
  const app = plain.withTypeProvider<ZodTypeProvider>();
  const { database } = app;
  // What a module's migration would do: create its org-owned table and, on PostgreSQL, its RLS policy.
  const t = columnTypes(database.dialect);
  const schemaDb = database.db as unknown as Kysely<TestDb>;
  await schemaDb.schema
    .createTable('test_notes')
    .addColumn('id', t.id, (c) => c.primaryKey())
    .addColumn('org_id', t.id, (c) => c.notNull().references('organizations.id').onDelete('cascade'))
    .addColumn('owner_id', t.id, (c) => c.notNull())
    .addColumn('body', 'text', (c) => c.notNull())
    .execute();
  await enableTenantIsolation(database.db as unknown as Kysely<unknown>, database.dialect, 'test_notes');
  database.registerTenantTable('test_notes');

  app.accessRegistry.addPermissions(
    definePermissions({
      'notes:read': { description: 'Read notes.', roles: ['admin', 'member', 'viewer'] },
      'notes:create': { description: 'Write notes.', roles: ['admin', 'member'] },
    }),
  );
  app.accessRegistry.addRole({
    name: 'customer',
    description: 'Reads and writes only its own notes.',
    permissions: ['notes:read', 'notes:create'],
  });

  const scoped = <T>(orgId: string, work: (db: Kysely<TestDb>) => Promise<T>) =>
    database.withTenant(orgId, (trx) => work(trx as unknown as Kysely<TestDb>));

  app.get(
    '/orgs/:orgId/notes',
    {
      config: { permission: 'notes:read' },
      schema: {
        params: OrgParams,
        response: {
          200: jsonResponse(z.object({ data: z.array(Note) }), 'Notes.'),
          ...problemResponses(401, 403, 404),
        },
      },
    },
    async (request) => {
      const access = accessOf(request);
      const rows = await scoped(access.orgId, (db) => {
        let query = db.selectFrom('test_notes').selectAll().orderBy('body');
        const condition = rowCondition(noteRules, access);
        if (condition) query = query.where(condition);
        return query.execute();
      });
      return { data: rows.map(toNote) };
    },
  );

  app.get(
    '/orgs/:orgId/notes/:noteId',
    {
      config: { permission: 'notes:read' },
      schema: {
        params: NoteParams,
        response: { 200: jsonResponse(Note, 'The note.'), ...problemResponses(401, 403, 404) },
      },
    },
    async (request) => {
      const access = accessOf(request);
      const row = await scoped(access.orgId, (db) => {
        let query = db.selectFrom('test_notes').selectAll().where('id', '=', request.params.noteId);
        const condition = rowCondition(noteRules, access);
        if (condition) query = query.where(condition);
        return query.executeTakeFirst();
      });
      if (!row) throw new AppError(notesErrors.NOTE_NOT_FOUND);
      return toNote(row);
    },
  );

  app.post(
    '/orgs/:orgId/notes',
    {
      config: { permission: 'notes:create' },
      schema: {
        params: OrgParams,
        body: z.strictObject({ body: z.string().min(1).max(200) }),
        response: { 201: jsonResponse(Note, 'The new note.'), ...problemResponses(400, 401, 403, 404) },
      },
    },
    async (request, reply) => {
      const access = accessOf(request);
      const row = { id: newId(), org_id: access.orgId, owner_id: userIdOf(access), body: request.body.body };
      await scoped(access.orgId, (db) => db.insertInto('test_notes').values(row).execute());
      return reply.status(201).send(toNote(row));
    },
  );
};

const NotesList = z.object({ data: z.array(Note) });

describe.each(testDialects)('row-level rules and module extension points (%s)', (dialect) => {
  let app: PlinthApp;
  let orgId: string;
  let owner: TestUser;
  let admin: TestUser;
  let alice: TestUser;
  let bob: TestUser;
  /** Note ids by author. */
  const notes = new Map<string, string>();

  const writeNote = async (user: TestUser, org: string, body: string) => {
    const res = await app.inject({
      method: 'POST',
      url: `/api/v1/orgs/${org}/notes`,
      headers: bearer(user.accessToken),
      payload: { body },
    });
    expect(res.statusCode).toBe(201);
    return Note.parse(res.json()).id;
  };
  const get = (user: TestUser, url: string) =>
    app.inject({ method: 'GET', url: `/api/v1${url}`, headers: bearer(user.accessToken) });
  const listNotes = async (user: TestUser) => {
    const res = await get(user, `/orgs/${orgId}/notes`);
    expect(res.statusCode).toBe(200);
    return NotesList.parse(res.json()).data;
  };

  beforeAll(async () => {
    app = await buildTestApp(dialect, {
      env: { REQUIRE_EMAIL_VERIFICATION: 'false' },
      modules: [notesModule],
    });
    owner = await signedInUser(app, 'owner@example.com');
    orgId = (await createOrg(app, owner.accessToken)).id;
    admin = await addMember(app, owner.accessToken, orgId, 'admin@example.com', 'admin');
    alice = await addMember(app, owner.accessToken, orgId, 'alice@example.com', 'customer');
    bob = await addMember(app, owner.accessToken, orgId, 'bob@example.com', 'customer');
    notes.set('admin', await writeNote(admin, orgId, 'a: from the admin'));
    notes.set('alice', await writeNote(alice, orgId, 'b: from alice'));
    notes.set('bob', await writeNote(bob, orgId, 'c: from bob'));
  });
  afterAll(async () => {
    await app?.close();
  });

  it('shows a role without a rule every note of its organization', async () => {
    expect((await listNotes(admin)).map((n) => n.body)).toEqual([
      'a: from the admin',
      'b: from alice',
      'c: from bob',
    ]);
    expect((await listNotes(owner)).map((n) => n.id)).toEqual([
      notes.get('admin'),
      notes.get('alice'),
      notes.get('bob'),
    ]);
  });

  it('shows a customer only its own notes', async () => {
    expect(await listNotes(alice)).toEqual([
      { id: notes.get('alice'), ownerId: alice.userId, body: 'b: from alice' },
    ]);
    expect((await listNotes(bob)).map((n) => n.id)).toEqual([notes.get('bob')]);
  });

  it('answers 404 when a customer asks for a note that is not its own', async () => {
    expect((await get(alice, `/orgs/${orgId}/notes/${notes.get('alice')}`)).statusCode).toBe(200);
    expectProblem(await get(alice, `/orgs/${orgId}/notes/${notes.get('bob')}`), 404, 'NOTE_NOT_FOUND');
    expectProblem(await get(alice, `/orgs/${orgId}/notes/${notes.get('admin')}`), 404, 'NOTE_NOT_FOUND');
    expect((await get(admin, `/orgs/${orgId}/notes/${notes.get('bob')}`)).statusCode).toBe(200);
  });

  it('keeps the module’s table inside its organization, even for the owner of another one', async () => {
    const carol = await signedInUser(app, 'carol@example.com');
    const elsewhere = (await createOrg(app, carol.accessToken, 'Elsewhere')).id;
    const theirs = await writeNote(carol, elsewhere, 'd: from carol');

    expect((await listNotes(owner)).map((n) => n.id)).not.toContain(theirs);
    expectProblem(await get(owner, `/orgs/${orgId}/notes/${theirs}`), 404, 'NOTE_NOT_FOUND');
    expectProblem(await get(owner, `/orgs/${elsewhere}/notes/${theirs}`), 404, 'ORG_NOT_FOUND');
    // Through the plain query builder the table cannot be reached at all: it is registered as org-owned.
    const unscoped = app.database.db as unknown as Kysely<TestDb>;
    await expect(unscoped.selectFrom('test_notes').selectAll().execute()).rejects.toThrow(
      UnscopedTenantAccessError,
    );
    // On PostgreSQL the policy also hides every row from SQL that names no organization; SQLite has no such
    // layer, so there hand-written SQL sees the rows.
    const { rows } = await sql<{ n: number }>`select count(*) as n from test_notes`.execute(app.database.db);
    expect(Number(rows[0]?.n)).toBe(dialect === 'postgres' ? 0 : 4);
  });

  it('lets custom roles use the module’s permissions: one with notes:read only sees all notes but cannot write', async () => {
    const created = await app.inject({
      method: 'POST',
      url: `/api/v1/orgs/${orgId}/roles`,
      headers: bearer(owner.accessToken),
      payload: { name: 'reader', permissions: ['notes:read'] },
    });
    expect(created.statusCode).toBe(201);
    const reader = await addMember(app, owner.accessToken, orgId, 'reader@example.com', 'reader');

    expect((await listNotes(reader)).map((n) => n.id)).toEqual([
      notes.get('admin'),
      notes.get('alice'),
      notes.get('bob'),
    ]);
    const res = await app.inject({
      method: 'POST',
      url: `/api/v1/orgs/${orgId}/notes`,
      headers: bearer(reader.accessToken),
      payload: { body: 'z: from the reader' },
    });
    expectProblem(res, 403, 'PERMISSION_DENIED');
    expect(res.json()).toMatchObject({ permission: 'notes:create' });
  });

  it('lists the module’s role as built in, and its permissions in /permissions', async () => {
    const roles = Page(Role).parse((await get(owner, `/orgs/${orgId}/roles`)).json()).data;
    expect(roles.find((r) => r.name === 'customer')).toEqual({
      name: 'customer',
      description: 'Reads and writes only its own notes.',
      permissions: ['notes:create', 'notes:read'],
      builtIn: true,
    });

    const permissions = z
      .object({ data: z.array(Permission) })
      .parse((await get(owner, '/permissions')).json()).data;
    expect(permissions.find((p) => p.name === 'notes:read')).toEqual({
      name: 'notes:read',
      description: 'Read notes.',
      roles: ['owner', 'admin', 'member', 'viewer', 'customer'],
    });
    expect(permissions.find((p) => p.name === 'notes:create')?.roles).toEqual([
      'owner',
      'admin',
      'member',
      'customer',
    ]);
  });
});
