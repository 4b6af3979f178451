import { authErrors, PASSWORD_MAX_LENGTH } from '@plinth/shared';
import { zxcvbn, zxcvbnOptions } from '@zxcvbn-ts/core';
import { adjacencyGraphs, dictionary as commonDictionary } from '@zxcvbn-ts/language-common';
import { dictionary as englishDictionary, translations } from '@zxcvbn-ts/language-en';
import { AppError } from '../../core/errors.ts';

// PASSWORD_MAX_LENGTH (shared with the request schemas) counts Unicode code points after NFKC normalisation here.
// NIST SP 800-63B-4 asks for at least 64; 256 leaves room for long passphrases while bounding the work one
// request can cause. Longer passwords are refused outright, never truncated.
export { PASSWORD_MAX_LENGTH };

/** The shortest minimum length configuration may set (NIST SP 800-63B-4's floor for any password). */
const PASSWORD_MIN_LENGTH_FLOOR = 8;

/** What a password must meet; both come from `AuthConfig` (`passwordMinLength`, `passwordMinScore`). */
export interface PasswordPolicy {
  /** Minimum length in Unicode code points; values below 8 are treated as 8. */
  readonly minLength: number;
  /** Lowest acceptable zxcvbn score, 0 (anything) to 4 (hardest to guess). */
  readonly minScore: number;
}

/**
 * Common and breached passwords, lowercased: the `passwords` list of `@zxcvbn-ts/language-common` (about 49,000
 * entries). zxcvbn-ts builds it (data-scripts/_generators/PasswordGenerator.ts in github.com/zxcvbn-ts/zxcvbn)
 * from Mark Burnett's "ten million passwords" corpus of real leaked credentials, published through xato.net in
 * 2015: every password seen more than ten times, lowercased, ranked by frequency, minus the ones zxcvbn's own
 * pattern matchers (sequences, repeats, dates, keyboard walks) already rate as easy to guess.
 */
export const COMMON_PASSWORDS: ReadonlySet<string> = new Set(
  commonDictionary.passwords.map((entry) => entry.normalize('NFKC').toLowerCase()),
);

/**
 * zxcvbn's options are process-wide; this module owns them, so nothing else should call `setOptions`.
 * The dictionaries make words, names and common passwords cheap to guess, the keyboard graphs catch walks like
 * "qwertyuiop", and the English translations turn its feedback into sentences shown to people.
 */
zxcvbnOptions.setOptions({
  dictionary: { ...commonDictionary, ...englishDictionary },
  graphs: adjacencyGraphs,
  translations,
  // zxcvbn's matchers are superlinear and its l33t matcher dominates: measured here, 256 characters of look-alikes
  // ("aB3$" repeated) take over 20 s at the default of 100 substituted variants per substring, and 64 take about
  // 2 s. Five variants bring the worst 64-character estimate to about 0.1-0.2 s and, on a sample of l33t-speak
  // passwords ("P@$$w0rdP@$$w0rd!", "M0nk3yM0nk3y2024", "dr4g0nf1r3b4ll00n"…), left every score unchanged.
  l33tMaxSubstitutions: 5,
});

/**
 * How many leading code points the strength estimator sees. Sign-up is unauthenticated, so the estimate must be
 * cheap even for a hostile 256-character password (see above). Judging the prefix costs little accuracy: 64
 * characters that are still too guessable are a repeated pattern or a stock phrase, rarely rescued by what follows.
 */
const ESTIMATE_MAX_LENGTH = 64;

/** Context words shorter than this are ignored: "ann" or "bob" occur inside too many ordinary words. */
const CONTEXT_TOKEN_MIN_LENGTH = 4;

const messages = {
  tooShort: (min: number) =>
    `Use at least ${min} characters. A few unrelated words make a long password that is easy to remember.`,
  tooLong: `Use at most ${PASSWORD_MAX_LENGTH} characters.`,
  malformed: 'The password contains an invalid character (an unpaired surrogate); type it again.',
  common:
    'This password is on a list of commonly used passwords that attackers try first; choose a different one.',
  commonVariant:
    'This password is a commonly used password repeated or followed by digits, which attackers try early; ' +
    'choose a different one.',
  personal:
    'Leave your name and email address out of the password; they are among the first things an attacker tries.',
  guessable: 'This password would be too easy to guess.',
  guessableDefault: 'Add more words or characters that are hard to predict.',
} as const;

/** Number of Unicode code points, so an emoji or a CJK character outside the BMP counts as one character. */
function codePointLength(text: string): number {
  let count = 0;
  for (const _ of text) count += 1;
  return count;
}

/** The first `max` code points of `text`, never splitting a surrogate pair. */
function codePointPrefix(text: string, max: number): string {
  let prefix = '';
  let count = 0;
  for (const char of text) {
    if (count === max) break;
    prefix += char;
    count += 1;
  }
  return prefix;
}

/** The shortest `unit` such that `text` is `unit` repeated at least twice, or undefined. */
function repeatedUnit(text: string): string | undefined {
  for (let size = 1; size <= text.length / 2; size += 1) {
    if (text.length % size === 0 && text.slice(0, size).repeat(text.length / size) === text) {
      return text.slice(0, size);
    }
  }
  return undefined;
}

