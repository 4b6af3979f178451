import { randomBytes } from 'node:crypto';
import { type Algorithm, hash, parseOptions, type Version, verify } from '@node-rs/argon2';

/**
 * Cost parameters of argon2id, as configured in `AuthConfig.argon2`. Config refuses anything below OWASP's
 * current minimum for argon2id (m = 19 MiB, t = 2, p = 1); raising any of them makes the next successful sign-in
 * of every user re-hash their password (see {@link verifyPassword}).
 */
export interface Argon2Params {
  /** Memory per lane, in KiB (`m=` in the PHC string); at least 19456. */
  readonly memoryKib: number;
  /** Number of passes over memory (`t=`); at least 2. */
  readonly timeCost: number;
  /** Number of lanes (`p=`); at least 1. */
  readonly parallelism: number;
}

/** Outcome of {@link verifyPassword}. */
export interface PasswordVerification {
  /** The password matches the stored hash. */
  ok: boolean;
  /**
   * The password matched but the hash was made with weaker settings than configured (older algorithm, version or
   * lower m/t/p): the caller should store `hashPassword(password, params)` in its place while it still has the
   * plain password. Always false when `ok` is false, since nothing can be re-hashed without the right password.
   */
  needsRehash: boolean;
}

// `Algorithm` and `Version` are declared as ambient `const enum`s, which code compiled file by file (tsx, Vitest,
// `isolatedModules`) cannot read, and the native module exports them as empty objects at run time. Their values
// are fixed by the typings, so they are spelled out here, typed by the enums so a change would fail to compile.
const ARGON2ID: Algorithm = 2;
const VERSION_0X13: Version = 1;

/**
 * Normalises a password the way NIST SP 800-63B-4 (§3.1.1.2) recommends: Unicode NFKC, so the same password
 * typed on another keyboard, operating system or input method (a precomposed "é" against "e" + combining accent,
 * full-width letters from an IME, the "ﬁ" ligature an autocorrect inserted) hashes to the same value. Nothing is
 * trimmed, case-folded or truncated: every other character the person chose counts.
 */
function normalise(password: string): string {
  return password.normalize('NFKC');
}

/**
 * Hashes a password with argon2id at the given cost and a fresh 16-byte random salt.
 *
 * @returns the PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), which carries the algorithm and
 *   parameters so later verifications need no configuration and weaker hashes can be recognised and upgraded.
 *   Takes about 20 ms and 19 MiB at the default parameters, on libuv's thread pool (the event loop stays free).
 */
export async function hashPassword(password: string, params: Argon2Params): Promise<string> {
  return hash(normalise(password), {
    algorithm: ARGON2ID,
    version: VERSION_0X13,
    memoryCost: params.memoryKib,
    timeCost: params.timeCost,
    parallelism: params.parallelism,
  });
}

/**
 * Checks a password against a stored PHC hash (at the hash's own parameters) and says whether the hash should be
 * upgraded to the configured parameters. A malformed or unsupported hash (corrupted row, another scheme such as
 * bcrypt) verifies as false rather than throwing, so sign-in answers "wrong password" instead of a 500.
 */
export async function verifyPassword(
  storedHash: string,
  password: string,
  params: Argon2Params,
): Promise<PasswordVerification> {
  let stored: ReturnType<typeof parseOptions>;
  try {
    stored = parseOptions(storedHash);
  } catch {
    return { ok: false, needsRehash: false };
  }
  let ok: boolean;
  try {
    ok = await verify(storedHash, normalise(password));
  } catch {
    // The header parsed but the rest did not (an empty or truncated digest, say): as unusable as garbage.
    return { ok: false, needsRehash: false };
  }
  const needsRehash =
    ok &&
    (stored.algorithm !== ARGON2ID ||
      stored.version !== VERSION_0X13 ||
      stored.memoryCost < params.memoryKib ||
      stored.timeCost < params.timeCost ||
      stored.parallelism < params.parallelism);
  return { ok, needsRehash };
}

/**
 * Dummy hashes, one per parameter set, made on first use. The promise is cached so concurrent first calls share
 * one hashing; a failed hashing is forgotten so the next call tries again.
 */
const dummyHashes = new Map<string, Promise<string>>();

/** The hash {@link burnPasswordVerification} verifies against for `params`: of a secret nobody knows. */
export function dummyPasswordHash(params: Argon2Params): Promise<string> {
  const key = `${params.memoryKib},${params.timeCost},${params.parallelism}`;
  let pending = dummyHashes.get(key);
  if (pending === undefined) {
    // A random secret nobody knows, so the dummy can never be matched by any password an attacker sends.
    pending = hashPassword(randomBytes(32).toString('base64'), params);
    pending.catch(() => dummyHashes.delete(key));
    dummyHashes.set(key, pending);
  }
  return pending;
}

/**
 * Spends the same work as {@link verifyPassword} does for a real account, and discards the result. Sign-in calls
 * it when no account has the given email (or the account has no password), so the response time does not tell
 * an attacker which email addresses are registered.
 */
export async function burnPasswordVerification(password: string, params: Argon2Params): Promise<void> {
  await verifyPassword(await dummyPasswordHash(params), password, params);
}
