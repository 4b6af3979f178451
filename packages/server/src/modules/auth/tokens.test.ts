import { createPublicKey, generateKeyPairSync, type KeyObject, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Problem, SessionList, TokenPair } from '@plinth/shared';
import type { LightMyRequestResponse } from 'fastify';
import {
  createLocalJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  exportJWK,
  type JWK,
  type JWTHeaderParameters,
  type JWTPayload,
  jwtVerify,
  SignJWT,
} from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { PlinthApp } from '../../app.ts';
import {
  bearer,
  createFakeClock,
  type FakeClock,
  loginWithPassword,
  PASSWORD,
  SECOND,
  signup,
  totp,
} from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { buildTestApp } from '../../test/harness.ts';

// Access tokens under attack (ASVS 9.1.1–9.2.3): every way of presenting something other than a current access
// token signed with the configured key must end in 401 problem+json. Forged tokens carry the claims of a real
// session, so that the one thing wrong with each is the thing under test; a control forged the same way but
// correctly shows the forging itself is sound.

const START = '2030-03-04T09:00:00.000Z';
const PUBLIC_URL = 'https://plinth.test';
const AUDIENCE = 'plinth-api';
const TTL = 900;
type Dialect = (typeof testDialects)[number];
type Pair = z.infer<typeof TokenPair>;

const pkcs8 = (key: KeyObject) => key.export({ type: 'pkcs8', format: 'pem' }).toString();
const nowSeconds = (clock: FakeClock) => Math.floor(clock.now().getTime() / 1000);
const b64json = (value: unknown) => Buffer.from(JSON.stringify(value), 'utf8').toString('base64url');

const me = (app: PlinthApp, authorization: string) =>
  app.inject({ method: 'GET', url: '/api/v1/me', headers: { authorization } });

/** The problem a refused token gets: 401 problem+json that says to authenticate with a bearer token. */
function expectUnauthorized(res: LightMyRequestResponse): void {
  expect(res.statusCode).toBe(401);
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(res.headers['www-authenticate']).toMatch(/^Bearer\b/);
  const problem = Problem.parse(res.json());
  expect(problem.status).toBe(401);
  expect(['UNAUTHENTICATED', 'INVALID_TOKEN']).toContain(problem.code);
}

async function startApp(dialect: Dialect, clock: FakeClock, env: Record<string, string>): Promise<PlinthApp> {
  return buildTestApp(dialect, {
    clock,
    env: { REQUIRE_EMAIL_VERIFICATION: 'false', PUBLIC_URL, ...env },
  });
}

/** Signs up, turns two-factor authentication on and signs in: the MFA token handed out after the password. */
async function mfaTokenOf(app: PlinthApp, clock: FakeClock, email: string): Promise<string> {
  await signup(app, email);
  const pair = await loginWithPassword(app, email);
  const enroll = await app.inject({
    method: 'POST',
    url: '/api/v1/auth/mfa/totp/enroll',
    headers: bearer(pair.accessToken),
    payload: { password: PASSWORD },
  });
  const { secret } = z.object({ secret: z.string() }).parse(enroll.json());
  const confirm = await app.inject({
    method: 'POST',
    url: '/api/v1/auth/mfa/totp/confirm',
    headers: bearer(pair.accessToken),
    payload: { code: totp(secret, clock.now()) },
  });
  expect(confirm.statusCode).toBe(200);
  const res = await app.inject({
    method: 'POST',
    url: '/api/v1/auth/login',
    payload: { email, password: PASSWORD },
  });
  return z.object({ mfaRequired: z.literal(true), mfaToken: z.string() }).parse(res.json()).mfaToken;
}

// --- A symmetric (HS256) installation -----------------------------------------------------------------------

