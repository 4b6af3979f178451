import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  decryptSecret,
  encryptSecret,
  hmacSha256Hex,
  randomToken,
  SecretDecryptionError,
  safeEqual,
  sha256Hex,
} from './crypto.ts';

const key = randomBytes(32);

/** Replaces one character of a base64url string with a different base64url character. */
function flipChar(text: string, index: number): string {
  const current = text.charAt(index);
  const replacement = current === 'A' ? 'B' : 'A';
  return `${text.slice(0, index)}${replacement}${text.slice(index + 1)}`;
}

describe('encryptSecret / decryptSecret', () => {
  it('round-trips text, including empty and non-ASCII text', () => {
    for (const plaintext of ['JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP', '', 'clé secrète ✓ 🚗']) {
      expect(decryptSecret(key, encryptSecret(key, plaintext))).toBe(plaintext);
      expect(decryptSecret(key, encryptSecret(key, plaintext, 'user-1'), 'user-1')).toBe(plaintext);
    }
  });

  it('writes the versioned compact format v1.<iv>.<tag>.<ciphertext> in base64url', () => {
    const value = encryptSecret(key, 'secret');
    expect(value).toMatch(/^v1\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]+$/);
    expect(value).not.toContain('secret');
  });

  it('gives different ciphertexts for the same plaintext', () => {
    const a = encryptSecret(key, 'same', 'user-1');
    const b = encryptSecret(key, 'same', 'user-1');
    expect(a).not.toBe(b);
    expect(a.split('.')[1]).not.toBe(b.split('.')[1]);
  });

  it('refuses a value with any of its parts altered', () => {
    const value = encryptSecret(key, 'a secret worth protecting', 'user-1');
    const parts = value.split('.');
    for (let part = 1; part < parts.length; part++) {
      const text = parts[part] ?? '';
      for (const index of [0, Math.floor(text.length / 2), text.length - 1]) {
        const tampered = parts.map((p, i) => (i === part ? flipChar(p, index) : p)).join('.');
        expect(tampered).not.toBe(value);
        expect(() => decryptSecret(key, tampered, 'user-1')).toThrow(SecretDecryptionError);
      }
    }
  });

  it('refuses a value whose parts are swapped, truncated or extended', () => {
    const [version, iv, tag, ciphertext] = encryptSecret(key, 'secret').split('.');
    const other = encryptSecret(key, 'secret').split('.');
    const attempts = [
      [version, other[1], tag, ciphertext].join('.'),
      [version, iv, other[2], ciphertext].join('.'),
      [version, iv, tag].join('.'),
      [version, iv, tag, ciphertext, ''].join('.'),
      [version, iv, tag, `${ciphertext}AA`].join('.'),
      [version, iv, tag?.slice(0, 16), ciphertext].join('.'),
      '',
    ];
    for (const attempt of attempts) expect(() => decryptSecret(key, attempt)).toThrow(SecretDecryptionError);
  });

  it('refuses base64url that is not in canonical form, so no edit to the stored text goes unnoticed', () => {
    const [version, iv, tag, ciphertext] = encryptSecret(key, 'secret').split('.');
    // A 16-byte tag is 22 characters; the last carries 4 spare bits that Node's decoder would ignore.
    const last = tag?.at(-1) ?? 'A';
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const sameTopBits = alphabet.charAt(
      (alphabet.indexOf(last) & ~0b1111) | (~alphabet.indexOf(last) & 0b1111),
    );
    const lenientTag = `${tag?.slice(0, -1)}${sameTopBits}`;
    expect(Buffer.from(lenientTag, 'base64url')).toEqual(Buffer.from(tag ?? '', 'base64url'));
    expect(() => decryptSecret(key, [version, iv, lenientTag, ciphertext].join('.'))).toThrow(
      /not base64url/,
    );
    expect(() => decryptSecret(key, [version, iv, tag, `${ciphertext}=`].join('.'))).toThrow(/not base64url/);
  });

  it('refuses an unknown format version with a message that says so', () => {
    const value = encryptSecret(key, 'secret').replace(/^v1\./, 'v2.');
    expect(() => decryptSecret(key, value)).toThrow(/unknown format version/);
  });

  it('refuses the wrong key', () => {
    const value = encryptSecret(key, 'secret');
    expect(() => decryptSecret(randomBytes(32), value)).toThrow(/authentication failed/);
  });

  it('refuses the wrong associated data, so a ciphertext cannot be moved to another row', () => {
    const value = encryptSecret(key, 'secret', 'user-1');
    expect(() => decryptSecret(key, value, 'user-2')).toThrow(/authentication failed/);
    expect(() => decryptSecret(key, value)).toThrow(/authentication failed/);
    expect(() => decryptSecret(key, encryptSecret(key, 'secret'), 'user-1')).toThrow(/authentication failed/);
  });

  it('keeps the stored value and the plaintext out of its error messages', () => {
    const value = encryptSecret(key, 'top-secret-plaintext', 'user-1');
    try {
      decryptSecret(key, value, 'user-2');
      expect.unreachable('decryption should have failed');
    } catch (error) {
      expect(error).toBeInstanceOf(SecretDecryptionError);
      expect(String(error)).not.toContain(value);
      expect(String(error)).not.toContain('top-secret-plaintext');
    }
  });

  it('insists on a 32-byte key', () => {
    expect(() => encryptSecret(randomBytes(16), 'secret')).toThrow(RangeError);
    expect(() => decryptSecret(randomBytes(31), encryptSecret(key, 'secret'))).toThrow(RangeError);
  });
});

describe('randomToken', () => {
  it('encodes 32 random bytes (256 bits) as 43 base64url characters by default', () => {
    const token = randomToken();
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(token, 'base64url')).toHaveLength(32);
  });

  it('encodes the requested number of bytes', () => {
    expect(Buffer.from(randomToken(16), 'base64url')).toHaveLength(16);
    expect(randomToken(48)).toMatch(/^[A-Za-z0-9_-]{64}$/);
  });

  it('never repeats itself', () => {
    const tokens = new Set(Array.from({ length: 1000 }, () => randomToken()));
    expect(tokens.size).toBe(1000);
  });

  it('refuses a byte count that is not a positive integer', () => {
    for (const bytes of [0, -1, 1.5, Number.NaN]) expect(() => randomToken(bytes)).toThrow(RangeError);
  });
});

describe('hashes', () => {
  it('computes SHA-256 and HMAC-SHA256 (RFC 4231 test case 2) as lower-case hex', () => {
    expect(sha256Hex('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(hmacSha256Hex(Buffer.from('Jefe'), 'what do ya want for nothing?')).toBe(
      '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843',
    );
  });
});

describe('safeEqual', () => {
  it('is true only for identical strings', () => {
    expect(safeEqual('token-value', 'token-value')).toBe(true);
    expect(safeEqual('', '')).toBe(true);
    expect(safeEqual('token-value', 'token-valuf')).toBe(false);
    expect(safeEqual('token-value', 'Token-value')).toBe(false);
  });

  it('is false, without throwing, when the lengths differ', () => {
    expect(safeEqual('token', 'token-value')).toBe(false);
    expect(safeEqual('token-value', '')).toBe(false);
    expect(safeEqual('', 'x')).toBe(false);
  });

  it('compares the exact UTF-8 bytes, with no Unicode normalisation', () => {
    expect(safeEqual('é', 'e\u0301')).toBe(false);
    expect(safeEqual('ab', 'é')).toBe(false);
    expect(safeEqual('clé', 'clé')).toBe(true);
  });
});
