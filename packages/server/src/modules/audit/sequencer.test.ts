import { Worker } from 'node:worker_threads';
import { AuditEvent, AuditVerifyResult, Page } from '@plinth/shared';
import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { buildApp, type PlinthApp } from '../../app.ts';
import { bearer } from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { buildTestApp, createTestDatabase, installationSecrets, testConfig } from '../../test/harness.ts';
import { createOrg, signedInUser } from '../../test/org-helpers.ts';
import { verifyAuditChain } from './audit.service.ts';
import { recordAuditEvent, systemAuditContext } from './record.ts';
import { sequenceChainNow } from './sequencer.ts';

const apps: PlinthApp[] = [];
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()));
});

async function start(dialect: (typeof testDialects)[number], env: Record<string, string> = {}) {
  const app = await buildTestApp(dialect, { env });
  apps.push(app);
  return app;
}

function pending(app: PlinthApp, chain: string) {
  return app.database.withTenant(chain, (db) =>
    db.selectFrom('audit_pending').select(['id', 'action']).orderBy('id').execute(),
  );
}

function chained(app: PlinthApp, chain: string) {
  return app.database.withTenant(chain, (db) =>
    db.selectFrom('audit_events').select(['id', 'seq', 'action']).orderBy('seq').execute(),
  );
}

/** Records `count` events on `chain`, each in a transaction of its own, as `count` separate changes would. */
function recordMany(app: PlinthApp, chain: string, count: number, action = 'test.happened') {
  return Promise.all(
    Array.from({ length: count }, () =>
      app.database.withTenant(chain, (db) =>
        recordAuditEvent(db, systemAuditContext(chain, 'test', app.clock), { action }),
      ),
    ),
  );
}

describe.each(testDialects)('audit sequencer (%s)', (dialect) => {
  it('gives a change its event at once, to a reader, with no background sequencer', async () => {
    // The test configuration leaves the background sequencer practically idle (a pass a minute).
    const app = await start(dialect);
    const owner = await signedInUser(app, 'owner@example.test');
    const { id: orgId } = await createOrg(app, owner.accessToken);
    expect((await pending(app, orgId)).map((p) => p.action)).toEqual(['org.created']);
    const res = await app.inject({
      method: 'GET',
      url: `/api/v1/orgs/${orgId}/audit`,
      headers: bearer(owner.accessToken),
    });
    expect(res.statusCode).toBe(200);
    const page = Page(AuditEvent).parse(res.json());
    expect(page.data.map((e) => [e.seq, e.action])).toEqual([[1, 'org.created']]);
    // What is pending now is the record of that reading, which the next reader will find in the chain.
    expect((await pending(app, orgId)).map((p) => p.action)).toEqual(['audit.viewed']);
  });

  it('chains committed events in the background, without a reader', async () => {
    const app = await start(dialect, { AUDIT_SEQUENCE_INTERVAL_MS: '20' });
    await app.ready();
    const chain = 'platform';
    await recordMany(app, chain, 5);
    await expect.poll(async () => (await pending(app, chain)).length, { timeout: 10_000 }).toBe(0);
    expect((await chained(app, chain)).map((e) => Number(e.seq))).toEqual([1, 2, 3, 4, 5]);
  });

  it('refuses to change a pending event, or to delete one that is not in its chain', async () => {
    const app = await start(dialect);
    const chain = 'platform';
    await recordMany(app, chain, 1, 'test.kept');
    const [event] = await pending(app, chain);
    expect(event).toBeDefined();
    await expect(
      app.database.withTenant(chain, (db) =>
        db.updateTable('audit_pending').set({ action: 'test.forged' }).where('org_id', '=', chain).execute(),
      ),
    ).rejects.toThrow(/never changed/);
    await expect(
      app.database.withTenant(chain, (db) =>
        db.deleteFrom('audit_pending').where('org_id', '=', chain).execute(),
      ),
    ).rejects.toThrow(/only once it is in its chain/);
    if (dialect === 'postgres') {
      await expect(
        app.database.acrossTenants((db) => sql`truncate audit_pending`.execute(db)),
      ).rejects.toThrow(/only once it is in its chain/);
    }
    expect(await pending(app, chain)).toEqual([event]);
    // Chained, its pending row goes: the sequencer's delete passes the same trigger.
    expect(await sequenceChainNow(app.database, chain)).toBe(1);
    expect(await pending(app, chain)).toEqual([]);
    expect(await chained(app, chain)).toEqual([{ id: event?.id, seq: 1, action: 'test.kept' }]);
  });

  it('chains every event exactly once, in one unforked chain, with sequencers racing the writers', async () => {
    // On PostgreSQL two replicas of one installation; SQLite has one writer, so one app's concurrent calls.
    const database = await createTestDatabase(dialect, { migrated: true });
    const env = { ...installationSecrets(), AUDIT_SEQUENCE_INTERVAL_MS: '10' };
    const first = await buildApp(testConfig(database, env));
    apps.push(first);
    const second = dialect === 'postgres' ? await buildApp(testConfig(database, env)) : first;
    if (second !== first) apps.push(second);
    await Promise.all([first.ready(), second.ready()]);
    const owner = await signedInUser(first, 'owner@example.test');
    const { id: orgId } = await createOrg(first, owner.accessToken);

    const sequencers = Array.from({ length: 6 }, (_, i) => (i % 2 === 0 ? first : second));
    await Promise.all([
      recordMany(first, orgId, 40),
      recordMany(second, orgId, 40),
      ...sequencers.map((app) => sequenceChainNow(app.database, orgId)),
    ]);
    // Whatever the race left pending, a last reader chains.
    await sequenceChainNow(second.database, orgId);

    const events = await chained(first, orgId);
    expect(events.map((e) => Number(e.seq))).toEqual(Array.from({ length: 81 }, (_, i) => i + 1));
    expect(new Set(events.map((e) => e.id)).size).toBe(81);
    expect(await pending(first, orgId)).toEqual([]);
    const verified = await first.inject({
      method: 'GET',
      url: `/api/v1/orgs/${orgId}/audit/verify`,
      headers: bearer(owner.accessToken),
    });
    expect(AuditVerifyResult.parse(verified.json())).toEqual({ ok: true, checked: 81 });
  });
});

