import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { PlinthApp } from '../app.ts';
import { testDialects } from '../test/dialects.ts';
import { buildTestApp } from '../test/harness.ts';

const testRoutes: FastifyPluginAsyncZod = async (api) => {
  api.get(
    '/widgets',
    { schema: { response: { 200: z.object({ data: z.array(z.string()) }) } } },
    async () => ({ data: ['w1'] }),
  );
  api.post('/widgets', { schema: { body: z.object({ name: z.string() }) } }, async (request) => ({
    name: request.body.name,
  }));
};

/** The CSP directives of a response, by name. */
function cspDirectives(header: string | string[] | number | undefined): Map<string, string> {
  expect(typeof header).toBe('string');
  return new Map(
    String(header)
      .split(';')
      .map((d) => d.trim())
      .filter(Boolean)
      .map((d) => {
        const [name = '', ...values] = d.split(/\s+/);
        return [name, values.join(' ')] as const;
      }),
  );
}

const LISTED_ORIGIN = 'https://console.example.com';
const UNLISTED_ORIGIN = 'https://evil.example.net';

describe.each(testDialects)('security headers (%s)', (dialect) => {
  let app: PlinthApp;
  beforeAll(async () => {
    app = await buildTestApp(dialect, { modules: [testRoutes] });
  });
  afterAll(async () => {
    await app.close();
  });

  it.each([
    ['a successful API response', 'GET', '/api/v1/widgets'],
    ['a health response', 'GET', '/health/live'],
    ['an unknown route', 'GET', '/api/v1/missing'],
    ['a validation failure', 'POST', '/api/v1/widgets'],
  ] as const)('forbids loading, framing and sniffing on %s', async (_what, method, url) => {
    const response = await app.inject({ method, url });
    const csp = cspDirectives(response.headers['content-security-policy']);
    expect(csp.get('default-src')).toBe("'none'");
    expect(csp.get('frame-ancestors')).toBe("'none'");
    expect(csp.has('script-src')).toBe(false);
    expect(response.headers['x-content-type-options']).toBe('nosniff');
    expect(response.headers['x-frame-options']).toBe('DENY');
    expect(response.headers['referrer-policy']).toBe('no-referrer');
  });

  // The OWASP Secure Headers Project's list, as it applies to an API (HSTS, over TLS only, is tested below).
  it.each([
    ['a successful API response', 'GET', '/api/v1/widgets'],
    ['a health response', 'GET', '/health/live'],
    ['an unknown route', 'GET', '/api/v1/missing'],
  ] as const)('sends the OWASP-recommended isolation headers on %s', async (_what, method, url) => {
    const response = await app.inject({ method, url });
    expect(response.headers['cross-origin-opener-policy']).toBe('same-origin');
    expect(response.headers['cross-origin-resource-policy']).toBe('same-origin');
    expect(response.headers['cross-origin-embedder-policy']).toBe('require-corp');
    expect(response.headers['x-permitted-cross-domain-policies']).toBe('none');
    expect(response.headers['x-dns-prefetch-control']).toBe('off');
    // The deprecated XSS auditor is switched off, as OWASP advises, rather than left to the browser.
    expect(response.headers['x-xss-protection']).toBe('0');
  });

  it('denies every powerful browser feature with Permissions-Policy', async () => {
    const response = await app.inject({ method: 'GET', url: '/api/v1/widgets' });
    const policy = String(response.headers['permissions-policy']);
    const features = policy.split(',').map((entry) => entry.trim());
    const sensitive = ['camera', 'microphone', 'geolocation', 'payment', 'usb', 'sync-xhr', 'fullscreen'];
    for (const feature of sensitive) expect(features).toContain(`${feature}=()`);
    // Deny-all: no feature is allowed to any origin, not even this one.
    expect(features.every((entry) => /^[a-z-]+=\(\)$/.test(entry))).toBe(true);
  });

  it('names neither the server software nor the framework', async () => {
    for (const url of ['/api/v1/widgets', '/api/v1/missing', '/health/live']) {
      const response = await app.inject({ method: 'GET', url });
      expect(response.headers['x-powered-by']).toBeUndefined();
      expect(response.headers.server).toBeUndefined();
    }
  });

  it('sends no HSTS over plain HTTP', async () => {
    const response = await app.inject({ method: 'GET', url: '/api/v1/widgets' });
    expect(response.headers['strict-transport-security']).toBeUndefined();
  });

  it('ignores a spoofed X-Forwarded-Proto when no proxy is trusted', async () => {
    const response = await app.inject({
      method: 'GET',
      url: '/api/v1/widgets',
      headers: { 'x-forwarded-proto': 'https' },
    });
    expect(response.headers['strict-transport-security']).toBeUndefined();
  });

  it('sends no CORS headers by default, not even to a preflight', async () => {
    const preflight = await app.inject({
      method: 'OPTIONS',
      url: '/api/v1/widgets',
      headers: { origin: LISTED_ORIGIN, 'access-control-request-method': 'POST' },
    });
    expect(preflight.headers['access-control-allow-origin']).toBeUndefined();
    expect(preflight.headers['access-control-allow-methods']).toBeUndefined();
    expect(preflight.headers['access-control-allow-credentials']).toBeUndefined();

    const simple = await app.inject({
      method: 'GET',
      url: '/api/v1/widgets',
      headers: { origin: LISTED_ORIGIN },
    });
    expect(simple.statusCode).toBe(200);
    expect(simple.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('gives /docs its own CSP that lets the reference load its own scripts and styles only', async () => {
    const response = await app.inject({ method: 'GET', url: '/docs' });
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toContain('text/html');
    const csp = cspDirectives(response.headers['content-security-policy']);
    expect(csp.get('default-src')).toBe("'self'");
    expect(csp.get('script-src')?.split(' ')[0]).toBe("'self'");
    expect(csp.get('style-src')?.split(' ')[0]).toBe("'self'");
    // Nothing from another origin: every source is 'self', a hash, or (fonts and images only) data:.
    for (const [directive, sources] of csp) {
      for (const source of sources.split(' ').filter(Boolean)) {
        expect(`${directive} ${source}`).toMatch(/ ('self'|'none'|'sha256-[A-Za-z0-9+/=]+'|data:)$/);
      }
    }
    expect(csp.get('frame-ancestors')).toBe("'none'");
    expect(csp.get('object-src')).toBe("'none'");
    expect(response.headers['x-frame-options']).toBe('DENY');
  });
});

describe.each(testDialects)('HSTS behind a trusted TLS proxy (%s)', (dialect) => {
  let app: PlinthApp;
  beforeAll(async () => {
    app = await buildTestApp(dialect, { modules: [testRoutes], env: { TRUST_PROXY: 'true' } });
  });
  afterAll(async () => {
    await app.close();
  });

  it('sends HSTS when the trusted proxy says the client used HTTPS', async () => {
    const response = await app.inject({
      method: 'GET',
      url: '/api/v1/widgets',
      headers: { 'x-forwarded-proto': 'https' },
    });
    expect(response.headers['strict-transport-security']).toBe('max-age=31536000; includeSubDomains');
  });

  it('sends HSTS on error responses over HTTPS too', async () => {
    const response = await app.inject({
      method: 'GET',
      url: '/api/v1/missing',
      headers: { 'x-forwarded-proto': 'https' },
    });
    expect(response.statusCode).toBe(404);
    expect(response.headers['strict-transport-security']).toBe('max-age=31536000; includeSubDomains');
  });

  it('sends no HSTS when the trusted proxy says the client used plain HTTP', async () => {
    for (const headers of [{ 'x-forwarded-proto': 'http' }, {}]) {
      const response = await app.inject({ method: 'GET', url: '/api/v1/widgets', headers });
      expect(response.headers['strict-transport-security']).toBeUndefined();
    }
  });
});

// app.inject's requests come from 127.0.0.1, so an app trusting that address believes them and one trusting
// only 10.0.0.0/8 does not.
describe.each(
  testDialects.flatMap((dialect) => [
    { dialect, trustProxy: '127.0.0.1', believed: true },
    { dialect, trustProxy: '10.0.0.0/8', believed: false },
  ]),
)('TRUST_PROXY=$trustProxy ($dialect)', ({ dialect, trustProxy, believed }) => {
  let app: PlinthApp;
  beforeAll(async () => {
    app = await buildTestApp(dialect, { env: { TRUST_PROXY: trustProxy } });
  });
  afterAll(async () => {
    await app.close();
  });

  it(`${believed ? 'believes' : 'ignores'} X-Forwarded-Proto from 127.0.0.1`, async () => {
    const response = await app.inject({
      method: 'GET',
      url: '/health/live',
      headers: { 'x-forwarded-proto': 'https' },
    });
    expect(response.headers['strict-transport-security']).toBe(
      believed ? 'max-age=31536000; includeSubDomains' : undefined,
    );
  });
});

describe.each(testDialects)('CORS with an allowlist (%s)', (dialect) => {
  let app: PlinthApp;
  beforeAll(async () => {
    app = await buildTestApp(dialect, {
      modules: [testRoutes],
      env: { CORS_ORIGINS: `${LISTED_ORIGIN}, http://localhost:5173` },
    });
  });
  afterAll(async () => {
    await app.close();
  });

  it.each([LISTED_ORIGIN, 'http://localhost:5173'])(
    'answers a preflight from the listed origin %s',
    async (origin) => {
      const preflight = await app.inject({
        method: 'OPTIONS',
        url: '/api/v1/widgets',
        headers: {
          origin,
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'content-type',
        },
      });
      expect(preflight.statusCode).toBe(204);
      expect(preflight.headers['access-control-allow-origin']).toBe(origin);
      expect(preflight.headers['access-control-allow-credentials']).toBe('true');
      expect(String(preflight.headers['access-control-allow-methods'])).toContain('POST');
      expect(preflight.headers['access-control-max-age']).toBe('600');
    },
  );

  it('lets a listed origin read a response, and says the answer varies by Origin', async () => {
    const response = await app.inject({
      method: 'GET',
      url: '/api/v1/widgets',
      headers: { origin: LISTED_ORIGIN },
    });
    expect(response.statusCode).toBe(200);
    expect(response.headers['access-control-allow-origin']).toBe(LISTED_ORIGIN);
    expect(String(response.headers.vary)).toMatch(/origin/i);
  });

  it.each([
    ['an unlisted origin', UNLISTED_ORIGIN],
    ['a listed host over another scheme', 'http://console.example.com'],
    ['a subdomain of a listed origin', 'https://x.console.example.com'],
    ['a look-alike with the listed origin as prefix', `${LISTED_ORIGIN}.evil.example.net`],
    ['the null origin', 'null'],
  ])('refuses %s', async (_what, origin) => {
    const preflight = await app.inject({
      method: 'OPTIONS',
      url: '/api/v1/widgets',
      headers: { origin, 'access-control-request-method': 'POST' },
    });
    // Without Access-Control-Allow-Origin the browser withholds the response (@fastify/cors still sends
    // Allow-Credentials, which grants nothing on its own).
    expect(preflight.headers['access-control-allow-origin']).toBeUndefined();

    const simple = await app.inject({ method: 'GET', url: '/api/v1/widgets', headers: { origin } });
    expect(simple.headers['access-control-allow-origin']).toBeUndefined();
  });
});
