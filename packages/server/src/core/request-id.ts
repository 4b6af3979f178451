import type { IncomingMessage } from 'node:http';
import { newId } from './ids.ts';

/**
 * Inbound `X-Request-Id` values we accept: what load balancers and tracing systems produce (UUIDs, hex,
 * base64url, dotted or colon-separated ids), bounded in length. Anything else could forge log content or
 * bloat every log line, so it is replaced by a fresh id.
 */
const ACCEPTABLE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Fastify's `genReqId`: reuse a well-formed inbound `X-Request-Id`, otherwise generate a UUIDv7. */
export function requestIdOf(request: IncomingMessage): string {
  const inbound = request.headers['x-request-id'];
  return typeof inbound === 'string' && ACCEPTABLE_REQUEST_ID.test(inbound) ? inbound : newId();
}