/** Opens the database (node:sqlite where Node has it, else better-sqlite3), holds its write lock 300 ms, commits. */
const OTHER_PROCESS = `
const { parentPort, workerData } = require('node:worker_threads');
let db;
try { db = new (require('node:sqlite').DatabaseSync)(workerData.path); } catch { db = new (require('better-sqlite3'))(workerData.path); }
db.exec('PRAGMA busy_timeout = 5000');
db.exec('BEGIN IMMEDIATE');
db.exec("insert into audit_pending (id, org_id, at, actor_type, actor_id, action, outcome) values ('01a23774-7895-7041-ac7f-05edabe4e137', 'user:other', '2026-12-02T00:00:00.000Z', 'system', 'cli', 'test.elsewhere', 'success')");
parentPort.postMessage('locked');
setTimeout(() => { db.exec('COMMIT'); db.close(); parentPort.postMessage('committed'); }, 300);
`;

describe('audit sequencer beside another process (sqlite)', () => {
  it("waits for the other connection's write instead of failing when it commits mid-way", async () => {
    const app = await start('sqlite');
    const chain = 'platform';
    await recordMany(app, chain, 1);
    const config = app.config.database;
    if (config.dialect !== 'sqlite') throw new Error('an SQLite test');
    // Another process (a CLI command; a thread here, since this one blocks while SQLite waits for a lock) holds
    // the write lock, and commits a change while the sequencer waits for it.
    const other = new Worker(OTHER_PROCESS, { eval: true, workerData: { path: config.path } });
    const said = (word: string) =>
      new Promise<void>((resolve, reject) => {
        other.once('message', (message) =>
          message === word ? resolve() : reject(new Error(String(message))),
        );
        other.once('error', reject);
      });
    try {
      await said('locked');
      // A transaction that read before the commit could not write after it ("database is locked", at once);
      // the sequencer takes the write lock first, so it waits, and then goes on.
      expect(await verifyAuditChain(app.database, chain)).toEqual({ ok: true, checked: 1 });
      await said('committed');
    } finally {
      await other.terminate();
    }
    expect(await pending(app, 'user:other')).toHaveLength(1);
  });
});
