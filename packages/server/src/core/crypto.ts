import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  hkdfSync,
  randomBytes,
  timingSafeEqual,
} from 'node:crypto';

/**
 * Small cryptographic primitives on node:crypto. They carry no business rules: which key protects what, and
 * what a token is for, is decided by the modules that call them.
 */

/**
 * A random, URL-safe token: `bytes` bytes from the operating system's CSPRNG, base64url-encoded without padding.
 * @param bytes how many random bytes (entropy = 8 × bytes bits); the default 32 gives 256 bits, 43 characters.
 * @throws RangeError when `bytes` is not a positive integer.
 */
export function randomToken(bytes = 32): string {
  if (!Number.isSafeInteger(bytes) || bytes < 1)
    throw new RangeError('randomToken: bytes must be a positive integer');
  return randomBytes(bytes).toString('base64url');
}

/** SHA-256 of the UTF-8 bytes of `value`, as 64 lower-case hex characters. Unkeyed: fit only for high-entropy input. */
export function sha256Hex(value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('hex');
}

/** HMAC-SHA256 of the UTF-8 bytes of `value` under `key`, as 64 lower-case hex characters. */
export function hmacSha256Hex(key: Buffer, value: string): string {
  return createHmac('sha256', key).update(value, 'utf8').digest('hex');
}

/**
 * Compares two strings (as UTF-8 bytes) in time that depends only on their lengths, so that comparing a guess
 * with a secret reveals nothing about how many leading characters were right.
 * @returns true when the strings are identical; false otherwise, including when their lengths differ.
 */
export function safeEqual(a: string, b: string): boolean {
  const left = Buffer.from(a, 'utf8');
  const right = Buffer.from(b, 'utf8');
  const sameLength = left.length === right.length;
  // timingSafeEqual throws on unequal lengths; comparing `left` with itself then still costs the same work as a
  // real comparison, so the only thing the timing can tell is the length, never where the strings differ.
  const sameBytes = timingSafeEqual(left, sameLength ? right : left);
  return sameLength && sameBytes;
}

/** Format tag of the ciphertexts `encryptSecret` writes; a future scheme gets a new tag and old rows still decrypt. */
const FORMAT_V1 = 'v1';
const KEY_BYTES = 32;
/** 96-bit IVs are GCM's native size (NIST SP 800-38D); random ones are safe for up to 2^32 encryptions per key. */
const IV_BYTES = 12;
const TAG_BYTES = 16;

/**
 * Encrypts a secret for storage with AES-256-GCM under a fresh random IV, so equal plaintexts give different
 * ciphertexts and any change to the stored value is detected on decryption.
 * @param key 32 bytes (`config.encryptionKey`).
 * @param plaintext the secret, as text.
 * @param associatedData optional context bound to the ciphertext without being stored in it, e.g. the owning
 *   user's id, so a value copied into another row fails to decrypt there. `undefined` and `''` are equivalent.
 * @returns `v1.<iv>.<tag>.<ciphertext>`, each part base64url without padding; plain ASCII, safe in a text column.
 * @throws RangeError when the key is not 32 bytes.
 */
export function encryptSecret(key: Buffer, plaintext: string, associatedData?: string): string {
  assertKey(key);
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
  if (associatedData !== undefined) cipher.setAAD(Buffer.from(associatedData, 'utf8'));
  const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  const tag = cipher.getAuthTag();
  return [
    FORMAT_V1,
    iv.toString('base64url'),
    tag.toString('base64url'),
    ciphertext.toString('base64url'),
  ].join('.');
}

/**
 * Decrypts a value written by `encryptSecret`.
 * @param key the same 32-byte key.
 * @param value the stored `v1.<iv>.<tag>.<ciphertext>` string.
 * @param associatedData the same associated data given at encryption, if any.
 * @returns the plaintext.
 * @throws SecretDecryptionError when the value is malformed or of an unknown version, or when authentication
 *   fails: a wrong key, wrong associated data, or a value that was altered. Never returns altered plaintext.
 * @throws RangeError when the key is not 32 bytes.
 */
export function decryptSecret(key: Buffer, value: string, associatedData?: string): string {
  assertKey(key);
  const parts = value.split('.');
  if (parts[0] !== FORMAT_V1) {
    throw new SecretDecryptionError('unknown format version (expected "v1.<iv>.<tag>.<ciphertext>")');
  }
  if (parts.length !== 4) throw new SecretDecryptionError('malformed value: expected 4 dot-separated parts');
  const [, ivText = '', tagText = '', ciphertextText = ''] = parts;
  const iv = decodeBase64Url(ivText, 'iv');
  const tag = decodeBase64Url(tagText, 'tag');
  const ciphertext = decodeBase64Url(ciphertextText, 'ciphertext');
  if (iv.length !== IV_BYTES)
    throw new SecretDecryptionError(`malformed value: iv must be ${IV_BYTES} bytes`);
  // A short tag would let GCM accept a truncated, much weaker check; only the full 16 bytes are accepted.
  if (tag.length !== TAG_BYTES)
    throw new SecretDecryptionError(`malformed value: tag must be ${TAG_BYTES} bytes`);
  const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
  decipher.setAuthTag(tag);
  if (associatedData !== undefined) decipher.setAAD(Buffer.from(associatedData, 'utf8'));
  try {
    return Buffer.concat([decipher.update(ciphertext), decipher.final()]).toString('utf8');
  } catch (cause) {
    // OpenSSL says only "Unsupported state or unable to authenticate data"; name the likely reasons instead.
    throw new SecretDecryptionError(
      'authentication failed: wrong key, wrong associated data, or the value was altered',
      { cause },
    );
  }
}

/**
 * Raised by `decryptSecret` when a stored secret cannot be trusted. Its message never contains key material,
 * plaintext or the stored value, so it is safe to log.
 */
export class SecretDecryptionError extends Error {
  override name = 'SecretDecryptionError';
  constructor(reason: string, options?: { cause?: unknown }) {
    super(`Cannot decrypt secret: ${reason}`, options);
  }
}

function assertKey(key: Buffer): void {
  if (key.length !== KEY_BYTES)
    throw new RangeError(`Encryption key must be ${KEY_BYTES} bytes, got ${key.length}`);
}

/**
 * Node's base64url decoder silently skips characters outside the alphabet and ignores the spare low bits of the
 * last character, so several strings decode to the same bytes. Insisting on the one canonical spelling makes
 * every change to the stored text an error rather than, sometimes, a no-op.
 */
function decodeBase64Url(text: string, name: string): Buffer {
  const bytes = Buffer.from(text, 'base64url');
  if (bytes.toString('base64url') !== text)
    throw new SecretDecryptionError(`malformed value: ${name} is not base64url`);
  return bytes;
}

/**
 * A 32-byte key for one purpose, derived from a master key with HKDF-SHA256, so that one configured secret can
 * serve several uses without any two sharing a key.
 * @param purpose a fixed label naming the use, e.g. `plinth api-key hashing`.
 */
export function deriveKey(masterKey: Buffer, purpose: string): Buffer {
  return Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), purpose, 32));
}
