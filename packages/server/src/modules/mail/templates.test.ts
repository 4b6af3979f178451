import { describe, expect, it } from 'vitest';
import {
  emailChangeRequested,
  escapeHtml,
  type MailContent,
  newLogin,
  passwordChanged,
  resetPassword,
  signupAttemptOnExistingAccount,
  verifyEmail,
  webhookDisabled,
} from './templates.ts';

const AT = new Date('2026-11-22T01:23:45.678Z');
// An ampersand in the query checks that the href is attribute-escaped, not pasted raw.
const URL_WITH_TOKEN = 'https://plinth.test/action?token=tok_abc123&next=%2Fhome';

const HOSTILE_NAMES = ['<script>alert(1)</script>', 'a&b"c', "O'Brien <ob@example.test>"];

/** Every template, rendered with the same user-controlled value in every user-controlled field. */
function renderAll(value: string, url = URL_WITH_TOKEN): Record<string, MailContent> {
  return {
    verifyEmail: verifyEmail({ name: value, url }),
    resetPassword: resetPassword({ name: value, url, expiresInMinutes: 30 }),
    passwordChanged: passwordChanged({ name: value, at: AT }),
    newLogin: newLogin({ name: value, at: AT, ip: value, userAgent: value }),
    signupAttemptOnExistingAccount: signupAttemptOnExistingAccount({ name: value, resetUrl: url }),
    emailChangeRequested: emailChangeRequested({ name: value, newEmail: value }),
    webhookDisabled: webhookDisabled({
      name: value,
      orgName: value,
      endpoint: value,
      endpointId: value,
      reason: 'it answered 410 Gone',
    }),
  };
}

const WITH_LINK = ['verifyEmail', 'resetPassword', 'signupAttemptOnExistingAccount'];

function count(haystack: string, needle: string): number {
  return haystack.split(needle).length - 1;
}

describe('escapeHtml', () => {
  it('escapes the characters that are special in HTML text and quoted attributes', () => {
    expect(escapeHtml(`<a href="x" title='y'>&</a>`)).toBe(
      '&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;',
    );
  });
});

describe('mail templates', () => {
  describe.each(HOSTILE_NAMES)('with the user-controlled value %s', (value) => {
    it.each(Object.entries(renderAll(value)))(
      '%s escapes it in HTML and keeps it verbatim in text',
      (_, mail) => {
        expect(mail.html).toContain(escapeHtml(value));
        expect(mail.html).not.toContain(value);
        expect(mail.text).toContain(value);
      },
    );

    it.each(Object.entries(renderAll(value)))('%s keeps it out of the subject', (template, mail) => {
      expect(mail.subject).not.toContain(value);
      expect(mail.subject).toBe(renderAll('Someone Else')[template]?.subject);
    });
  });

  it('never lets line breaks in a name start a line of their own', () => {
    const name = 'Ada\r\nBcc: victim@example.test\n\nVisit https://evil.test';
    for (const mail of Object.values(renderAll(name))) {
      expect(mail.subject).not.toMatch(/[\r\n]/);
      const lines = mail.text.split('\n');
      expect(lines.some((line) => line.startsWith('Bcc:'))).toBe(false);
      expect(lines.some((line) => line.startsWith('Visit'))).toBe(false);
      expect(mail.text).toContain('Ada Bcc: victim@example.test Visit https://evil.test');
    }
  });

  it.each(WITH_LINK)('%s has its URL exactly once as an href, escaped, and as the action URL', (name) => {
    const mail = renderAll('Ada')[name];
    expect(count(mail?.html ?? '', 'href=')).toBe(1);
    expect(count(mail?.html ?? '', `href="${escapeHtml(URL_WITH_TOKEN)}"`)).toBe(1);
    expect(mail?.text).toContain(`\n${URL_WITH_TOKEN}\n`);
    expect(mail?.actionUrl).toBe(URL_WITH_TOKEN);
  });

  it.each(['passwordChanged', 'newLogin', 'emailChangeRequested'])('%s has no link at all', (name) => {
    const mail = renderAll('Ada')[name];
    expect(mail?.html).not.toContain('href=');
    expect(mail).not.toHaveProperty('actionUrl');
  });

  it.each(['javascript:alert(1)', 'data:text/html,<b>x</b>', '/relative/path', 'not a url'])(
    'refuses to link to %s',
    (url) => {
      expect(() => verifyEmail({ name: 'Ada', url })).toThrow('http(s)');
      expect(() => resetPassword({ name: 'Ada', url, expiresInMinutes: 30 })).toThrow('http(s)');
      expect(() => signupAttemptOnExistingAccount({ name: 'Ada', resetUrl: url })).toThrow('http(s)');
    },
  );

  it('greets by name, and without one when the name is blank', () => {
    expect(verifyEmail({ name: 'Ada', url: URL_WITH_TOKEN }).text).toMatch(/^Hello Ada,\n/);
    expect(verifyEmail({ name: '  ', url: URL_WITH_TOKEN }).text).toMatch(/^Hello,\n/);
  });

  it('says how long a reset link works', () => {
    const mail = resetPassword({ name: 'Ada', url: URL_WITH_TOKEN, expiresInMinutes: 45 });
    expect(mail.text).toContain('expires in 45 minutes');
    expect(mail.html).toContain('expires in 45 minutes');
  });

  it('states times in UTC, whatever the server time zone', () => {
    expect(passwordChanged({ name: 'Ada', at: AT }).text).toContain('2026-11-22 01:23 UTC');
    expect(newLogin({ name: 'Ada', at: AT, ip: '203.0.113.7', userAgent: 'Firefox' }).text).toContain(
      '2026-11-22 01:23 UTC',
    );
  });

  it('shows the sign-in address and device, and shortens an overlong user agent', () => {
    const mail = newLogin({ name: 'Ada', at: AT, ip: '203.0.113.7', userAgent: `Agent/${'x'.repeat(500)}` });
    expect(mail.text).toContain('IP address: 203.0.113.7');
    const device = mail.text.split('\n').find((line) => line.startsWith('Device: '));
    expect(device).toBeDefined();
    expect([...(device ?? '')].length).toBe('Device: '.length + 200);
    expect(newLogin({ name: 'Ada', at: AT, ip: null, userAgent: undefined }).text).toContain(
      'Device: unknown',
    );
  });

  it('tells the owner of an existing account about a sign-up attempt without naming the requester', () => {
    const mail = signupAttemptOnExistingAccount({ name: 'Ada', resetUrl: URL_WITH_TOKEN });
    expect(mail.text).toContain('ignore this email');
    expect(mail.text).toContain('reset');
  });

  it('names the new address in the notice to the old one', () => {
    const mail = emailChangeRequested({ name: 'Ada', newEmail: 'ada@new.example.test' });
    expect(mail.text).toContain('ada@new.example.test');
    expect(mail.html).toContain('ada@new.example.test');
  });

  it('renders a complete HTML document that declares UTF-8, with the same wording as the text', () => {
    const mail = verifyEmail({ name: 'Zoë', url: URL_WITH_TOKEN });
    expect(mail.html).toMatch(/^<!doctype html>\n<html lang="en">/);
    expect(mail.html).toContain('<meta charset="utf-8">');
    expect(mail.html).toContain('Hello Zoë,');
    expect(mail.text).toContain('Hello Zoë,');
    expect(mail.text.endsWith('— The Plinth team\n')).toBe(true);
  });
});
