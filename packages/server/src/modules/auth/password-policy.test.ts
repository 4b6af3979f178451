import { authErrors } from '@plinth/shared';
import { describe, expect, it } from 'vitest';
import { AppError } from '../../core/errors.ts';
import {
  assertPasswordAcceptable,
  COMMON_PASSWORDS,
  checkPassword,
  PASSWORD_MAX_LENGTH,
  type PasswordPolicy,
} from './password-policy.ts';

/** The configured defaults: 15 characters (NIST SP 800-63B-4 for a single factor), zxcvbn score 3. */
const policy: PasswordPolicy = { minLength: 15, minScore: 3 };
const noContext: string[] = [];

const commonList = [...COMMON_PASSWORDS];
const longCommon = commonList.filter((entry) => [...entry].length >= 15);

/** Repeats a listed password until it reaches 15 characters: the cheapest way past a length rule. */
function repeatedToLength(entry: string, length = 15): string {
  return entry.repeat(Math.ceil(length / entry.length));
}

describe('checkPassword: length', () => {
  it('refuses 14 characters, naming the minimum of 15', () => {
    const problems = checkPassword('Kq8#vL2pW9zTm4', policy, noContext);
    expect(problems[0]).toMatch(/at least 15 characters/);
  });

  it('accepts 15 unpredictable characters', () => {
    expect(checkPassword('Kq8#vL2pW9zTm4x', policy, noContext)).toEqual([]);
  });

  it('refuses 257 characters with only that reason, before any further checks', () => {
    const tooLong = 'a quiet kettle sings '.repeat(13).slice(0, 257);
    expect([...tooLong]).toHaveLength(PASSWORD_MAX_LENGTH + 1);
    expect(checkPassword(tooLong, policy, noContext)).toEqual([
      `Use at most ${PASSWORD_MAX_LENGTH} characters.`,
    ]);
  });

  it('accepts a passphrase of exactly 256 characters', () => {
    const longest = [
      'The lighthouse keeper painted seventeen crooked herons on the cellar door,',
      'then argued with a parrot about tide tables until the lentil soup burned;',
      'by midnight the ferry had left without its anchor, and nobody minded',
      'at all, not even Quentin, who had packed two umbrellas, a kazoo and a jar of plum jam for the trip.',
    ]
      .join(' ')
      .slice(0, 256);
    expect([...longest]).toHaveLength(256);
    expect(checkPassword(longest, policy, noContext)).toEqual([]);
  });

  it('accepts a 64-character passphrase', () => {
    const passphrase = 'marble giraffes negotiate slowly with umbrella-shaped jellyfish!';
    expect([...passphrase]).toHaveLength(64);
    expect(checkPassword(passphrase, policy, noContext)).toEqual([]);
  });

  it('counts Unicode code points, not UTF-16 units', () => {
    // Each of these emoji is one code point but two UTF-16 units: 14 of them are 28 units, still too short.
    const fourteen = '🦊🌵🚲🎻🧭🪁🍄🐙🌋🎲🧩🪐🦉🍉';
    expect(fourteen.length).toBe(28);
    expect(checkPassword(fourteen, policy, noContext)[0]).toMatch(/at least 15 characters/);
    expect(checkPassword(`${fourteen}🛶`, policy, noContext)).toEqual([]);
  });

  it('honours a configured minimum of 8', () => {
    // zxcvbn rates any 8 characters at most score 2 (it estimates 10^8 guesses for random ones), so a deployment
    // that lowers the length to 8, typically because a second factor is required, lowers the score with it.
    expect(checkPassword('Kq8#vL2p', { minLength: 8, minScore: 2 }, noContext)).toEqual([]);
    expect(checkPassword('Kq8#vL2p', policy, noContext)[0]).toMatch(/at least 15 characters/);
  });

  it('never lets the minimum drop below 8, whatever the configuration says', () => {
    const problems = checkPassword('Kq8#vL2', { ...policy, minLength: 4 }, noContext);
    expect(problems[0]).toMatch(/at least 8 characters/);
  });
});

describe('checkPassword: no composition rules', () => {
  it('accepts lowercase words separated by spaces, with no digits, capitals or symbols', () => {
    expect(checkPassword('purple llama orbits quietly tonight', policy, noContext)).toEqual([]);
  });

  it('accepts a long password of letters only', () => {
    expect(checkPassword('windowsillcactusfrightensthemailman', policy, noContext)).toEqual([]);
  });
});

