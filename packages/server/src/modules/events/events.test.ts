import { ApiKeyWithSecret } from '@plinth/shared';
import { describe, expect, it } from 'vitest';
import type { PlinthApp } from '../../app.ts';
import { bearer, cleanupAfterEach, createFakeClock, startTestApp } from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { addMember, createOrg, invite, signedInUser, type TestUser } from '../../test/org-helpers.ts';
import { parseKey } from '../apikeys/key-format.ts';
import { createDomainEventCatalogue, defineDomainEvents } from './catalogue.ts';
import { type DomainEvent, RELAY_JOB } from './outbox.ts';

// The domain event outbox on a real database: an event is written in the transaction of its change and relayed
// by a job after the commit — never for a change that rolled back, once per event however often the relay runs —
// and every platform change named in the catalogue publishes its event with the resource's public data and no
// secret.

const cleanups = cleanupAfterEach();
const env = { REQUIRE_EMAIL_VERIFICATION: 'false' };

interface Setup {
  app: PlinthApp;
  owner: TestUser;
  orgId: string;
  heard: DomainEvent[];
}

async function setup(dialect: (typeof testDialects)[number]): Promise<Setup> {
  const app = await startTestApp(dialect, cleanups, { clock: createFakeClock(), env });
  const owner = await signedInUser(app, 'owner@example.test', 'Olive Owner');
  const { id: orgId } = await createOrg(app, owner.accessToken);
  const heard: DomainEvent[] = [];
  app.domainEvents.onCommitted((event) => void heard.push(event));
  return { app, owner, orgId, heard };
}

const rows = (s: Setup) =>
  s.app.database.withTenant(s.orgId, (db) =>
    db.selectFrom('domain_events').selectAll().orderBy('id').execute(),
  );
const relayJobs = (app: PlinthApp) =>
  app.database.db.selectFrom('jobs').select(['id', 'state']).where('name', '=', RELAY_JOB).execute();

describe('the event catalogue', () => {
  it('accepts resource.verb names once and lists them sorted', () => {
    const catalogue = createDomainEventCatalogue();
    catalogue.add(
      defineDomainEvents({ 'booking.created': { description: 'b' }, 'a.b': { description: 'a' } }),
    );
    expect(catalogue.list().map((t) => t.type)).toEqual(['a.b', 'booking.created']);
    expect(catalogue.has('booking.created')).toBe(true);
    expect(() => catalogue.add(defineDomainEvents({ 'a.b': { description: 'again' } }))).toThrow('twice');
    expect(() => defineDomainEvents({ Booking: { description: 'x' } })).toThrow('resource.verb');
  });
});