describe.each(testDialects)('access tokens with a shared secret, HS256 (%s)', (dialect) => {
  const secret = randomBytes(32).toString('base64url');
  const key = new TextEncoder().encode(secret);
  const clock = createFakeClock(START);
  let app: PlinthApp;
  let genuine: Pair;
  let claims: JWTPayload;
  let otherUserId: string;
  let mfaToken: string;

  beforeAll(async () => {
    app = await startApp(dialect, clock, { JWT_SECRET: secret });
    await signup(app, 'ada@example.com');
    await signup(app, 'grace@example.com');
    genuine = await loginWithPassword(app, 'ada@example.com');
    claims = decodeJwt(genuine.accessToken);
    otherUserId = decodeJwt((await loginWithPassword(app, 'grace@example.com')).accessToken).sub ?? '';
    mfaToken = await mfaTokenOf(app, clock, 'mfa@example.com');
  });
  afterAll(async () => app?.close());
  beforeEach(() => clock.set(START));

  /** A token like the server's, signed with the configured secret, with parts of it changed. */
  const forge = (
    changes: { header?: Partial<JWTHeaderParameters>; claims?: JWTPayload; drop?: string[] } = {},
  ) => {
    const payload: JWTPayload = { ...claims, ...changes.claims };
    for (const name of changes.drop ?? []) delete payload[name];
    return new SignJWT(payload)
      .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', ...changes.header })
      .sign(key);
  };

  it('accepts the genuine token and one forged with the configured secret and the same claims (control)', async () => {
    expect((await me(app, `Bearer ${genuine.accessToken}`)).statusCode).toBe(200);
    expect((await me(app, `Bearer ${await forge()}`)).statusCode).toBe(200);
  });

  it('refuses a token with alg "none", with or without a signature', async () => {
    const [, , signature] = genuine.accessToken.split('.');
    for (const alg of ['none', 'None', 'NONE']) {
      const unsigned = `${b64json({ alg, typ: 'at+jwt' })}.${b64json(claims)}`;
      expectUnauthorized(await me(app, `Bearer ${unsigned}.`));
      expectUnauthorized(await me(app, `Bearer ${unsigned}.${signature}`));
    }
  });

  it('refuses a token signed with another secret', async () => {
    const other = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' })
      .sign(randomBytes(32));
    expectUnauthorized(await me(app, `Bearer ${other}`));
  });

  it.each(['HS384', 'HS512'])(
    'refuses a token signed with the right secret but another algorithm (%s)',
    async (alg) => {
      expectUnauthorized(await me(app, `Bearer ${await forge({ header: { alg } })}`));
    },
  );

  it.each([
    ['sub', 'another user'],
    ['sid', 'another session'],
    ['exp', 'a later expiry'],
  ])('refuses a token whose payload was edited (%s: %s) with the signature kept', async (claim) => {
    const [header, , signature] = genuine.accessToken.split('.');
    const edited: JWTPayload = { ...claims };
    if (claim === 'sub') edited.sub = otherUserId;
    if (claim === 'sid') edited.sid = randomUUID();
    if (claim === 'exp') edited.exp = (claims.exp ?? 0) + 86_400;
    expectUnauthorized(await me(app, `Bearer ${header}.${b64json(edited)}.${signature}`));
  });

  it('refuses a token whose header was edited with the signature kept', async () => {
    const [, payload, signature] = genuine.accessToken.split('.');
    expectUnauthorized(
      await me(app, `Bearer ${b64json({ alg: 'HS256', typ: 'at+jwt', x: 1 })}.${payload}.${signature}`),
    );
  });

  it('accepts a token until it expires and refuses it once past exp and the clock skew allowance', async () => {
    clock.advance((TTL - 1) * SECOND);
    expect((await me(app, `Bearer ${genuine.accessToken}`)).statusCode).toBe(200);
    clock.advance((1 + 6) * SECOND);
    expectUnauthorized(await me(app, `Bearer ${genuine.accessToken}`));
  });

  it('refuses a token that is not valid yet (nbf in the future)', async () => {
    const now = nowSeconds(clock);
    expectUnauthorized(await me(app, `Bearer ${await forge({ claims: { nbf: now + 120 } })}`));
    expectUnauthorized(
      await me(app, `Bearer ${await forge({ claims: { iat: now + 120, nbf: now + 120 } })}`),
    );
  });

  it.each(['other-api', `${AUDIENCE}:mfa`, ''])('refuses a token for another audience (%j)', async (aud) => {
    expectUnauthorized(await me(app, `Bearer ${await forge({ claims: { aud } })}`));
  });

  it('refuses a token that names no audience', async () => {
    expectUnauthorized(await me(app, `Bearer ${await forge({ drop: ['aud'] })}`));
  });

  it.each(['https://evil.test', `${PUBLIC_URL}/`, 'http://plinth.test'])(
    'refuses a token from another issuer (%s)',
    async (iss) => {
      expectUnauthorized(await me(app, `Bearer ${await forge({ claims: { iss } })}`));
    },
  );

  it.each(['JWT', 'mfa+jwt', 'application/at+jwt+x', undefined])(
    'refuses a token of the wrong type (typ %s)',
    async (typ) => {
      const header = typ === undefined ? { alg: 'HS256' } : { alg: 'HS256', typ };
      const token = await new SignJWT(claims).setProtectedHeader(header).sign(key);
      expectUnauthorized(await me(app, `Bearer ${token}`));
    },
  );

  it.each(['sid', 'sub', 'exp', 'jti'])('refuses a token without its %s claim', async (claim) => {
    expectUnauthorized(await me(app, `Bearer ${await forge({ drop: [claim] })}`));
  });

  it('refuses a refresh token presented as an access token', async () => {
    expectUnauthorized(await me(app, `Bearer ${genuine.refreshToken}`));
  });

  it('refuses the MFA token handed out between password and second factor', async () => {
    expect(decodeProtectedHeader(mfaToken).typ).toBe('mfa+jwt');
    expectUnauthorized(await me(app, `Bearer ${mfaToken}`));
  });

  it.each([
    'garbage',
    'a.b.c',
    '...',
    'eyJhbGciOiJIUzI1NiJ9',
    'eyJhbGciOiJIUzI1NiJ9.e30',
    'eyJhbGciOiJIUzI1NiJ9.e30.',
    `${'x'.repeat(4000)}.${'y'.repeat(4000)}.${'z'.repeat(40)}`,
    '%00%00',
  ])('refuses a garbage bearer token (%s)', async (token) => {
    expectUnauthorized(await me(app, `Bearer ${token}`));
  });

  it('refuses an empty bearer, another scheme, no scheme, and two tokens in one header', async () => {
    const token = genuine.accessToken;
    for (const authorization of [
      'Bearer',
      'Bearer ',
      'Bearer  ',
      ' ',
      'Basic dXNlckBleGFtcGxlLmNvbTpwYXNzd29yZA==',
      `Basic ${token}`,
      `Token ${token}`,
      `Bearer:${token}`,
      token,
      `Bearer ${token} ${token}`,
      `Bearer ${token}, Bearer ${token}`,
      `Bearer ${token},${token}`,
      `Bearer  ${token}`,
    ]) {
      const res = await me(app, authorization);
      expect(res.statusCode, authorization.slice(0, 20)).toBe(401);
      expectUnauthorized(res);
    }
    // And the same token alone is fine, so the refusals above are about the header's form.
    expect((await me(app, `Bearer ${token}`)).statusCode).toBe(200);
  });

  it('publishes no keys: a shared secret is never in the key set', async () => {
    const res = await app.inject({ method: 'GET', url: '/.well-known/jwks.json' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ keys: [] });
    expect(decodeProtectedHeader(genuine.accessToken)).toEqual({ alg: 'HS256', typ: 'at+jwt' });
  });
});

