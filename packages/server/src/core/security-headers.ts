import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import helmet from 'helmet';

/**
 * The security headers every response carries, decided by helmet (the OWASP-aligned defaults) with Plinth's
 * stricter choices, checked against the OWASP Secure Headers Project's list. An API answers JSON, so nothing in
 * a response may load, run, frame or submit anything; the API reference at /docs sets its own policy.
 */
const helmetOptions: Parameters<typeof helmet>[0] = {
  contentSecurityPolicy: {
    useDefaults: false,
    directives: {
      defaultSrc: ["'none'"],
      baseUri: ["'none'"],
      formAction: ["'none'"],
      frameAncestors: ["'none'"],
    },
  },
  // The OWASP list's choice; harmless for JSON, and it keeps any document served here cross-origin isolated.
  crossOriginEmbedderPolicy: { policy: 'require-corp' },
  frameguard: { action: 'deny' },
  referrerPolicy: { policy: 'no-referrer' },
  // HSTS only means something over TLS, so it is added per request (below), not to every response.
  strictTransportSecurity: false,
};

const HSTS = 'max-age=31536000; includeSubDomains';

/**
 * Every powerful browser feature denied to every origin (`feature=()`), after the OWASP Secure Headers
 * Project's recommendation (which lets `sync-xhr` stay on for the page itself; an API has no page). Helmet does
 * not set this header.
 */
const PERMISSIONS_POLICY = [
  'accelerometer',
  'autoplay',
  'camera',
  'clipboard-read',
  'clipboard-write',
  'cross-origin-isolated',
  'display-capture',
  'encrypted-media',
  'fullscreen',
  'gamepad',
  'geolocation',
  'gyroscope',
  'hid',
  'idle-detection',
  'interest-cohort',
  'keyboard-map',
  'magnetometer',
  'microphone',
  'midi',
  'payment',
  'picture-in-picture',
  'publickey-credentials-get',
  'screen-wake-lock',
  'serial',
  'sync-xhr',
  'unload',
  'usb',
  'web-share',
  'xr-spatial-tracking',
]
  .map((feature) => `${feature}=()`)
  .join(', ');

/**
 * The headers helmet sets for `helmetOptions`. They do not depend on the request, so helmet runs once, against a
 * recording response, instead of once per request (which @fastify/helmet does, at a measurable cost).
 */
function computeHeaders(): Record<string, string> {
  const headers: Record<string, string> = {};
  const recorder = {
    setHeader(name: string, value: string) {
      headers[name.toLowerCase()] = value;
    },
    removeHeader(name: string) {
      delete headers[name.toLowerCase()];
    },
  };
  let done = false;
  helmet(helmetOptions)({} as IncomingMessage, recorder as unknown as ServerResponse, () => {
    done = true;
  });
  if (!done) throw new Error('helmet did not complete synchronously');
  return { ...headers, 'permissions-policy': PERMISSIONS_POLICY };
}

async function securityHeaders(app: FastifyInstance): Promise<void> {
  const headers = computeHeaders();
  app.addHook('onRequest', async (request, reply) => {
    reply.headers(headers);
    if (request.protocol === 'https') reply.header('strict-transport-security', HSTS);
  });
}

/** Adds helmet's security headers to every response, and HSTS to those served over TLS. */
export const securityHeadersPlugin = fp(securityHeaders, { name: 'plinth-security-headers' });
