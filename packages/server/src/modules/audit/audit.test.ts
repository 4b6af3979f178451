import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { AuditEvent, AuditVerifyResult, Page } from '@plinth/shared';
import type { LightMyRequestResponse } from 'fastify';
import { type Selectable, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type PlinthApp } from '../../app.ts';
import type { Dialect } from '../../db/database.ts';
import type { AuditEventsTable } from '../../db/schema.ts';
import { openSqliteConnection } from '../../db/sqlite-driver.ts';
import { bearer, createFakeClock, DAY, expectProblem, login, PASSWORD } from '../../test/auth-helpers.ts';
import { type CliResult, runPlinth } from '../../test/cli.ts';
import { testDialects, testPostgresUrl } from '../../test/dialects.ts';
import { buildTestApp, createTestDatabase, type TestDatabase, testConfig } from '../../test/harness.ts';
import { addMember, createApiKey, createOrg, signedInUser, type TestUser } from '../../test/org-helpers.ts';
import { GENESIS_HASH } from './audit.chain.ts';
import { csvField } from './audit.service.ts';
import { fieldChanges, REDACTED, recordAuditEvent, systemAuditContext } from './record.ts';
import { sequenceChain } from './sequencer.ts';

/** The repository root, where `node packages/server/bin/plinth.js` is run from. */

const EventPage = Page(AuditEvent);
type EventRow = Selectable<AuditEventsTable>;

/**
 * Every stored event of `orgId`, in chain order, read through the tenant scope as the application would: the
 * chain sequenced first, as every reader does.
 */
function storedEvents(app: PlinthApp, orgId: string): Promise<EventRow[]> {
  return app.database.withTenant(orgId, async (db) => {
    await sequenceChain(db, orgId);
    return db.selectFrom('audit_events').selectAll().orderBy('seq').execute();
  });
}

/**
 * Every row of the audit tables of every organization, pending events included, as one string, to search for
 * secrets.
 */
async function wholeAuditTable(app: PlinthApp): Promise<string> {
  const rows = await app.database.acrossTenants(async (db) => [
    ...(await db.selectFrom('audit_pending').selectAll().execute()),
    ...(await db.selectFrom('audit_events').selectAll().execute()),
    ...(await db.selectFrom('audit_chain_heads').selectAll().execute()),
  ]);
  return JSON.stringify(rows);
}

/**
 * Runs SQL on the test's database past the application's protections: on SQLite on a connection of its own
 * (triggers can be dropped there), on PostgreSQL as the superuser of TEST_DATABASE_URL in the test's schema.
 */
async function rawSql(app: PlinthApp, statements: string[]): Promise<void> {
  const config = app.config.database;
  if (config.dialect === 'sqlite') {
    const connection = openSqliteConnection(config.path);
    try {
      for (const statement of statements) connection.exec(statement);
    } finally {
      connection.close();
    }
    return;
  }
  const options = new URL(config.url).searchParams.get('options') ?? '';
  const schema = /search_path=(\w+)/.exec(options)?.[1];
  if (!schema) throw new Error(`no search_path in ${config.url}`);
  const client = new pg.Client({ connectionString: testPostgresUrl });
  await client.connect();
  try {
    await client.query(`set search_path to ${schema}`);
    for (const statement of statements) await client.query(statement);
  } finally {
    await client.end();
  }
}

/** SQL that changes a stored event's column while the triggers look away. */
function tamperStatements(dialect: Dialect, update: string): string[] {
  return dialect === 'sqlite'
    ? [
        'DROP TRIGGER IF EXISTS audit_events_no_update',
        'DROP TRIGGER IF EXISTS audit_events_no_delete',
        update,
      ]
    : ['set session_replication_role = replica', update, 'set session_replication_role = origin'];
}

function verify(app: PlinthApp, user: TestUser, orgId: string) {
  return app.inject({
    method: 'GET',
    url: `/api/v1/orgs/${orgId}/audit/verify`,
    headers: bearer(user.accessToken),
  });
}

async function verifyResult(app: PlinthApp, user: TestUser, orgId: string): Promise<AuditVerifyResult> {
  const res = await verify(app, user, orgId);
  expect(res.statusCode).toBe(200);
  return AuditVerifyResult.parse(res.json());
}

function rotate(app: PlinthApp, user: TestUser, orgId: string, keyId: string) {
  return app.inject({
    method: 'POST',
    url: `/api/v1/orgs/${orgId}/apikeys/${keyId}/rotate`,
    headers: bearer(user.accessToken),
    payload: {},
  });
}

function revoke(app: PlinthApp, user: TestUser, orgId: string, keyId: string) {
  return app.inject({
    method: 'DELETE',
    url: `/api/v1/orgs/${orgId}/apikeys/${keyId}`,
    headers: bearer(user.accessToken),
  });
}

