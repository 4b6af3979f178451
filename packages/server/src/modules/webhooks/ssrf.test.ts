import { WebhookEndpointWithSecret } from '@plinth/shared';
import { afterEach, describe, expect, it } from 'vitest';
import { buildApp, type PlinthApp } from '../../app.ts';
import { bearer, cleanupAfterEach, createFakeClock, expectProblem } from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { createTestDatabase, testConfig } from '../../test/harness.ts';
import { createOrg, signedInUser } from '../../test/org-helpers.ts';
import {
  AddressRefusedError,
  addressPolicy,
  addressRefusal,
  checkWebhookUrl,
  guardedLookup,
} from './ssrf.ts';
import { startReceiver, type TestReceiver } from './test-receiver.ts';

// SSRF defence (ASVS 1.3.6): webhook URLs reach public addresses only — loopback, private, CGNAT, link-local
// (the cloud metadata address), unique-local and other special ranges are refused, by address and by what a name
// resolves to, when the endpoint is registered and again at every delivery, unless WEBHOOK_ALLOWED_HOSTS lists
// them. No test here sends anything off this machine: public addresses are only judged, never contacted.

const none = addressPolicy([]);

describe('addressRefusal', () => {
  it.each([
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['10.0.0.1', 'private'],
    ['172.16.5.4', 'private'],
    ['192.168.0.1', 'private'],
    ['100.64.0.1', 'carrierGradeNat'],
    ['169.254.169.254', 'linkLocal'],
    ['0.0.0.0', 'unspecified'],
    ['0.1.2.3', 'unspecified'],
    ['224.0.0.1', 'multicast'],
    ['255.255.255.255', 'broadcast'],
    ['192.0.2.10', 'reserved'],
    ['198.18.0.1', 'reserved'],
    ['240.0.0.1', 'reserved'],
    ['::1', 'loopback'],
    ['::', 'unspecified'],
    ['fe80::1', 'linkLocal'],
    ['fc00::1', 'uniqueLocal'],
    ['fd12:3456::1', 'uniqueLocal'],
    ['ff02::1', 'multicast'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:169.254.169.254', 'linkLocal'],
    ['::ffff:10.1.1.1', 'private'],
    ['64:ff9b::a00:1', 'rfc6052'],
    ['2002:7f00:1::1', '6to4'],
    ['2001::1', 'teredo'],
    ['2001:db8::1', 'reserved'],
  ])('refuses %s (%s)', (address, range) => {
    expect(addressRefusal(none, address)).toBe(range);
  });

  it.each(['93.184.216.34', '8.8.8.8', '1.1.1.1', '2606:4700:4700::1111', '::ffff:8.8.8.8'])(
    'accepts the public address %s',
    (address) => {
      expect(addressRefusal(none, address)).toBeUndefined();
    },
  );

  it('accepts what WEBHOOK_ALLOWED_HOSTS lists, and only that', () => {
    const policy = addressPolicy(['127.0.0.1', '10.20.0.0/16', 'fd00::/8', 'hooks.internal']);
    expect(addressRefusal(policy, '127.0.0.1')).toBeUndefined();
    expect(addressRefusal(policy, '::ffff:127.0.0.1')).toBeUndefined();
    expect(addressRefusal(policy, '127.0.0.2')).toBe('loopback');
    expect(addressRefusal(policy, '10.20.3.4')).toBeUndefined();
    expect(addressRefusal(policy, '10.21.0.1')).toBe('private');
    expect(addressRefusal(policy, 'fd00::5')).toBeUndefined();
    expect(policy.hosts.has('hooks.internal')).toBe(true);
    expect(addressRefusal(policy, 'not an address')).toBe('not an IP address');
  });
});

describe('checkWebhookUrl', () => {
  const check = (url: string, requireHttps = false) => checkWebhookUrl(url, { policy: none, requireHttps });

  it.each([
    'http://127.0.0.1/hook',
    'http://127.1/hook',
    'http://2130706433/hook',
    'http://0x7f000001/hook',
    'http://10.0.0.8:8080/hook',
    'http://169.254.169.254/latest/meta-data/',
    'http://[::1]/hook',
    'http://[::ffff:127.0.0.1]/hook',
    'http://[fd00::1]/hook',
    'http://0.0.0.0/hook',
    'http://100.64.1.1/hook',
    'http://localhost/hook',
    'http://LOCALHOST:3000/hook',
    'http://api.localhost/hook',
  ])('refuses %s', async (url) => {
    await expect(check(url)).rejects.toThrow(AddressRefusedError);
  });

  it('refuses other schemes, credentials in the URL, and http where https is required', async () => {
    await expect(check('ftp://93.184.216.34/x')).rejects.toThrow('Only http and https');
    await expect(check('file:///etc/passwd')).rejects.toThrow(AddressRefusedError);
    await expect(check('https://user:secret@93.184.216.34/x')).rejects.toThrow('user name or password');
    await expect(check('http://93.184.216.34/x', true)).rejects.toThrow('must use https');
    await expect(check('/relative')).rejects.toThrow('Not an absolute URL');
  });

  it('accepts a public address, and normalises the URL as it will be called', async () => {
    await expect(check('https://93.184.216.34:8443/a?b=c', true)).resolves.toBe(
      'https://93.184.216.34:8443/a?b=c',
    );
    await expect(check('HTTPS://[2606:4700:4700::1111]/x', true)).resolves.toBe(
      'https://[2606:4700:4700::1111]/x',
    );
  });

  it('accepts a listed host name whatever it resolves to', async () => {
    const policy = addressPolicy(['localhost']);
    await expect(checkWebhookUrl('http://localhost:9/x', { policy, requireHttps: false })).resolves.toBe(
      'http://localhost:9/x',
    );
  });
});

describe('guardedLookup', () => {
  const lookup = (policy: ReturnType<typeof addressPolicy>, host: string, all: boolean) =>
    new Promise<{ error: Error | null; address: unknown }>((resolve) => {
      guardedLookup(policy)(host, { all }, (error, address) => resolve({ error, address }));
    });

  it('refuses a name that resolves to a refused address, at connection time', async () => {
    for (const all of [true, false]) {
      const { error } = await lookup(none, 'localhost', all);
      expect(error).toBeInstanceOf(AddressRefusedError);
    }
  });

  it('hands the checked addresses to the socket when the name is allowed', async () => {
    const { error, address } = await lookup(addressPolicy(['localhost']), 'localhost', true);
    expect(error).toBeNull();
    expect(JSON.stringify(address)).toMatch(/127\.0\.0\.1|::1/);
  });
});

const cleanups = cleanupAfterEach();
const receivers: TestReceiver[] = [];
afterEach(async () => {
  for (const receiver of receivers.splice(0)) await receiver.close();
});

describe.each(testDialects)('webhook SSRF defence (%s)', (dialect) => {
  it('refuses internal targets when an endpoint is registered', async () => {
    const app = await buildApp(
      testConfig(await databaseFor(dialect), { REQUIRE_EMAIL_VERIFICATION: 'false' }),
    );
    cleanups.push(() => app.close());
    const owner = await signedInUser(app, 'owner@example.test');
    const { id: orgId } = await createOrg(app, owner.accessToken);
    for (const url of [
      'http://127.0.0.1:8080/hook',
      'http://10.0.0.1/hook',
      'http://169.254.169.254/latest/meta-data/',
      'http://[::1]/hook',
      'http://localhost/hook',
      'http://[::ffff:127.0.0.1]/hook',
      'http://100.64.0.1/hook',
      'http://0.0.0.0/hook',
    ]) {
      const res = await app.inject({
        method: 'POST',
        url: `/api/v1/orgs/${orgId}/webhooks`,
        headers: bearer(owner.accessToken),
        payload: { url, events: ['*'] },
      });
      expectProblem(res, 400, 'WEBHOOK_URL_NOT_ALLOWED');
      expect(res.json()).toMatchObject({ errors: [{ path: 'body.url' }] });
    }
    const rows = await app.database.withTenant(orgId, (db) =>
      db.selectFrom('webhook_endpoints').select('id').execute(),
    );
    expect(rows).toEqual([]);
  });

  it('refuses http in production', async () => {
    const app = await buildApp(
      testConfig(await databaseFor(dialect), {
        REQUIRE_EMAIL_VERIFICATION: 'false',
        NODE_ENV: 'production',
        ENCRYPTION_KEY: Buffer.alloc(32, 3).toString('base64'),
        WEBHOOK_ALLOWED_HOSTS: '127.0.0.1',
      }),
    );
    cleanups.push(() => app.close());
    const owner = await signedInUser(app, 'owner@example.test');
    const { id: orgId } = await createOrg(app, owner.accessToken);
    const res = await app.inject({
      method: 'POST',
      url: `/api/v1/orgs/${orgId}/webhooks`,
      headers: bearer(owner.accessToken),
      payload: { url: 'http://127.0.0.1:9/hook', events: ['*'] },
    });
    expectProblem(res, 400, 'WEBHOOK_URL_NOT_ALLOWED');
    expect(res.json().detail).toContain('https');
  });

  it('re-checks at delivery: a target no longer allowed is refused before any connection', async () => {
    // Two replicas of one installation: the first still allows the internal receiver, the second — where the
    // delivery runs — no longer does (the operator removed it from WEBHOOK_ALLOWED_HOSTS). The same check stops
    // a name that resolved to a public address at registration and to an internal one later (DNS rebinding).
    const receiver = await startReceiver();
    receivers.push(receiver);
    const database = await databaseFor(dialect);
    const clock = createFakeClock(new Date());
    const secrets = { ENCRYPTION_KEY: Buffer.alloc(32, 5).toString('base64'), JWT_SECRET: 'j'.repeat(40) };
    const env = { REQUIRE_EMAIL_VERIFICATION: 'false', ...secrets };
    const permissive: PlinthApp = await buildApp(
      testConfig(database, { ...env, WEBHOOK_ALLOWED_HOSTS: '127.0.0.1,localhost,::1' }),
      { clock },
    );
    cleanups.push(() => permissive.close());
    const strict: PlinthApp = await buildApp(testConfig(database, env), { clock });
    cleanups.push(() => strict.close());

    const owner = await signedInUser(permissive, 'owner@example.test');
    const { id: orgId } = await createOrg(permissive, owner.accessToken);
    const port = new URL(receiver.origin).port;
    const hooks: WebhookEndpointWithSecret[] = [];
    for (const url of [`${receiver.origin}/ip`, `http://localhost:${port}/name`, `http://[::1]:${port}/v6`]) {
      const res = await permissive.inject({
        method: 'POST',
        url: `/api/v1/orgs/${orgId}/webhooks`,
        headers: bearer(owner.accessToken),
        payload: { url, events: ['org.updated'] },
      });
      expect(res.statusCode, res.body).toBe(201);
      hooks.push(WebhookEndpointWithSecret.parse(res.json()));
    }
    const renamed = await permissive.inject({
      method: 'PATCH',
      url: `/api/v1/orgs/${orgId}`,
      headers: bearer(owner.accessToken),
      payload: { name: 'Rebound' },
    });
    expect(renamed.statusCode).toBe(200);
    await strict.jobs.drain();

    expect(receiver.received).toEqual([]);
    const rows = await strict.database.withTenant(orgId, (db) =>
      db
        .selectFrom('webhook_deliveries')
        .select(['endpoint_id', 'status', 'last_error', 'attempts'])
        .execute(),
    );
    expect(rows).toHaveLength(3);
    for (const row of rows) {
      expect(row).toMatchObject({ status: 'pending', attempts: 1 });
      expect(row.last_error).toMatch(
        /^Refused: .*not public \(loopback\)|^Refused: localhost is this machine/,
      );
    }
  });
});

async function databaseFor(dialect: (typeof testDialects)[number]) {
  const database = await createTestDatabase(dialect);
  cleanups.push(() => database.drop());
  return database;
}