/**
 * Whether a password (already NFKC-normalised and lowercased, as the list is) is on the common list, exactly or
 * in the two disguises people use most to get past a length rule: the password repeated ("passwordpassword")
 * and the password followed by digits ("password12345678"), including both at once ("monkeymonkey2024").
 * Deliberately no more clever than that; the strength estimator catches the subtler patterns.
 */
function commonPasswordMatch(lowered: string): 'exact' | 'variant' | undefined {
  if (COMMON_PASSWORDS.has(lowered)) return 'exact';
  const withoutDigits = lowered.replace(/\d+$/u, '');
  const candidates = withoutDigits === lowered || withoutDigits === '' ? [lowered] : [lowered, withoutDigits];
  for (const candidate of candidates) {
    if (candidate !== lowered && COMMON_PASSWORDS.has(candidate)) return 'variant';
    const unit = repeatedUnit(candidate);
    if (unit !== undefined && COMMON_PASSWORDS.has(unit)) return 'variant';
  }
  return undefined;
}

/**
 * Words from the person's context that must not appear in their password: each context string whole, an
 * email's local part, that part or a name with separators removed ("jane.doe" → "janedoe"), and each word of it.
 */
function contextTokens(context: readonly string[]): string[] {
  const tokens = new Set<string>();
  for (const item of context) {
    const value = item.normalize('NFKC').toLowerCase().trim();
    const at = value.lastIndexOf('@');
    const local = at > 0 ? value.slice(0, at) : value;
    const words = local.split(/[^\p{L}\p{N}]+/u).filter((word) => word !== '');
    for (const token of [value, local, words.join(''), ...words]) {
      if (codePointLength(token) >= CONTEXT_TOKEN_MIN_LENGTH) tokens.add(token);
    }
  }
  return [...tokens];
}

/** zxcvbn's verdict as one sentence: that it is too guessable, then its warning and suggestions, if any. */
function guessableMessage(warning: string | null, suggestions: readonly string[]): string {
  const advice = [warning, ...suggestions].filter((part): part is string => !!part);
  return [messages.guessable, ...(advice.length > 0 ? advice : [messages.guessableDefault])].join(' ');
}

/**
 * Checks a candidate password against the policy of NIST SP 800-63B-4 and OWASP ASVS 6.2: a minimum and maximum
 * length counted in Unicode code points after NFKC normalisation (what is hashed), no composition rules, not a
 * common or breached password, not built from the person's own name or email, and not too guessable for
 * zxcvbn. Never truncates.
 *
 * @param context the person's email address, name and other words the password must not be made of.
 * @returns the problems in words a person understands, most basic first; empty when the password is
 *   acceptable. A password over {@link PASSWORD_MAX_LENGTH} gets only that problem, without further (costly)
 *   checks.
 */
export function checkPassword(
  password: string,
  policy: PasswordPolicy,
  context: readonly string[],
): string[] {
  const normalised = password.normalize('NFKC');
  const length = codePointLength(normalised);
  if (length > PASSWORD_MAX_LENGTH) return [messages.tooLong];

  const problems: string[] = [];
  const minLength = Math.max(policy.minLength, PASSWORD_MIN_LENGTH_FLOOR);
  if (length < minLength) problems.push(messages.tooShort(minLength));
  // JSON can carry a lone surrogate ("\ud800"); it would be hashed as U+FFFD, so different inputs would collide.
  if (/\p{Cs}/u.test(normalised)) problems.push(messages.malformed);

  const lowered = normalised.toLowerCase();
  const common = commonPasswordMatch(lowered);
  if (common === 'exact') problems.push(messages.common);
  if (common === 'variant') problems.push(messages.commonVariant);

  const tokens = contextTokens(context);
  if (tokens.some((token) => lowered.includes(token))) problems.push(messages.personal);

  // A listed password already has its explanation; estimating it as well would only repeat the message.
  if (common === undefined) {
    const estimate = zxcvbn(codePointPrefix(normalised, ESTIMATE_MAX_LENGTH), [...context, ...tokens]);
    if (estimate.score < policy.minScore) {
      problems.push(guessableMessage(estimate.feedback.warning, estimate.feedback.suggestions));
    }
  }
  return problems;
}

/**
 * {@link checkPassword}, throwing `PASSWORD_TOO_WEAK` (400) when there is any problem: the first one is the
 * `detail`, and every one is a field error at `path`.
 *
 * @param path where the password is in the request: `body.password`, or `body.newPassword` when changing it.
 */
export function assertPasswordAcceptable(
  password: string,
  policy: PasswordPolicy,
  context: readonly string[],
  path = 'body.password',
): void {
  const problems = checkPassword(password, policy, context);
  if (problems.length === 0) return;
  throw new AppError(authErrors.PASSWORD_TOO_WEAK, {
    detail: problems[0],
    errors: problems.map((message) => ({ path, message })),
  });
}
