import { hash } from '@node-rs/argon2';
import { describe, expect, it } from 'vitest';
import {
  type Argon2Params,
  burnPasswordVerification,
  dummyPasswordHash,
  hashPassword,
  verifyPassword,
} from './password.ts';

/** The configured defaults: OWASP's minimum for argon2id. */
const params: Argon2Params = { memoryKib: 19_456, timeCost: 2, parallelism: 1 };
const password = 'violet tractor humming under seven moons';

/** The m, t and p a PHC string records, read independently of the code under test. */
function phcParams(phc: string): { algorithm: string; m: number; t: number; p: number } {
  const match = /^\$(argon2(?:id|i|d))\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/.exec(
    phc,
  );
  if (!match) throw new Error(`not a PHC argon2 string: ${phc}`);
  const [, algorithm = '', m = '', t = '', p = ''] = match;
  return { algorithm, m: Number(m), t: Number(t), p: Number(p) };
}

describe('hashPassword', () => {
  it('produces an argon2id PHC string at no less than OWASP’s minimum cost', async () => {
    const phc = await hashPassword(password, params);
    const stored = phcParams(phc);
    expect(stored.algorithm).toBe('argon2id');
    expect(stored.m).toBeGreaterThanOrEqual(19_456);
    expect(stored.t).toBeGreaterThanOrEqual(2);
    expect(stored.p).toBeGreaterThanOrEqual(1);
  });

  it('salts every hash, so the same password never hashes the same twice', async () => {
    expect(await hashPassword(password, params)).not.toBe(await hashPassword(password, params));
  });

  it('records the configured parameters in the hash', async () => {
    const phc = await hashPassword(password, { memoryKib: 20_480, timeCost: 3, parallelism: 2 });
    expect(phcParams(phc)).toEqual({ algorithm: 'argon2id', m: 20_480, t: 3, p: 2 });
  });
});

describe('verifyPassword', () => {
  it('accepts the right password and refuses a wrong one', async () => {
    const phc = await hashPassword(password, params);
    expect(await verifyPassword(phc, password, params)).toEqual({ ok: true, needsRehash: false });
    expect(await verifyPassword(phc, `${password}!`, params)).toEqual({ ok: false, needsRehash: false });
    expect(await verifyPassword(phc, password.toUpperCase(), params)).toEqual({
      ok: false,
      needsRehash: false,
    });
  });

  it('asks for a re-hash when the configured cost was raised after hashing', async () => {
    const phc = await hashPassword(password, params);
    const raisedTime = { ...params, timeCost: 3 };
    expect(await verifyPassword(phc, password, raisedTime)).toEqual({ ok: true, needsRehash: true });
    const raisedMemory = { ...params, memoryKib: 32_768 };
    expect(await verifyPassword(phc, password, raisedMemory)).toEqual({ ok: true, needsRehash: true });
    const raisedLanes = { ...params, parallelism: 2 };
    expect(await verifyPassword(phc, password, raisedLanes)).toEqual({ ok: true, needsRehash: true });
  });

  it('does not ask for a re-hash when the stored cost already exceeds the configured one', async () => {
    const phc = await hashPassword(password, { ...params, timeCost: 3 });
    expect(await verifyPassword(phc, password, params)).toEqual({ ok: true, needsRehash: false });
  });

  it('never asks to re-hash on a wrong password, since there is nothing to re-hash with', async () => {
    const phc = await hashPassword(password, params);
    expect(await verifyPassword(phc, 'not it', { ...params, timeCost: 3 })).toEqual({
      ok: false,
      needsRehash: false,
    });
  });

  it('asks for a re-hash of a hash made with another argon2 variant', async () => {
    // Argon2i (Algorithm.Argon2i = 1) is weaker against GPU cracking; a matching hash of it is upgraded.
    const argon2i = await hash(password, { algorithm: 1, memoryCost: 19_456, timeCost: 2, parallelism: 1 });
    expect(phcParams(argon2i).algorithm).toBe('argon2i');
    expect(await verifyPassword(argon2i, password, params)).toEqual({ ok: true, needsRehash: true });
  });

  it.each([
    ['an empty string', ''],
    ['random text', 'not a hash at all'],
    ['a bcrypt hash', '$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy'],
    ['an argon2 hash without its digest', '$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQxNmJ5dGVzIQ$'],
    ['an argon2 hash with a corrupted header', '$argon2id$v=19$m=oops,t=2,p=1$c29tZXNhbHQ$aGFzaA'],
  ])('treats %s as a failed verification instead of throwing', async (_label, malformed) => {
    await expect(verifyPassword(malformed, password, params)).resolves.toEqual({
      ok: false,
      needsRehash: false,
    });
  });

  it('round-trips a password of the maximum length, 256 characters', async () => {
    const longest = 'Lorem ipsum dolor sit amet, '.repeat(10).slice(0, 256);
    expect([...longest]).toHaveLength(256);
    const phc = await hashPassword(longest, params);
    expect((await verifyPassword(phc, longest, params)).ok).toBe(true);
    expect((await verifyPassword(phc, longest.slice(0, 255), params)).ok).toBe(false);
  });

  it('never truncates: passwords differing only in their 100th character do not match each other', async () => {
    // bcrypt silently ignores everything after 72 bytes, so both of these would verify against one bcrypt hash.
    const first = `${'x'.repeat(99)}a`;
    const second = `${'x'.repeat(99)}b`;
    const phc = await hashPassword(first, params);
    expect((await verifyPassword(phc, first, params)).ok).toBe(true);
    expect((await verifyPassword(phc, second, params)).ok).toBe(false);
  });

  it('normalises to NFKC, so a ligature or composed accent matches its plain spelling', async () => {
    const ligature = await hashPassword('the ﬁre ﬂy at midnight', params);
    expect((await verifyPassword(ligature, 'the fire fly at midnight', params)).ok).toBe(true);
    // "é" typed as one precomposed code point on one keyboard and as "e" + U+0301 on another.
    const composed = await hashPassword('caf\u00e9 au lait at dawn', params);
    expect((await verifyPassword(composed, 'cafe\u0301 au lait at dawn', params)).ok).toBe(true);
  });

  it('keeps case and spaces significant', async () => {
    const phc = await hashPassword('Violet Tractor', params);
    expect((await verifyPassword(phc, 'violet tractor', params)).ok).toBe(false);
    expect((await verifyPassword(phc, 'Violet Tractor ', params)).ok).toBe(false);
  });
});

