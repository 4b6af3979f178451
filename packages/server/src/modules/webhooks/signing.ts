import { createHmac, randomBytes } from 'node:crypto';
import { WEBHOOK_SECRET_PREFIX } from '@plinth/shared';

/**
 * Standard Webhooks signing (https://www.standardwebhooks.com/, "Signature scheme"): the signed content is
 * `${webhook-id}.${webhook-timestamp}.${body}`, the key is the base64-decoded part of the secret after `whsec_`,
 * the signature is `v1,` + base64 of HMAC-SHA256, and several signatures are separated by spaces.
 */

/** Random bytes in a secret: the specification allows 24 to 64; 32 give 256 bits. */
const SECRET_BYTES = 32;

/** A new signing secret: `whsec_` + base64 of 32 random bytes from the operating system's CSPRNG. */
export function newWebhookSecret(): string {
  return `${WEBHOOK_SECRET_PREFIX}${randomBytes(SECRET_BYTES).toString('base64')}`;
}

/** The HMAC key of a secret: its base64 part, decoded. */
function keyOf(secret: string): Buffer {
  if (!secret.startsWith(WEBHOOK_SECRET_PREFIX)) throw new Error('not a webhook signing secret');
  return Buffer.from(secret.slice(WEBHOOK_SECRET_PREFIX.length), 'base64');
}

/**
 * One `v1,<base64>` signature of a message.
 * @param timestamp the `webhook-timestamp` header: whole seconds since the Unix epoch.
 */
export function signMessage(secret: string, messageId: string, timestamp: number, body: string): string {
  const mac = createHmac('sha256', keyOf(secret)).update(`${messageId}.${timestamp}.${body}`, 'utf8');
  return `v1,${mac.digest('base64')}`;
}

/**
 * The three Standard Webhooks headers of a delivery signed by every secret in `secrets` (the current one first,
 * then the previous one during a rotation's overlap), space-separated in `webhook-signature`.
 */
export function signedHeaders(
  secrets: readonly string[],
  messageId: string,
  timestamp: number,
  body: string,
): { 'webhook-id': string; 'webhook-timestamp': string; 'webhook-signature': string } {
  return {
    'webhook-id': messageId,
    'webhook-timestamp': String(timestamp),
    'webhook-signature': secrets.map((secret) => signMessage(secret, messageId, timestamp, body)).join(' '),
  };
}
