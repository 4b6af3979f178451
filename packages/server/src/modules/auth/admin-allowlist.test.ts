import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PlinthApp } from '../../app.ts';
import { ConfigError, loadConfig } from '../../config.ts';
import { bearer, createOperator, expectProblem, login, STRONG_PASSWORDS } from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { buildTestApp } from '../../test/harness.ts';

const OPERATOR_EMAIL = 'operator@example.com';
const OPERATOR_PASSWORD = STRONG_PASSWORDS[0] ?? '';
const OFFICE = '203.0.113.0/24';
const IN_OFFICE = '203.0.113.7';
const OUTSIDE = '198.51.100.9';
const PROXY = '10.0.0.5';

/** A test app with these variables and a signed-in superadmin. */
async function appWithOperator(
  dialect: (typeof testDialects)[number],
  env: Record<string, string>,
): Promise<{ app: PlinthApp; token: string; operatorId: string }> {
  const app = await buildTestApp(dialect, { env });
  const { id } = await createOperator(app, { email: OPERATOR_EMAIL, password: OPERATOR_PASSWORD });
  // Signing in is not an operator route, so it works from anywhere.
  const { accessToken } = await login(app, OPERATOR_EMAIL, OPERATOR_PASSWORD, { remoteAddress: OUTSIDE });
  return { app, token: accessToken, operatorId: id };
}

describe.each(testDialects)('superadmin routes with SUPERADMIN_ALLOWED_IPS (%s)', (dialect) => {
  let app: PlinthApp;
  let token: string;
  let operatorId: string;
  beforeAll(async () => {
    ({ app, token, operatorId } = await appWithOperator(dialect, {
      SUPERADMIN_ALLOWED_IPS: `${OFFICE}, 2001:db8::/32`,
    }));
  });
  afterAll(async () => {
    await app.close();
  });

  const unlock = (remoteAddress: string, headers: Record<string, string> = {}) =>
    app.inject({
      method: 'POST',
      url: `/api/v1/admin/users/${operatorId}/unlock`,
      headers: { ...bearer(token), ...headers },
      remoteAddress,
    });

  it.each([
    ['an IPv4 address in a listed range', IN_OFFICE],
    ['an IPv4 client on a dual-stack socket', `::ffff:${IN_OFFICE}`],
    ['an IPv6 address in a listed range', '2001:db8::42'],
  ])('serves an operator calling from %s', async (_what, address) => {
    const response = await unlock(address);
    expect(response.statusCode).toBe(204);
  });

  it('refuses an operator with a valid token calling from outside the list, with 403 problem+json', async () => {
    const response = await unlock(OUTSIDE);
    expectProblem(response, 403, 'SUPERADMIN_IP_NOT_ALLOWED');
    expect(response.json().requestId).toBe(response.headers['x-request-id']);
  });

  it('refuses an outside address before authentication: no token gets 403, not 401', async () => {
    const response = await app.inject({ method: 'GET', url: '/api/v1/admin/orgs', remoteAddress: OUTSIDE });
    expectProblem(response, 403, 'SUPERADMIN_IP_NOT_ALLOWED');
  });

  it('guards the operators’ organization routes too', async () => {
    const outside = await app.inject({
      method: 'GET',
      url: '/api/v1/admin/orgs',
      headers: bearer(token),
      remoteAddress: OUTSIDE,
    });
    expectProblem(outside, 403, 'SUPERADMIN_IP_NOT_ALLOWED');
    const inside = await app.inject({
      method: 'GET',
      url: '/api/v1/admin/orgs',
      headers: bearer(token),
      remoteAddress: IN_OFFICE,
    });
    expect(inside.statusCode).toBe(200);
  });

  it('ignores a spoofed X-Forwarded-For when no proxy is trusted', async () => {
    const response = await unlock(OUTSIDE, { 'x-forwarded-for': IN_OFFICE });
    expectProblem(response, 403, 'SUPERADMIN_IP_NOT_ALLOWED');
  });

  it('leaves routes that are not operator routes alone', async () => {
    const response = await app.inject({
      method: 'GET',
      url: '/api/v1/me',
      headers: bearer(token),
      remoteAddress: OUTSIDE,
    });
    expect(response.statusCode).toBe(200);
  });
});

describe.each(testDialects)('SUPERADMIN_ALLOWED_IPS behind a trusted proxy (%s)', (dialect) => {
  let app: PlinthApp;
  let token: string;
  beforeAll(async () => {
    ({ app, token } = await appWithOperator(dialect, { SUPERADMIN_ALLOWED_IPS: OFFICE, TRUST_PROXY: PROXY }));
  });
  afterAll(async () => {
    await app.close();
  });

  const listOrgs = (remoteAddress: string, forwardedFor: string) =>
    app.inject({
      method: 'GET',
      url: '/api/v1/admin/orgs',
      headers: { ...bearer(token), 'x-forwarded-for': forwardedFor },
      remoteAddress,
    });

  it('believes X-Forwarded-For from the trusted proxy', async () => {
    expect((await listOrgs(PROXY, IN_OFFICE)).statusCode).toBe(200);
    expectProblem(await listOrgs(PROXY, OUTSIDE), 403, 'SUPERADMIN_IP_NOT_ALLOWED');
  });

  it('ignores X-Forwarded-For from any other address', async () => {
    expectProblem(await listOrgs(OUTSIDE, IN_OFFICE), 403, 'SUPERADMIN_IP_NOT_ALLOWED');
  });
});

describe.each(testDialects)('superadmin routes without SUPERADMIN_ALLOWED_IPS (%s)', (dialect) => {
  let app: PlinthApp;
  let token: string;
  beforeAll(async () => {
    ({ app, token } = await appWithOperator(dialect, {}));
  });
  afterAll(async () => {
    await app.close();
  });

  it('serves an operator from any address', async () => {
    const response = await app.inject({
      method: 'GET',
      url: '/api/v1/admin/orgs',
      headers: bearer(token),
      remoteAddress: OUTSIDE,
    });
    expect(response.statusCode).toBe(200);
  });
});

describe('SUPERADMIN_ALLOWED_IPS validation', () => {
  // With both secrets given, loading the configuration writes no development secrets file.
  const load = (value: string) =>
    loadConfig({
      NODE_ENV: 'test',
      JWT_SECRET: 's'.repeat(32),
      ENCRYPTION_KEY: Buffer.alloc(32, 7).toString('base64'),
      SUPERADMIN_ALLOWED_IPS: value,
    });

  it.each(['10.0.0.300', '10.0.0.0/33', 'office', '2001:db8::/129'])(
    'refuses %s at start-up, naming the entry',
    (entry) => {
      expect(() => load(`203.0.113.0/24,${entry}`)).toThrow(ConfigError);
      expect(() => load(`203.0.113.0/24,${entry}`)).toThrow(
        `SUPERADMIN_ALLOWED_IPS: "${entry}" is not an IP address or CIDR range`,
      );
    },
  );

  it('accepts addresses and ranges of both families, trimming spaces', () => {
    const config = load(' 203.0.113.7 , 10.0.0.0/8,2001:db8::/32 ');
    expect(config.auth.superadminAllowedIps).toEqual(['203.0.113.7', '10.0.0.0/8', '2001:db8::/32']);
  });
});