describe.each(testDialects)('domain event outbox (%s)', (dialect) => {
  it('publishes nothing for a change that rolls back', async () => {
    const s = await setup(dialect);
    const before = (await relayJobs(s.app)).length;
    await expect(
      s.app.database.withTenant(s.orgId, async (db) => {
        await db.updateTable('organizations').set({ name: 'Never' }).where('id', '=', s.orgId).execute();
        await s.app.domainEvents.publish(db, {
          orgId: s.orgId,
          type: 'org.updated',
          data: { name: 'Never' },
        });
        throw new Error('the change fails after publishing');
      }),
    ).rejects.toThrow('the change fails');
    expect(await rows(s)).toEqual([]);
    expect(await relayJobs(s.app)).toHaveLength(before);
    await s.app.jobs.drain();
    expect(s.heard).toEqual([]);

    // A refused request through the API publishes nothing either.
    const refused = await s.app.inject({
      method: 'PATCH',
      url: `/api/v1/orgs/${s.orgId}`,
      headers: bearer(s.owner.accessToken),
      payload: { slug: 'NOT A SLUG' },
    });
    expect(refused.statusCode).toBe(400);
    expect(await rows(s)).toEqual([]);
  });

  it('relays a committed event once to the listeners, after the commit, and marks it relayed', async () => {
    const s = await setup(dialect);
    const res = await s.app.inject({
      method: 'PATCH',
      url: `/api/v1/orgs/${s.orgId}`,
      headers: bearer(s.owner.accessToken),
      payload: { name: 'Acme Outbox' },
    });
    expect(res.statusCode).toBe(200);
    const [row] = await rows(s);
    expect(row).toMatchObject({ type: 'org.updated', relayed_at: null });
    expect(s.heard).toEqual([]);
    await s.app.jobs.drain();
    expect(s.heard).toEqual([
      {
        id: row?.id,
        type: 'org.updated',
        orgId: s.orgId,
        occurredAt: row?.occurred_at,
        data: expect.objectContaining({ id: s.orgId, name: 'Acme Outbox' }),
      },
    ]);
    expect((await rows(s))[0]?.relayed_at).not.toBeNull();
    expect(await s.app.jobs.drain()).toBe(0);
    expect(s.heard).toHaveLength(1);
  });

  it('keeps relaying when a listener fails', async () => {
    const s = await setup(dialect);
    s.app.domainEvents.onCommitted(() => {
      throw new Error('listener bug');
    });
    await s.app.inject({
      method: 'PATCH',
      url: `/api/v1/orgs/${s.orgId}`,
      headers: bearer(s.owner.accessToken),
      payload: { name: 'Acme Sturdy' },
    });
    await s.app.jobs.drain();
    expect(s.heard).toHaveLength(1);
    expect((await relayJobs(s.app)).every((j) => j.state === 'succeeded')).toBe(true);
  });

  it('refuses to publish a type the catalogue does not declare', async () => {
    const s = await setup(dialect);
    await expect(
      s.app.database.withTenant(s.orgId, (db) =>
        s.app.domainEvents.publish(db, { orgId: s.orgId, type: 'thing.exploded', data: {} }),
      ),
    ).rejects.toThrow('not in the catalogue');
  });

  it('publishes every platform event with the resource’s public data and never a secret', async () => {
    const s = await setup(dialect);
    const token = s.owner.accessToken;
    const api = (method: 'POST' | 'PATCH' | 'DELETE', url: string, payload?: object) =>
      s.app.inject({ method, url, headers: bearer(token), ...(payload ? { payload } : {}) });
    const invitationToken = await invite(s.app, token, s.orgId, 'invitee@example.test', 'viewer');
    const member = await addMember(s.app, token, s.orgId, 'member@example.test', 'member');
    expect(
      (await api('PATCH', `/api/v1/orgs/${s.orgId}/members/${member.userId}`, { role: 'admin' })).statusCode,
    ).toBe(200);
    expect((await api('DELETE', `/api/v1/orgs/${s.orgId}/members/${member.userId}`)).statusCode).toBe(204);
    const key = ApiKeyWithSecret.parse(
      (await api('POST', `/api/v1/orgs/${s.orgId}/apikeys`, { name: 'k', scopes: ['members:read'] })).json(),
    );
    const rotated = ApiKeyWithSecret.parse(
      (await api('POST', `/api/v1/orgs/${s.orgId}/apikeys/${key.id}/rotate`, {})).json(),
    );
    expect((await api('DELETE', `/api/v1/orgs/${s.orgId}/apikeys/${key.id}`)).statusCode).toBe(204);
    expect((await api('PATCH', `/api/v1/orgs/${s.orgId}`, { name: 'Acme Events' })).statusCode).toBe(200);
    await s.app.jobs.drain();

    const byType = (type: string) => s.heard.filter((e) => e.type === type).map((e) => e.data);
    expect(byType('invitation.created')).toEqual(
      expect.arrayContaining([expect.objectContaining({ email: 'invitee@example.test', role: 'viewer' })]),
    );
    expect(byType('member.added')).toEqual([
      expect.objectContaining({ userId: member.userId, email: 'member@example.test', role: 'member' }),
    ]);
    expect(byType('member.role_changed')).toEqual([
      expect.objectContaining({ userId: member.userId, role: 'admin', previousRole: 'member' }),
    ]);
    expect(byType('member.removed')).toEqual([
      expect.objectContaining({ userId: member.userId, role: 'admin' }),
    ]);
    expect(byType('apikey.created')).toEqual([expect.objectContaining({ id: key.id, status: 'active' })]);
    expect(byType('apikey.rotated')).toEqual([
      expect.objectContaining({ id: key.id, rotatedAt: rotated.rotatedAt }),
    ]);
    expect(byType('apikey.revoked')).toEqual([expect.objectContaining({ id: key.id, status: 'revoked' })]);
    expect(byType('org.updated')).toEqual([expect.objectContaining({ id: s.orgId, name: 'Acme Events' })]);

    const stored = JSON.stringify(await rows(s));
    const heard = JSON.stringify(s.heard);
    // The secret part alone too (it may itself contain `_`, so it is taken by the key format, not by splitting).
    const secretPart = parseKey(key.key)?.secret ?? key.key;
    for (const secret of [key.key, rotated.key, invitationToken, secretPart]) {
      expect(stored).not.toContain(secret);
      expect(heard).not.toContain(secret);
    }
    expect(stored).not.toMatch(/secret_hash|token_hash|secretHash|tokenHash/);
    // Every event was relayed: each stored row is marked.
    expect((await rows(s)).every((r) => r.relayed_at !== null)).toBe(true);
  });
});
