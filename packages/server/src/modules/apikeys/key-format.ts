import { API_KEY_PREFIX } from '@plinth/shared';
import { hmacSha256Hex, randomToken } from '../../core/crypto.ts';

/**
 * The API key format: `plk_live_<public id>_<secret>`.
 * - `plk_live_` makes a key recognisable to people and to secret scanners;
 * - the public id is the key's row id (a UUID, 32 hex digits without hyphens), so a key is found by primary key
 *   without a search, and can be named in logs and audit records without revealing anything;
 * - the secret is 32 random bytes (256 bits) in base64url (43 characters).
 *
 * Only a keyed hash of the secret is stored: HMAC-SHA256 under a key derived from ENCRYPTION_KEY. A slow
 * password hash (argon2) would add nothing here: it exists to make guessing low-entropy passwords expensive,
 * and no amount of guessing finds a 256-bit random secret, while it would cost every API request tens of
 * milliseconds. The key makes the stored hashes useless to someone who has a copy of the database alone.
 */

const ID_HEX_LENGTH = 32;
const SECRET_LENGTH = 43;
const KEY_PATTERN = new RegExp(
  `^${API_KEY_PREFIX}([0-9a-f]{${ID_HEX_LENGTH}})_([A-Za-z0-9_-]{${SECRET_LENGTH}})$`,
);

export function newSecret(): string {
  return randomToken(32);
}

export function formatKey(id: string, secret: string): string {
  return `${keyPrefix(id)}_${secret}`;
}

/** The non-secret start of a key, shown in lists so people can tell their keys apart. */
export function keyPrefix(id: string): string {
  return `${API_KEY_PREFIX}${id.replaceAll('-', '')}`;
}

/** A key's id (as a UUID) and secret, or undefined when it is not shaped like a Plinth key at all. */
export function parseKey(key: string): { id: string; secret: string } | undefined {
  const match = KEY_PATTERN.exec(key);
  if (!match?.[1] || !match[2]) return undefined;
  const hex = match[1];
  const id = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  return { id, secret: match[2] };
}

export function hashSecret(hashKey: Buffer, secret: string): string {
  return hmacSha256Hex(hashKey, secret);
}