function expectOk(res: LightMyRequestResponse, status = 200): void {
  if (res.statusCode !== status) throw new Error(`expected ${status}, got ${res.statusCode}: ${res.body}`);
}

describe('fieldChanges', () => {
  it('keeps only the fields that changed, compared deeply', () => {
    expect(
      fieldChanges({ name: 'a', scopes: ['x'], same: [1] }, { name: 'b', scopes: ['x', 'y'], same: [1] }),
    ).toEqual({ name: { before: 'a', after: 'b' }, scopes: { before: ['x'], after: ['x', 'y'] } });
  });

  it('redacts listed fields and any field whose name looks secret, saying only that it changed', () => {
    const changes = fieldChanges(
      { pin: '1234', passwordHash: 'old-hash', apiToken: null, note: 'x' },
      { pin: '9999', passwordHash: 'new-hash', apiToken: 'tok', note: 'y' },
      { redact: ['pin'] },
    );
    expect(changes).toEqual({
      pin: { before: REDACTED, after: REDACTED },
      passwordHash: { before: REDACTED, after: REDACTED },
      apiToken: { before: null, after: REDACTED },
      note: { before: 'x', after: 'y' },
    });
  });

  it('treats a missing side as a creation or a deletion', () => {
    expect(fieldChanges(null, { role: 'admin' })).toEqual({ role: { before: null, after: 'admin' } });
    expect(fieldChanges({ role: 'admin' }, null)).toEqual({ role: { before: 'admin', after: null } });
  });
});

describe('csvField', () => {
  it('quotes fields with commas, quotes, line breaks or edge spaces, doubling quotes', () => {
    expect(csvField('plain')).toBe('plain');
    expect(csvField('a,b')).toBe('"a,b"');
    expect(csvField('say "hi"')).toBe('"say ""hi"""');
    expect(csvField('two\nlines')).toBe('"two\nlines"');
    expect(csvField(' padded')).toBe('" padded"');
    expect(csvField(null)).toBe('');
    expect(csvField(7)).toBe('7');
    expect(csvField(-7)).toBe('-7');
    expect(csvField('=HYPERLINK("http://x.test")')).toBe(`"'=HYPERLINK(""http://x.test"")"`);
    expect(csvField('@SUM(A1)')).toBe("'@SUM(A1)");
    expect(csvField('+1')).toBe("'+1");
  });
});

