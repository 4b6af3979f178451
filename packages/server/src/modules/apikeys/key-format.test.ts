import { randomBytes } from 'node:crypto';
import { API_KEY_PREFIX } from '@plinth/shared';
import { describe, expect, it } from 'vitest';
import { newId } from '../../core/ids.ts';
import { formatKey, hashSecret, keyPrefix, newSecret, parseKey } from './key-format.ts';

// The key format is what clients store and secret scanners look for, and parseKey is the first gate every
// presented key passes: anything it lets through reaches the database lookup.

/** A well-formed key with a fresh id and secret, and its parts. */
function sampleKey(): { key: string; id: string; secret: string } {
  const id = newId();
  const secret = newSecret();
  return { key: formatKey(id, secret), id, secret };
}

/** The 32 hex digits of a UUID, as they appear in a key. */
const hexOf = (id: string) => id.replaceAll('-', '');

describe('formatKey and parseKey', () => {
  it('round-trips the id and secret of freshly made keys', () => {
    for (let i = 0; i < 50; i++) {
      const { key, id, secret } = sampleKey();
      expect(parseKey(key)).toEqual({ id, secret });
    }
  });

  it('starts every key with the recognisable plk_live_ prefix, followed by the id without hyphens', () => {
    const { key, id } = sampleKey();
    expect(API_KEY_PREFIX).toBe('plk_live_');
    expect(key.startsWith(`plk_live_${hexOf(id)}_`)).toBe(true);
    expect(keyPrefix(id)).toBe(`plk_live_${hexOf(id)}`);
    expect(key.startsWith(keyPrefix(id))).toBe(true);
  });

  it('round-trips secrets that contain the base64url characters - and _', () => {
    const id = newId();
    const secret = `${'_'.repeat(21)}${'-'.repeat(22)}`;
    expect(parseKey(formatKey(id, secret))).toEqual({ id, secret });
  });
});

describe('newSecret', () => {
  it('carries 256 bits: 43 base64url characters that decode to 32 bytes', () => {
    const secret = newSecret();
    expect(secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(secret, 'base64url')).toHaveLength(32);
  });

  it('never repeats', () => {
    const secrets = new Set(Array.from({ length: 1000 }, () => newSecret()));
    expect(secrets.size).toBe(1000);
  });
});

describe('parseKey refuses anything not shaped exactly like a key', () => {
  const { key, id, secret } = sampleKey();
  const hex = hexOf(id);
  const otherSecret = newSecret();

  it.each([
    ['the empty string', ''],
    ['the prefix alone', 'plk_live_'],
    ['a test-mode prefix', `plk_test_${hex}_${secret}`],
    ['another vendor’s prefix', `sk_live_${hex}_${secret}`],
    ['an upper-case prefix', `PLK_LIVE_${hex}_${secret}`],
    ['no prefix at all', `${hex}_${secret}`],
    ['an id one digit short', `plk_live_${hex.slice(1)}_${secret}`],
    ['an id one digit long', `plk_live_${hex}0_${secret}`],
    ['an id with a non-hex digit', `plk_live_${hex.slice(0, -1)}g_${secret}`],
    ['an id in upper-case hex', `plk_live_${'0123456789ABCDEF'.repeat(2)}_${secret}`],
    ['an id with its hyphens', `plk_live_${id}_${secret}`],
    ['a secret one character short', `plk_live_${hex}_${secret.slice(1)}`],
    ['a secret one character long', `plk_live_${hex}_${secret}A`],
    ['a secret with a character outside base64url', `plk_live_${hex}_${secret.slice(1)}+`],
    ['a padded secret', `plk_live_${hex}_${secret.slice(1)}=`],
    ['a missing separator', `plk_live_${hex}${secret}`],
    ['a trailing newline', `${key}\n`],
    ['a leading space', ` ${key}`],
    ['a trailing space', `${key} `],
    ['two keys run together', `${key}${key}`],
    ['a key with a second secret appended', `${key}_${otherSecret}`],
  ])('refuses %s', (_label, candidate) => {
    expect(parseKey(candidate)).toBeUndefined();
  });

  it('accepts the untouched key the cases above were made from', () => {
    expect(parseKey(key)).toEqual({ id, secret });
  });
});

describe('hashSecret', () => {
  const hashKey = randomBytes(32);

  it('is deterministic: the same key and secret always give the same hash', () => {
    const secret = newSecret();
    expect(hashSecret(hashKey, secret)).toBe(hashSecret(hashKey, secret));
    expect(hashSecret(Buffer.from(hashKey), secret)).toBe(hashSecret(hashKey, secret));
  });

  it('is keyed: another hashing key gives another hash, so a copy of the database alone is useless', () => {
    const secret = newSecret();
    expect(hashSecret(randomBytes(32), secret)).not.toBe(hashSecret(hashKey, secret));
  });

  it('gives different secrets different hashes', () => {
    const hashes = new Set(Array.from({ length: 200 }, () => hashSecret(hashKey, newSecret())));
    expect(hashes.size).toBe(200);
  });

  it('stores nothing of the secret: a 64-digit hex digest that does not contain it', () => {
    const secret = newSecret();
    const hash = hashSecret(hashKey, secret);
    expect(hash).toMatch(/^[0-9a-f]{64}$/);
    expect(hash).not.toContain(secret);
  });
});