describe('checkPassword: common and breached passwords', () => {
  it('bundles a list of at least 10,000 common passwords', () => {
    expect(COMMON_PASSWORDS.size).toBeGreaterThanOrEqual(10_000);
    expect(COMMON_PASSWORDS.has('password')).toBe(true);
  });

  it.each([
    ['the first listed entry of 15+ characters', longCommon[0]],
    ['the middle listed entry of 15+ characters', longCommon[Math.floor(longCommon.length / 2)]],
    ['the last listed entry of 15+ characters', longCommon.at(-1)],
  ])('refuses %s as commonly used', (_label, entry) => {
    if (entry === undefined) throw new Error('the list has no entry of 15 characters or more');
    const problems = checkPassword(entry, policy, noContext);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/commonly used/);
  });

  it('compares without regard to case', () => {
    const entry = longCommon[0] ?? '';
    expect(checkPassword(entry.toUpperCase(), policy, noContext)[0]).toMatch(/commonly used/);
  });

  it.each([
    ['the most common password, repeated', repeatedToLength(commonList[0] ?? '')],
    [
      'the middle entry of the list, repeated',
      repeatedToLength(commonList[Math.floor(commonList.length / 2)] ?? ''),
    ],
    ['the last entry of the list, repeated', repeatedToLength(commonList.at(-1) ?? '')],
    ['"password" followed by digits', 'password12345678'],
    ['"PassWord" repeated in mixed case', 'PassWordPassWord'],
    ['a listed word repeated and followed by a year', 'sunflowersunflower2024'],
  ])('refuses %s as a disguised common password', (_label, candidate) => {
    const problems = checkPassword(candidate, policy, noContext);
    expect([...candidate].length).toBeGreaterThanOrEqual(15);
    expect(problems.some((problem) => /commonly used/.test(problem))).toBe(true);
  });

  it('does not refuse a passphrase merely for containing a listed word', () => {
    // "sunflower" and "purple" are on the list; a phrase built around them is not.
    expect(COMMON_PASSWORDS.has('sunflower')).toBe(true);
    expect(checkPassword('a purple sunflower leans toward the quarry', policy, noContext)).toEqual([]);
  });
});

describe('checkPassword: strength estimate', () => {
  it('refuses a repeated character as guessable, explaining why', () => {
    const problems = checkPassword('aaaaaaaaaaaaaaaa', policy, noContext);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^This password would be too easy to guess\. Repeated characters/);
  });

  it('refuses a keyboard walk as guessable', () => {
    const problems = checkPassword('qwertyuiopasdfghjkl', policy, noContext);
    expect(problems.some((problem) => /too easy to guess/.test(problem))).toBe(true);
  });

  it('accepts anything of the right length when the minimum score is 0', () => {
    expect(checkPassword('aaaaaaaaaaaaaaaa', { ...policy, minScore: 0 }, noContext)).toEqual([]);
  });

  it('keeps the estimate cheap for a hostile 256-character password', () => {
    // Look-alike characters make zxcvbn's l33t matcher explode: unbounded, this input takes over 20 seconds.
    const hostile = 'aB3$'.repeat(64);
    const started = performance.now();
    checkPassword(hostile, policy, noContext);
    expect(performance.now() - started).toBeLessThan(3_000);
  });
});

describe('checkPassword: personal information', () => {
  const context = ['marguerite.okafor@example.com', 'Marguerite Okafor'];

  it('refuses a password containing the email local part', () => {
    const problems = checkPassword('marguerite.okafor plays the tuba', policy, context);
    expect(problems).toContain(
      'Leave your name and email address out of the password; they are among the first things an attacker tries.',
    );
  });

  it('refuses a password containing the name, in any case or spacing', () => {
    const problems = checkPassword('MargueriteOkafor-plays-tuba', policy, context);
    expect(problems.some((problem) => /name and email address/.test(problem))).toBe(true);
    const surname = checkPassword('tuba lessons with OKAFOR on fridays', policy, context);
    expect(surname.some((problem) => /name and email address/.test(problem))).toBe(true);
  });

  it('accepts the same kind of password without the personal words', () => {
    expect(checkPassword('bassoon plays the tuba at noon', policy, context)).toEqual([]);
  });

  it('ignores context fragments too short to matter', () => {
    // "Li" and "bo" appear inside countless words; refusing "limbo" for Li Bo would only confuse people.
    expect(checkPassword('limbo dancers juggle avocados', policy, ['bo@example.com', 'Li Bo'])).toEqual([]);
  });
});

describe('checkPassword: Unicode', () => {
  it('refuses a lone surrogate, which would otherwise collide with other passwords once encoded', () => {
    const problems = checkPassword('violet tractor humming \ud800 moons', policy, noContext);
    expect(problems.some((problem) => /invalid character/.test(problem))).toBe(true);
  });

  it('measures the NFKC form that is hashed', () => {
    // U+FB01 "ﬁ" is one code point that NFKC turns into two, "f" and "i": 14 typed characters become 15.
    const typed = 'Kq8#vL2pW9zTm\ufb01';
    expect([...typed]).toHaveLength(14);
    expect(checkPassword(typed, policy, noContext)).toEqual([]);
  });
});

describe('assertPasswordAcceptable', () => {
  it('returns quietly for an acceptable password', () => {
    expect(() =>
      assertPasswordAcceptable('purple llama orbits quietly tonight', policy, noContext),
    ).not.toThrow();
  });

  it('throws PASSWORD_TOO_WEAK with the first problem as detail and each as a field error', () => {
    let thrown: unknown;
    try {
      assertPasswordAcceptable('password', policy, noContext);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(AppError);
    const error = thrown as AppError;
    expect(error.code).toBe(authErrors.PASSWORD_TOO_WEAK.code);
    expect(error.status).toBe(400);
    const problems = checkPassword('password', policy, noContext);
    expect(problems.length).toBeGreaterThan(1);
    expect(error.detail).toBe(problems[0]);
    expect(error.errors).toEqual(problems.map((message) => ({ path: 'body.password', message })));
  });

  it('reports the field path it is given', () => {
    expect(() => assertPasswordAcceptable('short', policy, noContext, 'body.newPassword')).toThrow(
      expect.objectContaining({
        errors: expect.arrayContaining([expect.objectContaining({ path: 'body.newPassword' })]),
      }),
    );
  });
});