describe.each(testDialects)('audit log (%s)', (dialect) => {
  let app: PlinthApp;
  let owner: TestUser;
  let admin: TestUser;
  let viewer: TestUser;
  let member: TestUser;
  let orgId: string;
  let stranger: TestUser;
  let strangerOrgId: string;

  beforeAll(async () => {
    app = await buildTestApp(dialect);
    owner = await signedInUser(app, 'owner@example.test');
    ({ id: orgId } = await createOrg(app, owner.accessToken));
    admin = await addMember(app, owner.accessToken, orgId, 'admin@example.test', 'admin');
    viewer = await addMember(app, owner.accessToken, orgId, 'viewer@example.test', 'viewer');
    member = await addMember(app, owner.accessToken, orgId, 'member@example.test', 'member');
    stranger = await signedInUser(app, 'stranger@example.test');
    ({ id: strangerOrgId } = await createOrg(app, stranger.accessToken, 'Elsewhere'));
  });
  afterAll(async () => {
    await app?.close();
  });

  describe('events of the instrumented actions', () => {
    it('records a key creation, rotation and revocation with actor, request, target and redacted changes', async () => {
      const created = await app.inject({
        method: 'POST',
        url: `/api/v1/orgs/${orgId}/apikeys`,
        headers: {
          ...bearer(admin.accessToken),
          'user-agent': 'audit-test/1.0',
          'x-request-id': 'req-create-1',
        },
        payload: { name: 'ci', scopes: ['members:read'] },
      });
      expectOk(created, 201);
      const key = created.json<{ id: string; key: string }>();
      const rotated = await rotate(app, admin, orgId, key.id);
      expectOk(rotated);
      const newSecret = rotated.json<{ key: string }>().key;
      expectOk(await revoke(app, admin, orgId, key.id), 204);

      const events = (await storedEvents(app, orgId)).filter((e) => e.target_id === key.id);
      expect(events.map((e) => e.action)).toEqual(['apikey.created', 'apikey.rotated', 'apikey.revoked']);
      const [creation, rotation, revocation] = events;
      expect(creation).toMatchObject({
        org_id: orgId,
        actor_type: 'user',
        actor_id: admin.userId,
        target_type: 'apikey',
        request_id: 'req-create-1',
        ip: '127.0.0.1',
        user_agent: 'audit-test/1.0',
        outcome: 'success',
        erased_at: null,
      });
      expect(creation?.actor_via).toMatch(/^[0-9a-f-]{36}$/);
      expect(JSON.parse(creation?.changes ?? 'null')).toEqual({
        name: { before: null, after: 'ci' },
        scopes: { before: null, after: ['members:read'] },
      });
      expect(JSON.parse(rotation?.changes ?? 'null')).toMatchObject({
        secretHash: { before: REDACTED, after: REDACTED },
      });
      expect(JSON.parse(revocation?.changes ?? 'null').revokedAt.before).toBeNull();

      // No secret, and no hash of one, is anywhere in the audit tables.
      const keyRow = await app.database.withTenant(orgId, (db) =>
        db.selectFrom('api_keys').selectAll().where('id', '=', key.id).executeTakeFirstOrThrow(),
      );
      const everything = await wholeAuditTable(app);
      for (const secret of [key.key, newSecret, keyRow.secret_hash, keyRow.previous_secret_hash ?? 'none']) {
        expect(everything).not.toContain(secret);
        expect(everything).not.toContain(secret.slice(-20));
      }
    });

    it('records no event for a revocation that changes nothing', async () => {
      const key = await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
      expectOk(await revoke(app, owner, orgId, key.id), 204);
      expectOk(await revoke(app, owner, orgId, key.id), 204);
      const revocations = (await storedEvents(app, orgId)).filter(
        (e) => e.target_id === key.id && e.action === 'apikey.revoked',
      );
      expect(revocations).toHaveLength(1);
    });

    it('records a role change, a removal and an organization update', async () => {
      const leaving = await addMember(app, owner.accessToken, orgId, 'leaving@example.test', 'viewer');
      expectOk(
        await app.inject({
          method: 'PATCH',
          url: `/api/v1/orgs/${orgId}/members/${leaving.userId}`,
          headers: bearer(owner.accessToken),
          payload: { role: 'member' },
        }),
      );
      expectOk(
        await app.inject({
          method: 'DELETE',
          url: `/api/v1/orgs/${orgId}/members/${leaving.userId}`,
          headers: bearer(owner.accessToken),
        }),
        204,
      );
      expectOk(
        await app.inject({
          method: 'PATCH',
          url: `/api/v1/orgs/${orgId}`,
          headers: bearer(owner.accessToken),
          payload: { name: 'Acme Renamed' },
        }),
      );

      const events = await storedEvents(app, orgId);
      const forLeaving = events.filter((e) => e.target_id === leaving.userId);
      expect(forLeaving.map((e) => [e.action, e.target_type, JSON.parse(e.changes ?? 'null')])).toEqual([
        [
          'member.added',
          'user',
          { accountCreated: { before: null, after: false }, role: { before: null, after: 'viewer' } },
        ],
        ['member.role_changed', 'user', { role: { before: 'viewer', after: 'member' } }],
        ['member.removed', 'user', { role: { before: 'member', after: null } }],
      ]);
      const update = events.findLast((e) => e.action === 'org.updated');
      expect(update).toMatchObject({ target_type: 'org', target_id: orgId, actor_id: owner.userId });
      expect(JSON.parse(update?.changes ?? 'null')).toEqual({
        name: { before: 'Acme Logistics', after: 'Acme Renamed' },
      });
    });

    it('writes nothing when the action is refused', async () => {
      const before = (await storedEvents(app, orgId)).length;
      const res = await app.inject({
        method: 'PATCH',
        url: `/api/v1/orgs/${orgId}/members/${owner.userId}`,
        headers: bearer(admin.accessToken),
        payload: { role: 'viewer' },
      });
      expectProblem(res, 403, 'ROLE_NOT_GRANTABLE');
      expect(await storedEvents(app, orgId)).toHaveLength(before);
    });
  });

  describe('atomicity', () => {
    it('rolls back an appended event with the transaction that failed after it', async () => {
      const before = await storedEvents(app, orgId);
      const failure = new Error('forced failure after the append');
      await expect(
        app.database.withTenant(orgId, async (db) => {
          await recordAuditEvent(db, systemAuditContext(orgId, 'test', app.clock), { action: 'test.failed' });
          throw failure;
        }),
      ).rejects.toBe(failure);
      expect(await storedEvents(app, orgId)).toEqual(before);
      expect((await verifyResult(app, owner, orgId)).ok).toBe(true);
    });
  });

  describe('reading', () => {
    it('lists events newest first, filtered, in pages that join up', async () => {
      const keys = [];
      for (let i = 0; i < 3; i++) {
        keys.push(
          await createApiKey(app, owner.accessToken, orgId, { name: `page-${i}`, scopes: ['members:read'] }),
        );
      }
      const all = await app.inject({
        method: 'GET',
        url: `/api/v1/orgs/${orgId}/audit?limit=100`,
        headers: bearer(admin.accessToken),
      });
      expectOk(all);
      const events = EventPage.parse(all.json()).data;
      const seqs = events.map((e) => e.seq);
      expect(seqs).toEqual([...seqs].sort((a, b) => b - a));
      expect(events[0]).toMatchObject({
        orgId,
        action: 'apikey.created',
        actor: { type: 'user', id: owner.userId },
        target: { type: 'apikey', id: keys[2]?.id },
        outcome: 'success',
        ip: '127.0.0.1',
      });
      expect(events[0]?.actor.via).toBeDefined();
      expect(events[0]?.changes?.name).toEqual({ before: null, after: 'page-2' });

      // Two events per page, ascending, collected through the cursors: every event once, in order. Each page
      // read is itself recorded (`audit.viewed`), so the walk also meets the events of its own reads.
      const collected: number[] = [];
      let cursor: string | null = null;
      do {
        const url = `/api/v1/orgs/${orgId}/audit?limit=2&sort=seq${cursor ? `&cursor=${cursor}` : ''}`;
        const page = EventPage.parse(
          (await app.inject({ method: 'GET', url, headers: bearer(admin.accessToken) })).json(),
        );
        collected.push(...page.data.map((e) => e.seq));
        cursor = page.nextCursor;
      } while (cursor);
      const newest = seqs[0] ?? 0;
      expect(collected.filter((seq) => seq <= newest)).toEqual([...seqs].reverse());
      expect(collected.filter((seq) => seq > newest).length).toBeGreaterThan(0);

      const filtered = async (query: string) =>
        EventPage.parse(
          (
            await app.inject({
              method: 'GET',
              url: `/api/v1/orgs/${orgId}/audit?${query}`,
              headers: bearer(admin.accessToken),
            })
          ).json(),
        ).data;
      expect((await filtered(`targetType=apikey&targetId=${keys[1]?.id}`)).map((e) => e.target?.id)).toEqual([
        keys[1]?.id,
      ]);
      const byAction = await filtered('action=apikey.created&limit=100');
      expect(byAction.length).toBeGreaterThanOrEqual(3);
      expect(byAction.every((e) => e.action === 'apikey.created')).toBe(true);
      const byActor = await filtered(`actorId=${admin.userId}&limit=100`);
      expect(byActor.length).toBeGreaterThan(0);
      expect(byActor.every((e) => e.actor.id === admin.userId)).toBe(true);
      const at = events[0]?.at ?? '';
      expect(await filtered(`from=${encodeURIComponent(at)}&limit=100`)).not.toHaveLength(0);
      expect((await filtered(`from=${encodeURIComponent(at)}&limit=100`)).every((e) => e.at >= at)).toBe(
        true,
      );
      expect(await filtered(`to=${encodeURIComponent(events.at(-1)?.at ?? '')}`)).toHaveLength(0);
    });

    it('refuses an empty time range and a malformed filter', async () => {
      expectProblem(
        await app.inject({
          method: 'GET',
          url: `/api/v1/orgs/${orgId}/audit?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z`,
          headers: bearer(admin.accessToken),
        }),
        400,
        'AUDIT_RANGE_INVALID',
      );
      expectProblem(
        await app.inject({
          method: 'GET',
          url: `/api/v1/orgs/${orgId}/audit?from=yesterday`,
          headers: bearer(admin.accessToken),
        }),
        400,
        'VALIDATION_FAILED',
      );
    });

    it('exports every event as NDJSON and as CSV, as an attachment', async () => {
      const stored = await storedEvents(app, orgId);
      const ndjson = await app.inject({
        method: 'GET',
        url: `/api/v1/orgs/${orgId}/audit/export?format=ndjson`,
        headers: bearer(admin.accessToken),
      });
      expectOk(ndjson);
      expect(ndjson.headers['content-type']).toMatch(/^application\/x-ndjson/);
      expect(ndjson.headers['content-disposition']).toBe(`attachment; filename="audit-${orgId}.ndjson"`);
      const lines = ndjson.body
        .trimEnd()
        .split('\n')
        .map((line) => AuditEvent.parse(JSON.parse(line)));
      // Every stored event, then the export's own: a sensitive read is recorded before it is served.
      const lastSeq = Number(stored.at(-1)?.seq);
      expect(lines.map((e) => e.seq)).toEqual([...stored.map((e) => Number(e.seq)), lastSeq + 1]);
      expect(lines.at(-1)).toMatchObject({ action: 'audit.exported', actor: { id: admin.userId } });
      expect(lines[0]?.orgId).toBe(orgId);

      const csv = await app.inject({
        method: 'GET',
        url: `/api/v1/orgs/${orgId}/audit/export?format=csv&action=apikey.created`,
        headers: bearer(admin.accessToken),
      });
      expectOk(csv);
      expect(csv.headers['content-type']).toMatch(/^text\/csv/);
      expect(csv.headers['content-disposition']).toBe(`attachment; filename="audit-${orgId}.csv"`);
      const rows = csv.body.trimEnd().split('\r\n');
      expect(rows[0]).toBe(
        'seq,at,orgId,actorType,actorId,actorVia,action,targetType,targetId,requestId,ip,userAgent,outcome,changes',
      );
      const created = stored.filter((e) => e.action === 'apikey.created');
      expect(rows).toHaveLength(created.length + 1);
      const first = created[0];
      expect(rows[1]?.startsWith(`${first?.seq},${first?.at},${orgId},user,${first?.actor_id},`)).toBe(true);
      // The changes column holds JSON, which has commas and quotes: quoted, with quotes doubled.
      expect(rows[1]).toContain(`"${(first?.changes ?? '').replaceAll('"', '""')}"`);
    });

    it('verifies an intact chain', async () => {
      const result = await verifyResult(app, admin, orgId);
      expect(result).toEqual({ ok: true, checked: (await storedEvents(app, orgId)).length });
      expect(result.checked).toBeGreaterThan(5);
      expect((await storedEvents(app, orgId))[0]?.prev_hash).toBe(GENESIS_HASH);
    });
  });

  describe('access', () => {
    const paths = ['audit', 'audit/verify', 'audit/export?format=csv'];

    it('requires authentication', async () => {
      for (const path of paths) {
        expectProblem(
          await app.inject({ method: 'GET', url: `/api/v1/orgs/${orgId}/${path}` }),
          401,
          'UNAUTHENTICATED',
        );
      }
    });

    it('refuses members without audit:read, naming it', async () => {
      for (const who of [viewer, member]) {
        for (const path of paths) {
          const res = await app.inject({
            method: 'GET',
            url: `/api/v1/orgs/${orgId}/${path}`,
            headers: bearer(who.accessToken),
          });
          expect(res.statusCode).toBe(403);
          expect(res.json().permission).toBe('audit:read');
        }
      }
    });

    it('answers 404 for another organization, and never shows its events', async () => {
      for (const path of paths) {
        const res = await app.inject({
          method: 'GET',
          url: `/api/v1/orgs/${strangerOrgId}/${path}`,
          headers: bearer(owner.accessToken),
        });
        expect(res.statusCode).toBe(404);
      }
      const own = EventPage.parse(
        (
          await app.inject({
            method: 'GET',
            url: `/api/v1/orgs/${orgId}/audit?limit=100`,
            headers: bearer(owner.accessToken),
          })
        ).json(),
      ).data;
      expect(own.every((e) => e.orgId === orgId)).toBe(true);
      // The stranger's organization holds its creation only: nothing of this organization's reads reached it.
      expect(await verifyResult(app, stranger, strangerOrgId)).toEqual({ ok: true, checked: 1 });
    });

    it('lets an API key with audit:read read the log', async () => {
      const key = await createApiKey(app, owner.accessToken, orgId, { scopes: ['audit:read'] });
      const res = await app.inject({
        method: 'GET',
        url: `/api/v1/orgs/${orgId}/audit/verify`,
        headers: { authorization: `Bearer ${key.key}` },
      });
      expect(res.statusCode).toBe(200);
      expect(res.json().ok).toBe(true);
    });
  });

  describe('database protection', () => {
    it('refuses an update and a delete of an event from the application connection', async () => {
      const [first] = await storedEvents(app, orgId);
      expect(first).toBeDefined();
      await expect(
        app.database.withTenant(orgId, (db) =>
          db.updateTable('audit_events').set({ action: 'apikey.forged' }).where('seq', '=', 1).execute(),
        ),
      ).rejects.toThrow(/append-only/);
      // Even an "erasure" that also changes a chained column is refused.
      await expect(
        app.database.withTenant(orgId, (db) =>
          db
            .updateTable('audit_events')
            .set({ ip: null, erased_at: app.clock.now().toISOString(), outcome: 'denied' })
            .where('seq', '=', 1)
            .execute(),
        ),
      ).rejects.toThrow(/append-only/);
      await expect(
        app.database.withTenant(orgId, (db) => db.deleteFrom('audit_events').where('seq', '=', 1).execute()),
      ).rejects.toThrow(/archived/);
      if (dialect === 'postgres') {
        // TRUNCATE fires no row trigger; a statement trigger refuses it.
        await expect(
          app.database.acrossTenants((db) => sql`truncate audit_events`.execute(db)),
        ).rejects.toThrow(/archived/);
      }
      expect((await storedEvents(app, orgId))[0]).toEqual(first);
    });
  });

  describe('concurrent writers', () => {
    it('keep one chain: 20 parallel key creations get contiguous seqs and the chain verifies', async () => {
      const founder = await signedInUser(app, 'busy@example.test');
      const { id: busyOrg } = await createOrg(app, founder.accessToken, 'Busy');
      const answers = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          app.inject({
            method: 'POST',
            url: `/api/v1/orgs/${busyOrg}/apikeys`,
            headers: bearer(founder.accessToken),
            payload: { name: `parallel-${i}`, scopes: ['members:read'] },
          }),
        ),
      );
      expect(answers.map((a) => a.statusCode)).toEqual(Array(20).fill(201));
      const events = await storedEvents(app, busyOrg);
      // The organization's creation, then the 20 keys.
      expect(events.map((e) => Number(e.seq))).toEqual(Array.from({ length: 21 }, (_, i) => i + 1));
      expect(new Set(events.map((e) => e.prev_hash)).size).toBe(21);
      expect(await verifyResult(app, founder, busyOrg)).toEqual({ ok: true, checked: 21 });
    });
  });
});