// --- Asymmetric installations (EdDSA, RS256) ------------------------------------------------------------------

/** A JWKS served over HTTP on 127.0.0.1 that counts how often it is fetched: an attacker's `jku`/`x5u`. */
async function attackerKeyServer(jwks: {
  keys: JWK[];
}): Promise<{ url: string; hits: () => number; close: () => Promise<void> }> {
  let hits = 0;
  const server: Server = createServer((_req, res) => {
    hits++;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(jwks));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/jwks.json`,
    hits: () => hits,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

const keyConfigs = [
  { name: 'EdDSA', alg: 'EdDSA', generate: () => generateKeyPairSync('ed25519') },
  { name: 'RS256', alg: 'RS256', generate: () => generateKeyPairSync('rsa', { modulusLength: 2048 }) },
] as const;

describe.each(testDialects)('access tokens with an asymmetric key (%s)', (dialect) => {
  describe.each(keyConfigs)('$name', ({ alg, generate }) => {
    const server = generate();
    const attacker = generate();
    const clock = createFakeClock(START);
    let app: PlinthApp;
    let genuine: Pair;
    let claims: JWTPayload;
    let kid: string;
    let attackerJwk: JWK;
    let keyServer: Awaited<ReturnType<typeof attackerKeyServer>>;

    beforeAll(async () => {
      app = await startApp(dialect, clock, { JWT_PRIVATE_KEY: pkcs8(server.privateKey) });
      await signup(app, 'ada@example.com');
      genuine = await loginWithPassword(app, 'ada@example.com');
      claims = decodeJwt(genuine.accessToken);
      kid = decodeProtectedHeader(genuine.accessToken).kid ?? '';
      attackerJwk = { ...(await exportJWK(attacker.publicKey)), kid: 'attacker', alg, use: 'sig' };
      keyServer = await attackerKeyServer({ keys: [attackerJwk] });
    });
    afterAll(async () => {
      await keyServer?.close();
      await app?.close();
    });
    beforeEach(() => clock.set(START));

    const sign = (
      header: JWTHeaderParameters,
      signingKey: KeyObject | Uint8Array,
      payload: JWTPayload = claims,
    ) => new SignJWT(payload).setProtectedHeader({ typ: 'at+jwt', ...header }).sign(signingKey);

    it(`issues ${alg} tokens that the published key verifies independently`, async () => {
      const header = decodeProtectedHeader(genuine.accessToken);
      expect(header.alg).toBe(alg);
      expect(header.typ).toBe('at+jwt');
      expect(header.kid).toEqual(expect.any(String));

      const res = await app.inject({ method: 'GET', url: '/.well-known/jwks.json' });
      expect(res.statusCode).toBe(200);
      const jwks = z.object({ keys: z.array(z.record(z.string(), z.unknown())) }).parse(res.json());
      expect(jwks.keys).toHaveLength(1);
      const published = jwks.keys[0] as JWK;
      expect(published.kid).toBe(header.kid);
      expect(published.alg).toBe(alg);
      expect(published.use).toBe('sig');
      // The public half only: none of the private parameters of an OKP or RSA key.
      for (const privateParameter of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']) {
        expect(published).not.toHaveProperty(privateParameter);
      }
      expect(published).toMatchObject(await exportJWK(server.publicKey));

      const { payload } = await jwtVerify(genuine.accessToken, createLocalJWKSet({ keys: [published] }), {
        algorithms: [alg],
        issuer: PUBLIC_URL,
        audience: AUDIENCE,
        typ: 'at+jwt',
        currentDate: clock.now(),
      });
      expect(payload.sub).toBe(claims.sub);
      expect((await me(app, `Bearer ${genuine.accessToken}`)).statusCode).toBe(200);
    });

    it('accepts a token forged with the configured key and its kid (control)', async () => {
      expect((await me(app, `Bearer ${await sign({ alg, kid }, server.privateKey)}`)).statusCode).toBe(200);
    });

    it('refuses a token signed with the configured key under an unknown kid', async () => {
      expectUnauthorized(
        await me(app, `Bearer ${await sign({ alg, kid: 'some-other-key' }, server.privateKey)}`),
      );
      expectUnauthorized(await me(app, `Bearer ${await sign({ alg, kid: `${kid}x` }, server.privateKey)}`));
    });

    it('refuses a token signed with another key, whatever kid it names', async () => {
      expectUnauthorized(await me(app, `Bearer ${await sign({ alg, kid }, attacker.privateKey)}`));
      expectUnauthorized(
        await me(app, `Bearer ${await sign({ alg, kid: 'attacker' }, attacker.privateKey)}`),
      );
    });

    it('never follows jku or x5u to an attacker’s keys', async () => {
      const before = keyServer.hits();
      for (const header of [
        { alg, kid: 'attacker', jku: keyServer.url },
        { alg, kid, jku: keyServer.url },
        { alg, kid: 'attacker', x5u: keyServer.url },
        { alg, kid, x5u: keyServer.url },
      ]) {
        expectUnauthorized(await me(app, `Bearer ${await sign(header, attacker.privateKey)}`));
      }
      expect(keyServer.hits()).toBe(before);
    });

    it('ignores a key embedded in the header (jwk)', async () => {
      const { kid: _ignored, ...embedded } = attackerJwk;
      for (const header of [
        { alg, jwk: embedded },
        { alg, kid, jwk: embedded },
        { alg, kid: 'attacker', jwk: embedded },
      ]) {
        expectUnauthorized(await me(app, `Bearer ${await sign(header, attacker.privateKey)}`));
      }
    });

    it('refuses alg "none" and an HS256 token keyed with the public key (algorithm confusion)', async () => {
      expectUnauthorized(
        await me(app, `Bearer ${b64json({ alg: 'none', typ: 'at+jwt', kid })}.${b64json(claims)}.`),
      );
      const publicPem = createPublicKey(server.privateKey).export({ type: 'spki', format: 'pem' }).toString();
      const publicDer = createPublicKey(server.privateKey).export({ type: 'spki', format: 'der' });
      const publicJwk = JSON.stringify(await exportJWK(server.publicKey));
      for (const hmacKey of [publicPem, publicPem.trim(), publicDer, publicJwk]) {
        const bytes =
          typeof hmacKey === 'string' ? new TextEncoder().encode(hmacKey) : new Uint8Array(hmacKey);
        for (const hs of ['HS256', 'HS512']) {
          expectUnauthorized(await me(app, `Bearer ${await sign({ alg: hs, kid }, bytes)}`));
        }
      }
    });

    it('refuses a token of the other asymmetric algorithm under our kid', async () => {
      const other = alg === 'EdDSA' ? keyConfigs[1] : keyConfigs[0];
      const otherKey = other.generate();
      expectUnauthorized(await me(app, `Bearer ${await sign({ alg: other.alg, kid }, otherKey.privateKey)}`));
    });
  });
});

// --- What a genuine token says ---------------------------------------------------------------------------------

describe.each(testDialects)('access-token claims (%s)', (dialect) => {
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it('carries iss, aud, sub, exp, iat, jti and sid, with exp − iat = ACCESS_TOKEN_TTL_SECONDS', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock, {});
    cleanups.push(() => app.close());
    await signup(app, 'ada@example.com');
    const pair = await loginWithPassword(app, 'ada@example.com');
    const claims = decodeJwt(pair.accessToken);

    for (const claim of ['iss', 'aud', 'sub', 'exp', 'iat', 'jti', 'sid'])
      expect(claims).toHaveProperty(claim);
    expect(claims.iss).toBe(PUBLIC_URL);
    expect(claims.aud).toBe(AUDIENCE);
    expect(claims.iat).toBe(nowSeconds(clock));
    expect((claims.exp ?? 0) - (claims.iat ?? 0)).toBe(TTL);
    expect(pair.expiresIn).toBe(TTL);
    expect(pair.tokenType).toBe('Bearer');

    const meRes = await me(app, `Bearer ${pair.accessToken}`);
    expect(z.object({ id: z.string() }).parse(meRes.json()).id).toBe(claims.sub);
    const list = await app.inject({
      method: 'GET',
      url: '/api/v1/auth/sessions',
      headers: bearer(pair.accessToken),
    });
    const current = SessionList.parse(list.json()).data.find((s) => s.current);
    expect(current?.id).toBe(claims.sid);

    // Every token has its own id, including one from a refresh of the same session.
    const second = decodeJwt((await loginWithPassword(app, 'ada@example.com')).accessToken);
    const refreshed = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/refresh',
      payload: { refreshToken: pair.refreshToken },
    });
    const third = decodeJwt(TokenPair.parse(refreshed.json()).accessToken);
    expect(new Set([claims.jti, second.jti, third.jti]).size).toBe(3);
    expect(third.sid).toBe(claims.sid);
    expect(second.sid).not.toBe(claims.sid);
  });

  it('follows ACCESS_TOKEN_TTL_SECONDS, JWT_ISSUER and JWT_AUDIENCE from configuration', async () => {
    const clock = createFakeClock(START);
    const app = await startApp(dialect, clock, {
      ACCESS_TOKEN_TTL_SECONDS: '120',
      JWT_ISSUER: 'urn:plinth:test-issuer',
      JWT_AUDIENCE: 'fleet-api',
    });
    cleanups.push(() => app.close());
    await signup(app, 'ada@example.com');
    const pair = await loginWithPassword(app, 'ada@example.com');
    const claims = decodeJwt(pair.accessToken);
    expect(claims.iss).toBe('urn:plinth:test-issuer');
    expect(claims.aud).toBe('fleet-api');
    expect((claims.exp ?? 0) - (claims.iat ?? 0)).toBe(120);
    expect(pair.expiresIn).toBe(120);

    expect((await me(app, `Bearer ${pair.accessToken}`)).statusCode).toBe(200);
    clock.advance((120 + 6) * SECOND);
    expectUnauthorized(await me(app, `Bearer ${pair.accessToken}`));
  });
});
