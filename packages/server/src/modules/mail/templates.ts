import type { MailMessage } from './mailer.ts';

/**
 * The mails Plinth sends about an account. Each function returns a rendered mail without its recipient:
 * `mailer.send({ to, ...mailTemplates.verifyEmail({ name, url }) })`.
 *
 * Rules every template follows:
 * - the subject is a fixed sentence, never user input, because it becomes a mail header;
 * - every value is written through `p` or `facts`, which HTML-escape it in the HTML part and flatten line
 *   breaks and other control characters in both parts, so a name cannot add lines of its own;
 * - a link is written through `action`, which accepts only http(s) URLs and puts the URL in exactly one href.
 */

/** A rendered mail: spread it into a {@link MailMessage} together with its recipient. */
export type MailContent = Omit<MailMessage, 'to'>;

const PRODUCT = 'Plinth';

/** Escapes the five characters that are special in HTML text and in quoted attribute values. */
export function escapeHtml(value: string): string {
  return value
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

/** Control characters, and the Unicode line separators and bidirectional overrides that can disguise text. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point.
const UNSAFE_INLINE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]+/g;

/** A user-supplied value as one line of text. */
function inline(value: string): string {
  return value.replace(UNSAFE_INLINE, ' ');
}

/** One paragraph, in both forms. */
interface Block {
  text: string;
  html: string;
}

/**
 * A paragraph whose interpolated values are user input: flattened to one line in both parts and HTML-escaped
 * in the HTML part. The literal parts are Plinth's own text and must not contain markup.
 */
function p(strings: TemplateStringsArray, ...values: string[]): Block {
  const join = (render: (value: string) => string) =>
    strings.reduce((out, part, i) => out + part + (i < values.length ? render(values[i] ?? '') : ''), '');
  return { text: join(inline), html: `<p>${join((v) => escapeHtml(inline(v)))}</p>` };
}

/** Labelled facts, one per line (a sign-in's time, address and device); the values are user input. */
function facts(rows: [label: string, value: string][]): Block {
  return {
    text: rows.map(([label, value]) => `${label}: ${inline(value)}`).join('\n'),
    html: `<p>${rows.map(([label, value]) => `${escapeHtml(label)}: ${escapeHtml(inline(value))}`).join('<br>\n')}</p>`,
  };
}

/** The one link of a mail: a button in HTML, the bare URL on its own line in text. */
function action(label: string, url: string): Block {
  const href = httpUrl(url);
  return {
    text: `${label}:\n${href}`,
    html: `<p><a href="${escapeHtml(href)}" style="display:inline-block;padding:10px 16px;background:#1f4fd1;color:#ffffff;text-decoration:none;border-radius:4px">${escapeHtml(label)}</a></p>`,
  };
}

/** Refuses anything but an absolute http(s) URL, so a bug upstream can never produce a `javascript:` link. */
function httpUrl(url: string): string {
  let protocol: string | undefined;
  try {
    protocol = new URL(url).protocol;
  } catch {
    // Not a URL at all: refused below like any other scheme.
  }
  if (protocol !== 'https:' && protocol !== 'http:')
    throw new Error('a mail link must be an absolute http(s) URL');
  return url;
}

function greeting(name: string): Block {
  return inline(name).trim() === '' ? p`Hello,` : p`Hello ${name.trim()},`;
}

/** A moment as mail shows it: unambiguous and independent of the server's locale and time zone. */
function formatTime(at: Date): string {
  const iso = at.toISOString();
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
}

function compose(subject: string, blocks: Block[], actionUrl?: string): MailContent {
  const signature = `— The ${PRODUCT} team`;
  const text = `${[...blocks.map((b) => b.text), signature].join('\n\n')}\n`;
  const html = [
    '<!doctype html>',
    '<html lang="en">',
    `<head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>${escapeHtml(subject)}</title></head>`,
    '<body style="font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;font-size:15px;line-height:1.5;color:#1a1a1a">',
    ...blocks.map((b) => b.html),
    `<p style="color:#666666">${escapeHtml(signature)}</p>`,
    '</body>',
    '</html>',
    '',
  ].join('\n');
  return actionUrl === undefined ? { subject, text, html } : { subject, text, html, actionUrl };
}

/**
 * Asks a new user to confirm their address.
 *
 * @param url The verification link, token included.
 */
export function verifyEmail(input: { name: string; url: string }): MailContent {
  return compose(
    `Confirm your email address for ${PRODUCT}`,
    [
      greeting(input.name),
      p`Please confirm that this is your email address to finish setting up your ${PRODUCT} account.`,
      action('Confirm email address', input.url),
      p`If you did not create a ${PRODUCT} account, you can ignore this email.`,
    ],
    input.url,
  );
}

/**
 * Sends a password reset link, in answer to a "forgot password" request.
 *
 * @param url The reset link, token included.
 * @param expiresInMinutes How long the link works, in minutes.
 */
export function resetPassword(input: { name: string; url: string; expiresInMinutes: number }): MailContent {
  return compose(
    `Reset your ${PRODUCT} password`,
    [
      greeting(input.name),
      p`We received a request to reset the password of your ${PRODUCT} account.`,
      action('Choose a new password', input.url),
      p`The link works once and expires in ${String(input.expiresInMinutes)} minutes.`,
      p`If you did not ask for this, you can ignore this email: your password stays the same.`,
    ],
    input.url,
  );
}

/**
 * Tells a user their password was changed, so a change they did not make does not go unnoticed.
 *
 * @param at When the password was changed.
 */
export function passwordChanged(input: { name: string; at: Date }): MailContent {
  return compose(`Your ${PRODUCT} password was changed`, [
    greeting(input.name),
    p`The password of your ${PRODUCT} account was changed on ${formatTime(input.at)}.`,
    p`If you made this change, there is nothing else to do.`,
    p`If you did not, reset your password right away with "Forgot password" on the sign-in page, and tell your administrator.`,
  ]);
}

/**
 * Tells a user about a new sign-in to their account.
 *
 * @param at When the sign-in happened.
 * @param ip The client's address, when known.
 * @param userAgent The client's `User-Agent` header, when it sent one; shortened to 200 characters.
 */
export function newLogin(input: {
  name: string;
  at: Date;
  ip?: string | null;
  userAgent?: string | null;
}): MailContent {
  const device = input.userAgent ? truncate(input.userAgent, 200) : 'unknown';
  return compose(`New sign-in to your ${PRODUCT} account`, [
    greeting(input.name),
    p`There was a new sign-in to your ${PRODUCT} account:`,
    facts([
      ['Time', formatTime(input.at)],
      ['IP address', input.ip || 'unknown'],
      ['Device', device],
    ]),
    p`If this was you, you can ignore this email.`,
    p`If it was not, change your password right away and sign out of your other sessions.`,
  ]);
}

/**
 * Sent to the owner of an address when someone tries to sign up with it again. The sign-up response looks the
 * same whether or not the address was registered, so this mail is the only place the owner learns of it.
 *
 * @param resetUrl Where the owner can reset a forgotten password.
 */
export function signupAttemptOnExistingAccount(input: { name: string; resetUrl: string }): MailContent {
  return compose(
    `Sign-up attempt with your ${PRODUCT} email address`,
    [
      greeting(input.name),
      p`Someone tried to create a new ${PRODUCT} account with this email address, which already has an account.`,
      p`If it was you and you have forgotten your password, you can reset it:`,
      action('Reset your password', input.resetUrl),
      p`If it was not you, you can ignore this email. Nothing about your account has changed.`,
    ],
    input.resetUrl,
  );
}

/**
 * Warns the current address that the account's email address is being changed to another one.
 *
 * @param newEmail The address the account is moving to.
 */
export function emailChangeRequested(input: { name: string; newEmail: string }): MailContent {
  return compose(`Your ${PRODUCT} email address is being changed`, [
    greeting(input.name),
    p`A request was made to change the email address of your ${PRODUCT} account to ${input.newEmail}.`,
    p`The change takes effect once the new address is confirmed. Until then you can keep signing in with this one.`,
    p`If you did not ask for this, change your password right away and tell your administrator.`,
  ]);
}

/** At most `max` characters (code points, so an emoji is never cut in half). */
function truncate(value: string, max: number): string {
  const chars = [...value];
  return chars.length > max ? `${chars.slice(0, max - 1).join('')}…` : value;
}

/**
 * Invites someone to join an organization. The organization's and inviter's names are user input (one line,
 * escaped); the subject stays fixed so that neither can be used to write a mail header.
 *
 * @param url The acceptance link, token included.
 * @param expiresInDays How long the invitation works, in days.
 */
export function invitation(input: {
  orgName: string;
  inviterName: string;
  role: string;
  url: string;
  expiresInDays: number;
}): MailContent {
  return compose(
    `You are invited to an organization on ${PRODUCT}`,
    [
      p`Hello,`,
      p`${input.inviterName} invites you to join ${input.orgName} on ${PRODUCT} as ${input.role}.`,
      action('Accept the invitation', input.url),
      p`The invitation expires in ${String(input.expiresInDays)} days. If you do not know the sender, you can ignore this email.`,
    ],
    input.url,
  );
}

/**
 * Tells a person their data export is ready, with the link that downloads it.
 *
 * @param url The signed download link.
 * @param expiresAt When the link stops working.
 */
export function dataExportReady(input: { name: string; url: string; expiresAt: Date }): MailContent {
  return compose(
    `Your ${PRODUCT} data export is ready`,
    [
      greeting(input.name),
      p`The export of your ${PRODUCT} data you asked for is ready: a zip archive of JSON files.`,
      action('Download your data', input.url),
      p`The link works once, until ${formatTime(input.expiresAt)}. Anyone with the link can download the archive, so do not forward this email.`,
      p`If you did not ask for an export, change your password and tell your administrator.`,
    ],
    input.url,
  );
}

/**
 * Tells a person their account is to be erased, and how to call it off.
 *
 * @param at When the erasure is due.
 * @param signInUrl Where to sign in to cancel it.
 */
export function erasureScheduled(input: { name: string; at: Date; signInUrl: string }): MailContent {
  return compose(
    `Your ${PRODUCT} account will be erased`,
    [
      greeting(input.name),
      p`Your ${PRODUCT} account and the personal data it holds will be erased on ${formatTime(input.at)}. Every session was signed out.`,
      p`To keep your account, sign in before then: that cancels the erasure.`,
      action('Sign in to keep the account', input.signInUrl),
      p`If you did not ask for this, sign in now and change your password.`,
    ],
    input.signInUrl,
  );
}

/**
 * Tells a person their account's erasure was called off because something must happen first.
 *
 * @param reasons What stands in the way, one sentence each.
 */
export function erasureBlocked(input: { name: string; reasons: readonly string[] }): MailContent {
  return compose(`Your ${PRODUCT} account was not erased`, [
    greeting(input.name),
    p`Your ${PRODUCT} account could not be erased as planned, because it is ${input.reasons.join('; ')}.`,
    p`Once that is settled, ask for the erasure again.`,
  ]);
}

/**
 * Tells an organization's admin that Plinth stopped delivering to one of its webhook endpoints.
 *
 * @param endpoint Where the endpoint points, as scheme and host only (a URL's path may hold a receiver's token).
 * @param reason Why, one sentence ("it answered 410 Gone", "every delivery attempt failed for 5 days").
 */
export function webhookDisabled(input: {
  name: string;
  orgName: string;
  endpoint: string;
  endpointId: string;
  reason: string;
}): MailContent {
  return compose(`A ${PRODUCT} webhook endpoint was turned off`, [
    greeting(input.name),
    p`${PRODUCT} stopped delivering events to a webhook endpoint of ${input.orgName}, because ${input.reason}.`,
    facts([
      ['Endpoint', input.endpoint],
      ['Endpoint id', input.endpointId],
    ]),
    p`Events published meanwhile are not delivered to it. Once the receiver works again, turn the endpoint on (PATCH it with "active": true) and redeliver what it missed from its delivery log.`,
  ]);
}

/**
 * An organization's daily usage report, for a member who may read it (`reports:read`). Figures are numbers;
 * the organization's and the reader's names are user input (one line, escaped).
 *
 * @param day The UTC day the figures cover, `YYYY-MM-DD`.
 * @param figures Label and value pairs, in the order shown.
 * @param categories Audit events by category, `[category, count]`, largest first.
 */
export function usageReport(input: {
  name: string;
  orgName: string;
  orgId: string;
  day: string;
  figures: [label: string, value: number][];
  categories: [category: string, count: number][];
}): MailContent {
  return compose(`Your daily ${PRODUCT} usage report`, [
    greeting(input.name),
    p`Here is what happened in ${input.orgName} on ${input.day} (UTC):`,
    facts(input.figures.map(([label, value]) => [label, String(value)])),
    ...(input.categories.length > 0
      ? [
          p`Audit log events by category:`,
          facts(input.categories.map(([category, value]) => [category, String(value)])),
        ]
      : []),
    p`The full report is at GET /api/v1/orgs/${input.orgId}/reports/usage/${input.day}. To stop receiving this email, withdraw the usage_report_email consent (PUT /api/v1/me/consents).`,
  ]);
}