describe.each(testDialects)('tamper evidence (%s)', (dialect) => {
  let app: PlinthApp;
  let owner: TestUser;
  let orgId: string;

  beforeAll(async () => {
    app = await buildTestApp(dialect);
    owner = await signedInUser(app, 'owner@example.test');
    ({ id: orgId } = await createOrg(app, owner.accessToken));
    for (let i = 0; i < 4; i++)
      await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
  });
  afterAll(async () => {
    await app?.close();
  });

  /** Makes every write of `table` fail until the returned function is called. */
  async function failWritesTo(table: 'audit_pending' | 'audit_chain_heads', when: 'insert' | 'update') {
    await rawSql(
      app,
      dialect === 'sqlite'
        ? [`CREATE TRIGGER fail_write BEFORE ${when} ON ${table} BEGIN SELECT RAISE(ABORT, 'forced'); END`]
        : [
            "create function fail_write() returns trigger language plpgsql as $$ begin raise exception 'forced'; end $$",
            `create trigger fail_write before ${when} on ${table} for each row execute function fail_write()`,
          ],
    );
    return () =>
      rawSql(
        app,
        dialect === 'sqlite'
          ? ['DROP TRIGGER fail_write']
          : [`drop trigger fail_write on ${table}`, 'drop function fail_write()'],
      );
  }

  it('rolls back a key rotation whose event could not be written: neither the rotation nor the event stays', async () => {
    const key = await createApiKey(app, owner.accessToken, orgId, {
      name: 'doomed',
      scopes: ['members:read'],
    });
    const keyRow = () =>
      app.database.withTenant(orgId, (db) =>
        db.selectFrom('api_keys').selectAll().where('id', '=', key.id).executeTakeFirstOrThrow(),
      );
    const before = { key: await keyRow(), events: await storedEvents(app, orgId) };
    // The rotation is written, then its event's insert fails: the whole transaction must roll back.
    const restore = await failWritesTo('audit_pending', 'insert');
    try {
      expect((await rotate(app, owner, orgId, key.id)).statusCode).toBe(500);
      expect(await keyRow()).toEqual(before.key);
      expect(await storedEvents(app, orgId)).toEqual(before.events);
    } finally {
      await restore();
    }
    // The same request succeeds once the failure is gone, and the chain was never touched.
    expectOk(await rotate(app, owner, orgId, key.id));
    expect((await storedEvents(app, orgId)).length).toBe(before.events.length + 1);
    expect(await verifyResult(app, owner, orgId)).toEqual({ ok: true, checked: before.events.length + 1 });
  });

  it('keeps the event of a committed change pending while its chain cannot be advanced, and chains it later', async () => {
    const key = await createApiKey(app, owner.accessToken, orgId, {
      name: 'patient',
      scopes: ['members:read'],
    });
    const before = await storedEvents(app, orgId);
    const restore = await failWritesTo('audit_chain_heads', 'update');
    try {
      // The change does not wait for its chain: it commits with its event pending...
      expectOk(await rotate(app, owner, orgId, key.id));
      const pending = await app.database.withTenant(orgId, (db) =>
        db.selectFrom('audit_pending').select(['action', 'target_id']).execute(),
      );
      expect(pending).toEqual([{ action: 'apikey.rotated', target_id: key.id }]);
      // ...and a reader, which must not see the chain without it, fails rather than answer without it.
      expect((await verify(app, owner, orgId)).statusCode).toBe(500);
    } finally {
      await restore();
    }
    const after = await storedEvents(app, orgId);
    expect(after.map((e) => e.action)).toEqual([...before.map((e) => e.action), 'apikey.rotated']);
    expect(
      await app.database.withTenant(orgId, (db) => db.selectFrom('audit_pending').selectAll().execute()),
    ).toEqual([]);
    expect(await verifyResult(app, owner, orgId)).toEqual({ ok: true, checked: after.length });
  });

  it('still verifies after an erasure pseudonymises the personal fields, which the triggers allow', async () => {
    await app.database.withTenant(orgId, (db) =>
      db
        .updateTable('audit_events')
        .set({
          actor_id: 'erased-0001',
          ip: null,
          user_agent: null,
          changes: null,
          erased_at: app.clock.now().toISOString(),
        })
        .where('seq', '=', 1)
        .execute(),
    );
    const [first] = await storedEvents(app, orgId);
    expect(first).toMatchObject({ actor_id: 'erased-0001', ip: null, changes: null });
    expect(await verifyResult(app, owner, orgId)).toEqual({
      ok: true,
      checked: (await storedEvents(app, orgId)).length,
    });
  });

  it('reports the first edited event: a personal field of an unerased row, then a chained field', async () => {
    await rawSql(app, tamperStatements(dialect, "update audit_events set ip = '10.6.6.6' where seq = 3"));
    expect(await verifyResult(app, owner, orgId)).toEqual({ ok: false, checked: 3, brokenAt: 3 });

    await rawSql(app, tamperStatements(dialect, "update audit_events set ip = '127.0.0.1' where seq = 3"));
    expect((await verifyResult(app, owner, orgId)).ok).toBe(true);

    await rawSql(
      app,
      tamperStatements(dialect, "update audit_events set action = 'apikey.revoked' where seq = 2"),
    );
    expect(await verifyResult(app, owner, orgId)).toEqual({ ok: false, checked: 2, brokenAt: 2 });
  });

  it('reports a removed event at its place in the chain', async () => {
    await rawSql(
      app,
      tamperStatements(dialect, "update audit_events set action = 'apikey.created' where seq = 2"),
    );
    expect((await verifyResult(app, owner, orgId)).ok).toBe(true);
    await rawSql(app, tamperStatements(dialect, 'delete from audit_events where seq = 2'));
    expect(await verifyResult(app, owner, orgId)).toEqual({ ok: false, checked: 2, brokenAt: 2 });
  });
});

