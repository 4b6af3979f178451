import { spawnSync } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  generateRecoveryCodes,
  generateTotpSecret,
  hashRecoveryCode,
  normalizeRecoveryCode,
  totpUri,
  verifyTotp,
} from './totp.ts';

// An implementation of RFC 4226/6238 written here from the RFCs with node:crypto alone, sharing no code with
// otplib, so the module is checked against the standard rather than against itself.

const BASE32_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function base32Encode(bytes: Buffer): string {
  let bits = 0;
  let buffer = 0;
  let out = '';
  for (const byte of bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32_ALPHABET.charAt((buffer >>> (bits - 5)) & 31);
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32_ALPHABET.charAt((buffer << (5 - bits)) & 31);
  return out;
}

function base32Decode(text: string): Buffer {
  let bits = 0;
  let buffer = 0;
  const out: number[] = [];
  for (const char of text) {
    const value = BASE32_ALPHABET.indexOf(char);
    if (value < 0) throw new Error(`not base32: ${char}`);
    buffer = (buffer << 5) | value;
    bits += 5;
    if (bits >= 8) {
      out.push((buffer >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** HOTP (RFC 4226 §5.3): HMAC-SHA-1 over the 8-byte big-endian counter, dynamic truncation, modulo 10^digits. */
function hotp(key: Buffer, counter: number, digits: number): string {
  const message = Buffer.alloc(8);
  message.writeBigUInt64BE(BigInt(counter));
  const mac = createHmac('sha1', key).update(message).digest();
  const offset = (mac.at(-1) ?? 0) & 0x0f;
  const binary = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(binary % 10 ** digits).padStart(digits, '0');
}

/** The time step of a Unix time in seconds (RFC 6238 §4.2, T0 = 0, X = 30). */
const stepOf = (unixSeconds: number) => Math.floor(unixSeconds / 30);
const at = (unixSeconds: number) => new Date(unixSeconds * 1000);

/** `oathtool`'s code for the time, or undefined when oathtool is not installed (the test then relies on the rest). */
function oathtoolTotp(base32Secret: string, time: Date): string | undefined {
  const utc = `${time
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d{3}Z$/, '')} UTC`;
  const result = spawnSync('oathtool', ['--totp', '-b', base32Secret, '--now', utc], { encoding: 'utf8' });
  if ((result.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') return undefined;
  expect(result.error).toBeUndefined();
  expect(result.stderr).toBe('');
  expect(result.status).toBe(0);
  return result.stdout.trim();
}

// RFC 6238 Appendix B: the SHA-1 rows, with the 20-byte ASCII seed "12345678901234567890".
const RFC_SEED = Buffer.from('12345678901234567890', 'ascii');
const RFC_SECRET = base32Encode(RFC_SEED);
const RFC_VECTORS: ReadonlyArray<readonly [unixSeconds: number, eightDigits: string]> = [
  [59, '94287082'],
  [1111111109, '07081804'],
  [1111111111, '14050471'],
  [1234567890, '89005924'],
  [2000000000, '69279037'],
  [20000000000, '65353130'],
];

describe('verifyTotp against RFC 6238', () => {
  it('uses the base32 form of the RFC seed that authenticator apps would be given', () => {
    expect(RFC_SECRET).toBe('GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ');
    expect(base32Decode(RFC_SECRET)).toEqual(RFC_SEED);
  });

  it.each(RFC_VECTORS)(
    'accepts the Appendix B code at %i s, as the independent HOTP computes it',
    (time, expected) => {
      const step = stepOf(time);
      // The reference implementation reproduces the RFC's 8-digit value; its 6-digit code is the last 6 digits.
      expect(hotp(RFC_SEED, step, 8)).toBe(expected);
      const code = hotp(RFC_SEED, step, 6);
      expect(code).toBe(expected.slice(-6));

      expect(verifyTotp(RFC_SECRET, code, at(time), null)).toBe(step);

      const fromOathtool = oathtoolTotp(RFC_SECRET, at(time));
      if (fromOathtool !== undefined) expect(fromOathtool).toBe(code);
    },
  );

  it('accepts the independent code for a freshly generated secret', () => {
    const secret = generateTotpSecret();
    const time = 1_700_000_000;
    const code = hotp(base32Decode(secret), stepOf(time), 6);
    expect(verifyTotp(secret, code, at(time), null)).toBe(stepOf(time));
  });
});

describe('verifyTotp drift, replay and input rules', () => {
  const now = 1_111_111_111;
  const step = stepOf(now);
  const codeAt = (s: number) => hotp(RFC_SEED, s, 6);

  it('has five distinct codes around now, so the cases below test what they claim', () => {
    const codes = [-2, -1, 0, 1, 2].map((d) => codeAt(step + d));
    expect(new Set(codes).size).toBe(5);
  });

  it('accepts the code of the current step and of one step either side, returning the matched step', () => {
    expect(verifyTotp(RFC_SECRET, codeAt(step), at(now), null)).toBe(step);
    expect(verifyTotp(RFC_SECRET, codeAt(step - 1), at(now), null)).toBe(step - 1);
    expect(verifyTotp(RFC_SECRET, codeAt(step + 1), at(now), null)).toBe(step + 1);
  });

  it('refuses codes two steps away in either direction', () => {
    expect(verifyTotp(RFC_SECRET, codeAt(step - 2), at(now), null)).toBeNull();
    expect(verifyTotp(RFC_SECRET, codeAt(step + 2), at(now), null)).toBeNull();
  });

  it('keeps the window at exactly ±1 step at both edges of the current step', () => {
    const first = step * 30;
    const last = step * 30 + 29;
    for (const time of [first, last]) {
      expect(verifyTotp(RFC_SECRET, codeAt(step - 1), at(time), null)).toBe(step - 1);
      expect(verifyTotp(RFC_SECRET, codeAt(step + 1), at(time), null)).toBe(step + 1);
      expect(verifyTotp(RFC_SECRET, codeAt(step - 2), at(time), null)).toBeNull();
      expect(verifyTotp(RFC_SECRET, codeAt(step + 2), at(time), null)).toBeNull();
    }
  });

  it('refuses a wrong code', () => {
    const wrong = ['000000', '999999', '123456'].find((c) => ![-1, 0, 1].some((d) => codeAt(step + d) === c));
    expect(wrong).toBeDefined();
    expect(verifyTotp(RFC_SECRET, wrong ?? '', at(now), null)).toBeNull();
    expect(verifyTotp(generateTotpSecret(), codeAt(step), at(now), null)).toBeNull();
  });

  it('refuses the same code a second time once its step is recorded', () => {
    const used = verifyTotp(RFC_SECRET, codeAt(step), at(now), null);
    expect(used).toBe(step);
    expect(verifyTotp(RFC_SECRET, codeAt(step), at(now), used)).toBeNull();
    expect(verifyTotp(RFC_SECRET, codeAt(step), at(now + 10), used)).toBeNull();
  });

  it('refuses an older code after a newer one was used, but accepts a newer one', () => {
    expect(verifyTotp(RFC_SECRET, codeAt(step - 1), at(now), step)).toBeNull();
    expect(verifyTotp(RFC_SECRET, codeAt(step + 1), at(now), step)).toBe(step + 1);
    // After the future code was used, nothing in the window is left, not even the current step's code.
    expect(verifyTotp(RFC_SECRET, codeAt(step), at(now), step + 1)).toBeNull();
    expect(verifyTotp(RFC_SECRET, codeAt(step + 1), at(now), step + 1)).toBeNull();
  });

  it('refuses, rather than throws, when the last used step is ahead of the clock', () => {
    expect(verifyTotp(RFC_SECRET, codeAt(step), at(now), step + 5)).toBeNull();
  });

  it('accepts whitespace inside or around the code', () => {
    const code = codeAt(step);
    expect(verifyTotp(RFC_SECRET, `${code.slice(0, 3)} ${code.slice(3)}`, at(now), null)).toBe(step);
    expect(verifyTotp(RFC_SECRET, ` ${code}\t`, at(now), null)).toBe(step);
  });

  it.each(['12345', '1234567', 'abcdef', '', '      ', '12345a', '-12345', '12.345', '１２３４５６'])(
    'refuses the malformed code %j',
    (code) => {
      expect(verifyTotp(RFC_SECRET, code, at(now), null)).toBeNull();
    },
  );

  it('refuses the right code with extra characters', () => {
    expect(verifyTotp(RFC_SECRET, `${codeAt(step)}0`, at(now), null)).toBeNull();
    expect(verifyTotp(RFC_SECRET, `0${codeAt(step)}`, at(now), null)).toBeNull();
    expect(verifyTotp(RFC_SECRET, `${codeAt(step)}-`, at(now), null)).toBeNull();
  });
});

describe('generateTotpSecret', () => {
  it('returns 160 random bits in unpadded base32', () => {
    const secrets = Array.from({ length: 50 }, () => generateTotpSecret());
    for (const secret of secrets) {
      expect(secret).toMatch(/^[A-Z2-7]{32}$/);
      expect(base32Decode(secret)).toHaveLength(20);
    }
    expect(new Set(secrets).size).toBe(secrets.length);
  });
});

describe('totpUri', () => {
  it('builds an otpauth URI with every parameter spelled out and properly encoded', () => {
    const secret = generateTotpSecret();
    const uri = totpUri({ issuer: 'Plinth Fleet', account: 'ana+ops@example.com', secret });
    expect(uri).toBe(
      `otpauth://totp/Plinth%20Fleet:ana%2Bops%40example.com?secret=${secret}&issuer=Plinth%20Fleet&algorithm=SHA1&digits=6&period=30`,
    );

    const url = new URL(uri);
    expect(url.protocol).toBe('otpauth:');
    expect(url.host).toBe('totp');
    expect(decodeURIComponent(url.pathname)).toBe('/Plinth Fleet:ana+ops@example.com');
    expect(Object.fromEntries(url.searchParams)).toEqual({
      secret,
      issuer: 'Plinth Fleet',
      algorithm: 'SHA1',
      digits: '6',
      period: '30',
    });
  });

  it('encodes characters that would otherwise change the URI structure', () => {
    const url = new URL(totpUri({ issuer: 'A&B', account: 'x?y#z/w:v', secret: 'JBSWY3DPEHPK3PXP' }));
    expect(url.hash).toBe('');
    expect(decodeURIComponent(url.pathname)).toBe('/A&B:x?y#z/w:v');
    expect(url.searchParams.get('issuer')).toBe('A&B');
    expect(url.searchParams.get('period')).toBe('30');
  });

  it('refuses an issuer containing a colon, which would make the label ambiguous', () => {
    expect(() =>
      totpUri({ issuer: 'Plinth:Prod', account: 'ana@example.com', secret: 'JBSWY3DPEHPK3PXP' }),
    ).toThrow(RangeError);
  });
});

describe('recovery codes', () => {
  const CODE_FORMAT = /^[0-9a-hjkmnp-tv-z]{5}-[0-9a-hjkmnp-tv-z]{5}$/;

  it('generates ten distinct codes of two groups of five unambiguous characters', () => {
    const codes = generateRecoveryCodes();
    expect(codes).toHaveLength(10);
    expect(new Set(codes).size).toBe(10);
    for (const code of codes) expect(code).toMatch(CODE_FORMAT);
    expect(generateRecoveryCodes(3)).toHaveLength(3);
  });

  it('draws from all 32 symbols, so each code carries 10 × 5 = 50 bits', () => {
    const symbols = new Set(generateRecoveryCodes(500).join('').replaceAll('-', ''));
    expect(symbols.size).toBe(32);
  });

  it('refuses a count that is not a positive integer', () => {
    for (const count of [0, -1, 2.5]) expect(() => generateRecoveryCodes(count)).toThrow(RangeError);
  });

  it('normalises case, spaces, dashes and the look-alike letters the alphabet leaves out', () => {
    expect(normalizeRecoveryCode(' ABCDE-fghjk ')).toBe('abcdefghjk');
    expect(normalizeRecoveryCode('abc de fg-hjk')).toBe('abcdefghjk');
    expect(normalizeRecoveryCode('O0il1-L')).toBe('001111');
    const [code = ''] = generateRecoveryCodes(1);
    expect(normalizeRecoveryCode(code)).toBe(code.replace('-', ''));
  });

  it('hashes with a keyed HMAC-SHA256 of the normalised code, stable across spellings', () => {
    const key = randomBytes(32);
    const [code = ''] = generateRecoveryCodes(1);
    const hash = hashRecoveryCode(key, code);
    expect(hash).toMatch(/^[0-9a-f]{64}$/);
    expect(hash).toBe(createHmac('sha256', key).update(code.replace('-', '')).digest('hex'));
    expect(hashRecoveryCode(key, code)).toBe(hash);
    expect(hashRecoveryCode(key, ` ${code.toUpperCase().replace('-', ' ')} `)).toBe(hash);
  });

  it('gives a different hash under a different key, and for a different code', () => {
    const key = randomBytes(32);
    const [a = '', b = ''] = generateRecoveryCodes(2);
    expect(hashRecoveryCode(randomBytes(32), a)).not.toBe(hashRecoveryCode(key, a));
    expect(hashRecoveryCode(key, b)).not.toBe(hashRecoveryCode(key, a));
  });
});
