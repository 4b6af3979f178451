import { randomBytes } from 'node:crypto';
import { generateSecret, verifySync } from 'otplib';
import { hmacSha256Hex } from '../../core/crypto.ts';

/**
 * Time-based one-time passwords (RFC 6238) for the second factor, and the recovery codes that stand in for the
 * authenticator when it is lost. The parameters are the ones every authenticator app supports: HMAC-SHA-1,
 * 6 digits, 30-second steps counted from the Unix epoch. otplib (v13) does the HOTP arithmetic, the base32
 * decoding and the constant-time comparison; this file adds Plinth's rules: exactly ±1 step of drift
 * (ASVS 6.5.5) and a code that works once (ASVS 6.5.1).
 */

/** Length of a time step, in seconds. */
const PERIOD_SECONDS = 30;
const DIGITS = 6;
/** 160 bits: the HMAC-SHA-1 block-size-friendly length RFC 4226 recommends, and what authenticator apps expect. */
const SECRET_BYTES = 20;
/** How many steps before and after the current one a code may come from: covers clock skew and typing time. */
const DRIFT_STEPS = 1;

/**
 * A new TOTP secret: 160 random bits, base32-encoded (RFC 4648, upper-case, no padding — 32 characters), the form
 * authenticator apps accept in a QR code or typed by hand. Store it encrypted (`encryptSecret`), never in a log.
 */
export function generateTotpSecret(): string {
  return generateSecret({ length: SECRET_BYTES });
}

/**
 * The `otpauth://` URI an authenticator app reads from a QR code, in the Key URI Format that Google Authenticator
 * defined and other apps follow: `otpauth://totp/<issuer>:<account>?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30`.
 * Every parameter is spelled out, although most are defaults, because some apps ignore a missing one differently.
 * @param issuer the service's name as the app should show it, e.g. "Plinth"; must not contain ":".
 * @param account the user's name in the app, usually their email address.
 * @param secret the base32 secret from `generateTotpSecret`.
 * @throws RangeError when `issuer` contains ":", which would make the label ambiguous.
 */
export function totpUri({
  issuer,
  account,
  secret,
}: {
  issuer: string;
  account: string;
  secret: string;
}): string {
  if (issuer.includes(':')) throw new RangeError('totpUri: the issuer must not contain ":"');
  // encodeURIComponent, not URLSearchParams: the format wants spaces as %20, and some apps show a '+' literally.
  const label = `${encodeURIComponent(issuer)}:${encodeURIComponent(account)}`;
  const query = [
    ['secret', secret],
    ['issuer', issuer],
    ['algorithm', 'SHA1'],
    ['digits', String(DIGITS)],
    ['period', String(PERIOD_SECONDS)],
  ]
    .map(([name, value = '']) => `${name}=${encodeURIComponent(value)}`)
    .join('&');
  return `otpauth://totp/${label}?${query}`;
}

/** Longest input worth looking at: a 6-digit code with generous spacing. Anything longer is not a code. */
const MAX_CODE_INPUT_LENGTH = 32;

/**
 * Checks a code from the user's authenticator.
 *
 * A code is accepted when it is exactly six ASCII digits (whitespace anywhere is ignored, as apps often show
 * "123 456") and matches the time step of `now` or the one just before or after it, **and** that step is later
 * than `lastUsedStep`. The caller stores the returned step as `users.totp_last_step` in the same transaction as
 * the sign-in, so the same code — or any code from an earlier or equal step — is refused from then on, even
 * within its 90-second window.
 * @param secret the user's base32 secret, decrypted.
 * @param code what the user typed.
 * @param now the current time (from the request's `Clock`).
 * @param lastUsedStep the step of the last accepted code, or null if none was ever accepted.
 * @returns the matched time step, `floor(unixSeconds / 30)`, or null when the code is refused.
 * @throws when `secret` is not valid base32 of at least 16 bytes: that is corrupt data, not a wrong code.
 */