/** Runs `plinth <args>` against a test database. */
function runCli(db: TestDatabase, args: string[]): Promise<CliResult> {
  return runPlinth(args, { DATABASE_URL: db.url, DATA_DIR: db.dataDir });
}

describe.each(testDialects)('plinth audit verify (%s)', (dialect) => {
  let db: TestDatabase;
  let app: PlinthApp;
  let orgA: string;
  let orgB: string;

  beforeAll(async () => {
    db = await createTestDatabase(dialect);
    app = await buildApp(testConfig(db));
    const owner = await signedInUser(app, 'owner@example.test');
    orgA = (await createOrg(app, owner.accessToken, 'Alpha')).id;
    orgB = (await createOrg(app, owner.accessToken, 'Beta')).id;
    for (const org of [orgA, orgB])
      await createApiKey(app, owner.accessToken, org, { scopes: ['members:read'] });
  });
  afterAll(async () => {
    await app?.close();
    await db?.drop();
  });

  it('exits 0 when every chain verifies, and 1 naming the broken one when one does not', async () => {
    const intact = await runCli(db, ['audit', 'verify']);
    expect(intact).toMatchObject({ code: 0, stderr: '' });
    // Each organization's creation and key, and the accounts' own chains (sign-up, sign-in).
    expect(intact.stdout).toContain(`ok  ${orgA}  (2 events)`);
    expect(intact.stdout).toContain(`ok  ${orgB}  (2 events)`);
    expect(intact.stdout).toMatch(/ok {2}user:[0-9a-f-]+ {2}\(\d+ events\)/);

    await rawSql(
      app,
      tamperStatements(
        dialect,
        `update audit_events set outcome = 'failure' where seq = 1 and org_id = '${orgB}'`,
      ),
    );
    const broken = await runCli(db, ['audit', 'verify']);
    expect(broken.code).toBe(1);
    expect(broken.stdout).toContain(`ok  ${orgA}`);
    expect(broken.stdout).toContain(`broken  ${orgB}  at seq 1`);

    const onlyA = await runCli(db, ['audit', 'verify', '--org', orgA]);
    expect(onlyA.code).toBe(0);
    expect(onlyA.stdout).not.toContain(orgB);
    expect((await runCli(db, ['audit', 'verify', '--org', orgB])).code).toBe(1);
    const malformed = await runCli(db, ['audit', 'verify', '--org', 'not-an-id']);
    expect(malformed.code).toBe(1);
    expect(malformed.stderr).toContain('not an organization id');
  });
});

