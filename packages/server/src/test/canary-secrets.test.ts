import {
  ApiKeyWithSecret,
  RecoveryCodes,
  TokenPair,
  TotpEnrollment,
  WebhookEndpointWithSecret,
} from '@plinth/shared';
import { describe, expect, it } from 'vitest';
import { startReceiver } from '../modules/webhooks/test-receiver.ts';
import {
  bearer,
  cleanupAfterEach,
  createFakeClock,
  latestOutboxMail,
  linkFromMail,
  MAIL_SUBJECT,
  normalizedEmail,
  settleBackgroundWork,
  startTestApp,
  tokenFromLink,
  totp,
} from './auth-helpers.ts';
import { testDialects } from './dialects.ts';
import { createOrg, invite } from './org-helpers.ts';

// Canary secrets (ASVS 7.1.x, 14.2.x): every kind of secret Plinth handles — passwords, access, refresh and MFA
// tokens, one-time links, API keys, TOTP secrets and recovery codes, invitation tokens, webhook signing secrets (and
// the signatures made with them) — goes through the flows
// that audit and log the most, at the most verbose log level; then none of them may appear anywhere in the audit
// tables or in any log line.

const cleanups = cleanupAfterEach();

describe.each(testDialects)('canary secrets (%s)', (dialect) => {
  it('leaves no secret in the audit log or the logs, whatever the flow', async () => {
    const lines: string[] = [];
    const clock = createFakeClock('2030-10-01T09:00:10.000Z');
    const app = await startTestApp(dialect, cleanups, {
      clock,
      env: { LOG_LEVEL: 'trace', WEBHOOK_ALLOWED_HOSTS: '127.0.0.1' },
      logStream: { write: (line: string) => void lines.push(line) },
    });
    const canaries: string[] = [];
    const plant = <T extends string>(secret: T): T => {
      canaries.push(secret);
      return secret;
    };
    const email = 'songbird@example.test';
    const password = plant('canary QuillFeather 4471 nightjar');
    const newPassword = plant('canary LanternMoss 9023 kingfisher');

    const signup = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/signup',
      payload: { email, password, name: 'Ziggy Song' },
    });
    expect(signup.statusCode).toBe(201);
    const verifyToken = plant(
      tokenFromLink(linkFromMail(await latestOutboxMail(app, email, { subject: MAIL_SUBJECT.verifyEmail }))),
    );
    expect(
      (
        await app.inject({
          method: 'POST',
          url: '/api/v1/auth/email/verify',
          payload: { token: verifyToken },
        })
      ).statusCode,
    ).toBe(204);
    const first = TokenPair.parse(
      (await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password } })).json(),
    );
    plant(first.accessToken);
    plant(first.refreshToken);
    const refreshed = TokenPair.parse(
      (
        await app.inject({
          method: 'POST',
          url: '/api/v1/auth/refresh',
          payload: { refreshToken: first.refreshToken },
        })
      ).json(),
    );
    const token = plant(refreshed.accessToken);
    plant(refreshed.refreshToken);
    // A wrong password is a secret too: it is often a real password typed into the wrong account.
    const wrong = plant('canary WrongGuess 5512 sandpiper');
    expect(
      (await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password: wrong } }))
        .statusCode,
    ).toBe(401);

    const { id: orgId } = await createOrg(app, token, 'Canary Org');
    const key = ApiKeyWithSecret.parse(
      (
        await app.inject({
          method: 'POST',
          url: `/api/v1/orgs/${orgId}/apikeys`,
          headers: bearer(token),
          payload: { name: 'canary key', scopes: ['members:read'] },
        })
      ).json(),
    );
    plant(key.key);
    const rotated = ApiKeyWithSecret.parse(
      (
        await app.inject({
          method: 'POST',
          url: `/api/v1/orgs/${orgId}/apikeys/${key.id}/rotate`,
          headers: bearer(token),
          payload: {},
        })
      ).json(),
    );
    plant(rotated.key);
    expect(
      (
        await app.inject({
          method: 'GET',
          url: `/api/v1/orgs/${orgId}/members`,
          headers: { 'x-api-key': rotated.key },
        })
      ).statusCode,
    ).toBe(200);
    plant(await invite(app, token, orgId, 'invited-canary@example.test', 'member'));

    const receiver = await startReceiver();
    try {
      const webhook = WebhookEndpointWithSecret.parse(
        (
          await app.inject({
            method: 'POST',
            url: `/api/v1/orgs/${orgId}/webhooks`,
            headers: bearer(token),
            payload: { url: `${receiver.origin}/canary`, events: ['*'] },
          })
        ).json(),
      );
      plant(webhook.secret);
      const rekeyed = WebhookEndpointWithSecret.parse(
        (
          await app.inject({
            method: 'POST',
            url: `/api/v1/orgs/${orgId}/webhooks/${webhook.id}/rotate-secret`,
            headers: bearer(token),
            payload: {},
          })
        ).json(),
      );
      plant(rekeyed.secret);
      // Their base64 key material alone is a secret too.
      plant(webhook.secret.slice('whsec_'.length));
      plant(rekeyed.secret.slice('whsec_'.length));
      const ping = await app.inject({
        method: 'POST',
        url: `/api/v1/orgs/${orgId}/webhooks/${webhook.id}/ping`,
        headers: bearer(token),
      });
      expect(ping.statusCode).toBe(202);
      await app.jobs.drain();
      expect(receiver.received.length).toBeGreaterThan(0);
      for (const request of receiver.received) {
        for (const signature of String(request.headers['webhook-signature']).split(' '))
          plant(signature.slice(3));
      }
    } finally {
      await receiver.close();
    }

    const enrolment = TotpEnrollment.parse(
      (
        await app.inject({
          method: 'POST',
          url: '/api/v1/auth/mfa/totp/enroll',
          headers: bearer(token),
          payload: { password },
        })
      ).json(),
    );
    plant(enrolment.secret);
    const { recoveryCodes } = RecoveryCodes.parse(
      (
        await app.inject({
          method: 'POST',
          url: '/api/v1/auth/mfa/totp/confirm',
          headers: bearer(token),
          payload: { code: totp(enrolment.secret, clock.now()) },
        })
      ).json(),
    );
    for (const code of recoveryCodes) plant(code);

    await app.inject({ method: 'POST', url: '/api/v1/auth/password/forgot', payload: { email } });
    await settleBackgroundWork();
    const resetToken = plant(
      tokenFromLink(
        linkFromMail(
          await latestOutboxMail(app, normalizedEmail(email), { subject: MAIL_SUBJECT.resetPassword }),
        ),
      ),
    );
    expect(
      (
        await app.inject({
          method: 'POST',
          url: '/api/v1/auth/password/reset',
          payload: { token: resetToken, password: newPassword },
        })
      ).statusCode,
    ).toBe(204);
    const challenge = (
      await app.inject({
        method: 'POST',
        url: '/api/v1/auth/login',
        payload: { email, password: newPassword },
      })
    ).json<{ mfaToken: string }>();
    plant(challenge.mfaToken);
    clock.advance(30_000);
    const mfa = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/mfa/verify',
      payload: { mfaToken: challenge.mfaToken, code: recoveryCodes[0] },
    });
    expect(mfa.statusCode).toBe(200);
    plant(TokenPair.parse(mfa.json()).accessToken);

    const audit = JSON.stringify(
      await app.database.acrossTenants(async (db) => [
        ...(await db.selectFrom('audit_pending').selectAll().execute()),
        ...(await db.selectFrom('audit_events').selectAll().execute()),
        ...(await db.selectFrom('audit_chain_heads').selectAll().execute()),
        ...(await db.selectFrom('audit_archives').selectAll().execute()),
      ]),
    );
    expect(audit).toContain('user.password_reset');
    const logs = lines.join('');
    expect(logs).toContain('signed in');
    for (const secret of canaries) {
      expect(audit.includes(secret), `the audit log holds ${secret.slice(0, 12)}…`).toBe(false);
      expect(
        logs.includes(secret),
        `a log line holds ${secret.slice(0, 12)}…: ${lines.find((line) => line.includes(secret))?.slice(0, 600)}`,
      ).toBe(false);
    }
  });
});