export function verifyTotp(
  secret: string,
  code: string,
  now: Date,
  lastUsedStep: number | null,
): number | null {
  if (code.length > MAX_CODE_INPUT_LENGTH) return null;
  const token = code.replace(/\s/g, '');
  // Checked here so that malformed input is a plain refusal; otplib would throw on it.
  if (!/^[0-9]{6}$/.test(token)) return null;

  const epoch = Math.floor(now.getTime() / 1000);
  const currentStep = Math.floor(epoch / PERIOD_SECONDS);
  if (lastUsedStep !== null && !Number.isSafeInteger(lastUsedStep)) {
    throw new TypeError('verifyTotp: lastUsedStep must be an integer or null');
  }
  // A step already used at or beyond the newest acceptable one (the clock went back) leaves nothing to accept;
  // otplib would throw on such a bound, but for the user it is just a refused code.
  if (lastUsedStep !== null && lastUsedStep >= currentStep + DRIFT_STEPS) return null;

  const result = verifySync({
    secret,
    token,
    algorithm: 'sha1',
    digits: DIGITS,
    period: PERIOD_SECONDS,
    epoch,
    // otplib's tolerance is in seconds: the steps holding epoch − 30 s and epoch + 30 s are exactly step ∓ 1.
    epochTolerance: DRIFT_STEPS * PERIOD_SECONDS,
    // Exclusive: steps ≤ lastUsedStep are skipped. A negative value (never stored, but harmless) excludes nothing.
    ...(lastUsedStep !== null && lastUsedStep >= 0 ? { afterTimeStep: lastUsedStep } : {}),
  });
  if (!result.valid) return null;
  // Belt and braces for the two rules that matter, whatever a future otplib does with its options.
  // `delta` is the matched step minus the current one; the functional API's result type is shared with HOTP,
  // whose results have no `timeStep`, so the step is derived from `delta` rather than narrowed out of the union.
  const step = currentStep + result.delta;
  if (Math.abs(step - currentStep) > DRIFT_STEPS) return null;
  if (lastUsedStep !== null && step <= lastUsedStep) return null;
  return step;
}

/**
 * Crockford's base32 alphabet in lower case: no i, l, o or u, so nothing in a code can be misread as another
 * character (0 and 1 have no look-alike left). 32 symbols make each character exactly 5 bits, and a random
 * byte masked to 5 bits picks one without bias.
 */
const RECOVERY_ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';
const RECOVERY_CODE_CHARS = 10;

/**
 * Fresh recovery codes, shown to the user once and stored only as `hashRecoveryCode` hashes; each works once.
 * @param count how many codes; 10 by default.
 * @returns codes like `7fk2q-m9xth`: 10 characters of Crockford base32 (50 random bits) in two groups of five.
 */
export function generateRecoveryCodes(count = 10): string[] {
  if (!Number.isSafeInteger(count) || count < 1)
    throw new RangeError('generateRecoveryCodes: count must be a positive integer');
  const codes = new Set<string>();
  // A repeat (chance about 1 in 10^13 for ten codes) would leave the user one code short; draw again instead.
  while (codes.size < count) {
    const chars = [...randomBytes(RECOVERY_CODE_CHARS)]
      .map((byte) => RECOVERY_ALPHABET.charAt(byte & 31))
      .join('');
    codes.add(`${chars.slice(0, 5)}-${chars.slice(5)}`);
  }
  return [...codes];
}

/**
 * The canonical form of a recovery code as typed: lower case, without spaces or dashes, and with the letters
 * Crockford's alphabet leaves out read as the digits they resemble (o → 0, i and l → 1), since a generated code
 * never contains them. Two spellings of the same code always normalise alike.
 */
export function normalizeRecoveryCode(input: string): string {
  return input.toLowerCase().replace(/[\s-]/g, '').replace(/o/g, '0').replace(/[il]/g, '1');
}

/**
 * The value stored for a recovery code: HMAC-SHA256 (hex) of its normalised form.
 *
 * A fast hash is right here, unlike for passwords. Each code carries 50 random bits, so guessing one online is
 * hopeless under the sign-in rate limits, and a slow hash (argon2) would only make every legitimate check costly
 * without changing those odds. The threat a fast hash leaves open is offline: with an unkeyed SHA-256 a stolen
 * database dump could be searched at GPU speed (2^50 hashes is hours, not years). Keying the hash with a server
 * secret that is not stored in the database closes that door: without the key the hashes are useless.
 * The normalised code is hashed, so any accepted spelling of a code finds its row.
 * @param key a server-side secret kept outside the database, e.g. `config.encryptionKey`.
 * @param code the code as generated or as the user typed it.
 */
export function hashRecoveryCode(key: Buffer, code: string): string {
  return hmacSha256Hex(key, normalizeRecoveryCode(code));
}