// PASSWORD is the sign-in password of the helpers' accounts; it must never reach the audit log either.
describe.each(testDialects)('no password in the audit log (%s)', (dialect) => {
  it('holds no password or password hash after members join and change', async () => {
    const app = await buildTestApp(dialect);
    try {
      const owner = await signedInUser(app, 'owner@example.test');
      const { id } = await createOrg(app, owner.accessToken);
      const joiner = await addMember(app, owner.accessToken, id, 'joiner@example.test', 'viewer');
      expectOk(
        await app.inject({
          method: 'PATCH',
          url: `/api/v1/orgs/${id}/members/${joiner.userId}`,
          headers: bearer(owner.accessToken),
          payload: { role: 'admin' },
        }),
      );
      const hashes = await app.database.db.selectFrom('users').select('password_hash').execute();
      const everything = await wholeAuditTable(app);
      expect(everything).toContain('member.role_changed');
      expect(everything).not.toContain(PASSWORD);
      for (const { password_hash } of hashes) expect(everything).not.toContain(password_hash);
    } finally {
      await app.close();
    }
  });
});

describe.each(testDialects)('audit retention (%s)', (dialect) => {
  let app: PlinthApp;
  let owner: TestUser;
  let orgId: string;
  const clock = createFakeClock('2030-09-01T10:00:00.000Z');

  beforeAll(async () => {
    app = await buildTestApp(dialect, { clock });
    owner = await signedInUser(app, 'keeper@example.test');
    ({ id: orgId } = await createOrg(app, owner.accessToken, 'Short Memory'));
  });
  afterAll(async () => {
    await app?.close();
  });

  const setRetention = (days: unknown) =>
    app.inject({
      method: 'PATCH',
      url: `/api/v1/orgs/${orgId}`,
      headers: bearer(owner.accessToken),
      payload: { auditRetentionDays: days },
    });

  it("archives events older than the organization's retention to a file, and the rest of the chain verifies", async () => {
    expectProblem(await setRetention(10), 400, 'VALIDATION_FAILED');
    const set = await setRetention(30);
    expect(set.statusCode).toBe(200);
    expect(set.json()).toMatchObject({ auditRetentionDays: 30 });
    for (let i = 0; i < 3; i++)
      await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
    // The worker's first look sets the schedules' first due times.
    await app.jobs.drain();
    const old = await storedEvents(app, orgId);
    clock.advance(31 * DAY);
    owner = { ...owner, accessToken: (await login(app, owner.email, PASSWORD)).accessToken };
    await createApiKey(app, owner.accessToken, orgId, { scopes: ['members:read'] });
    await app.jobs.drain();

    const remaining = await storedEvents(app, orgId);
    const lastOld = Number(old.at(-1)?.seq);
    expect(remaining.map((e) => Number(e.seq))[0]).toBe(lastOld + 1);
    expect(await verifyResult(app, owner, orgId)).toEqual({ ok: true, checked: remaining.length });

    const archive = await app.database.withTenant(orgId, (db) =>
      db.selectFrom('audit_archives').selectAll().executeTakeFirstOrThrow(),
    );
    expect(archive).toMatchObject({
      from_seq: 1,
      through_seq: lastOld,
      event_count: lastOld,
      head_hash: old.at(-1)?.hash,
    });
    const file = readFileSync(archive.location);
    expect(createHash('sha256').update(file).digest('hex')).toBe(archive.sha256);
    const lines = gunzipSync(file)
      .toString('utf8')
      .trimEnd()
      .split('\n')
      .map((line) => JSON.parse(line) as EventRow);
    expect(lines.map((row) => [Number(row.seq), row.hash])).toEqual(
      old.map((row) => [Number(row.seq), row.hash]),
    );
    expect(lines[0]?.prev_hash).toBe(GENESIS_HASH);
    expect(remaining[0]?.prev_hash).toBe(archive.head_hash);
  });

  it('refuses to move a head back, to change its archived hash without archiving, or to rewrite an archive', async () => {
    const attempts = [
      sql`update audit_chain_heads set archived_through_seq = 0 where org_id = ${orgId}`,
      sql`update audit_chain_heads set archived_hash = ${'f'.repeat(64)} where org_id = ${orgId}`,
      sql`update audit_chain_heads set seq = 0 where org_id = ${orgId}`,
      sql`delete from audit_chain_heads where org_id = ${orgId}`,
      sql`update audit_archives set head_hash = ${'f'.repeat(64)} where org_id = ${orgId}`,
      sql`delete from audit_archives where org_id = ${orgId}`,
    ];
    for (const attempt of attempts) {
      await expect(app.database.withTenant(orgId, (db) => attempt.execute(db))).rejects.toThrow(
        /only moves forward|append-only/,
      );
    }
    expect(await verifyResult(app, owner, orgId)).toMatchObject({ ok: true });
  });

  it('reports a break when the first remaining event no longer links to the archived segment', async () => {
    const first = (await storedEvents(app, orgId))[0];
    await rawSql(
      app,
      tamperStatements(
        dialect,
        `update audit_events set prev_hash = '${'e'.repeat(64)}' where org_id = '${orgId}' and seq = ${first?.seq}`,
      ),
    );
    expect(await verifyResult(app, owner, orgId)).toMatchObject({ ok: false, brokenAt: Number(first?.seq) });
  });
});