/** The fastest of `runs` timings of `action`, in ms: the minimum filters out pauses caused by other work. */
async function fastest(runs: number, action: () => Promise<unknown>): Promise<number> {
  let best = Number.POSITIVE_INFINITY;
  for (let run = 0; run < runs; run += 1) {
    const started = performance.now();
    await action();
    best = Math.min(best, performance.now() - started);
  }
  return best;
}

describe('burnPasswordVerification', () => {
  it('costs about one real verification, so an unknown email answers as slowly as a known one', async () => {
    await expect(burnPasswordVerification(password, params)).resolves.toBeUndefined(); // makes the dummy hash
    const phc = await hashPassword(password, params);
    const verifyMs = await fastest(3, () => verifyPassword(phc, 'another guess', params));
    const burnMs = await fastest(3, () => burnPasswordVerification('another guess', params));
    // Generous bounds for noisy machines; a burn that skipped argon2 would take well under a millisecond.
    expect(burnMs).toBeGreaterThan(verifyMs / 3);
    expect(burnMs).toBeLessThan(verifyMs * 3);
  });

  it('works at the configured cost: its dummy hash is made with the parameters it is given', async () => {
    // Argon2 spends what the hash it verifies against says, so the dummy's parameters are the burn's cost (a
    // timing comparison would say the same, less reliably on a busy machine).
    const costly = { ...params, timeCost: params.timeCost + 6 };
    for (const p of [params, costly]) {
      const dummy = await dummyPasswordHash(p);
      expect(dummy).toMatch(
        new RegExp(`^\\$argon2id\\$v=19\\$m=${p.memoryKib},t=${p.timeCost},p=${p.parallelism}\\$`),
      );
      expect((await verifyPassword(dummy, password, p)).ok).toBe(false);
    }
    expect(await dummyPasswordHash(costly)).toBe(await dummyPasswordHash(costly));
  });
});
