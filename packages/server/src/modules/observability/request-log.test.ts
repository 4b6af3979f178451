import { describe, expect, it } from 'vitest';
import { bearer, cleanupAfterEach, startTestApp } from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { createApiKey, createOrg, signedInUser } from '../../test/org-helpers.ts';

const cleanups = cleanupAfterEach();

interface RequestLine {
  msg: string;
  route?: string;
  status?: number;
  actor?: string;
}

describe.each(testDialects)('request log lines (%s)', (dialect) => {
  async function start() {
    const lines: RequestLine[] = [];
    const text: string[] = [];
    const app = await startTestApp(dialect, cleanups, {
      env: { LOG_LEVEL: 'info', REQUIRE_EMAIL_VERIFICATION: 'false' },
      logStream: {
        write: (line: string) => {
          text.push(line);
          lines.push(JSON.parse(line) as RequestLine);
        },
      },
    });
    const completed = (route: string) =>
      lines.filter((l) => l.msg === 'request completed' && l.route === route).at(-1);
    return { app, completed, text };
  }

  it('names who made each authenticated request: the user, or the API key (never its secret)', async () => {
    const { app, completed, text } = await start();
    const ada = await signedInUser(app, 'ada@example.com');
    const org = await createOrg(app, ada.accessToken);
    const key = await createApiKey(app, ada.accessToken, org.id, { scopes: ['members:read'] });

    expect(
      (await app.inject({ method: 'GET', url: '/api/v1/me', headers: bearer(ada.accessToken) })).statusCode,
    ).toBe(200);
    expect(completed('/api/v1/me')?.actor).toBe(`user:${ada.userId}`);

    const members = await app.inject({
      method: 'GET',
      url: `/api/v1/orgs/${org.id}/members`,
      headers: { 'x-api-key': key.key },
    });
    expect(members.statusCode).toBe(200);
    expect(completed('/api/v1/orgs/:orgId/members')?.actor).toBe(`apikey:${key.id}`);
    expect(text.join('')).not.toContain(key.key.slice(-43));

    expect((await app.inject({ method: 'GET', url: '/health/live' })).statusCode).toBe(200);
    expect(completed('/health/live')).toBeDefined();
    expect(completed('/health/live')?.actor).toBeUndefined();
  });
});
