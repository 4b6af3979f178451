import type { FastifyPluginAsync } from 'fastify';
import { describe, expect, it } from 'vitest';
import { bearer, cleanupAfterEach, loginResponse, PASSWORD, startTestApp } from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';

// Log injection: user-controlled strings with CR, LF and other control characters must never forge a log line.
// Every line is one JSON object, so such characters are escaped inside a string value; a log shipper splitting
// the stream on line breaks gets back exactly the lines the server wrote.

/**
 * What an attacker appends to a value: a line break, then a line that looks like one of ours, then other
 * control characters (escape, bell, the Unicode line separators). NUL is left out: bodies holding it are
 * refused outright (core/request-limits.ts), and Node's HTTP parser refuses it in headers.
 */
const FORGED_LINE = '{"level":50,"msg":"forged-line","userId":"admin"}';
const INJECTION = `\r\n${FORGED_LINE}\n\u001b[31m\u0007\u2028\u2029\r`;

const cleanups = cleanupAfterEach();

/**
 * Stands in for any module that logs a value a client sent (a note, the user agent): logging user input is
 * allowed, forging lines with it must not be possible.
 */
const loggingRoute: FastifyPluginAsync = async (api) => {
  api.post('/log-injection/echo', async (request) => {
    const body = request.body as { note?: string };
    request.log.info({ note: body.note, userAgent: request.headers['user-agent'] }, 'note received');
    return { ok: true };
  });
};

describe.each(testDialects)('log injection (%s)', (dialect) => {
  it('keeps every log line one JSON object whatever control characters clients send', async () => {
    const chunks: string[] = [];
    const app = await startTestApp(dialect, cleanups, {
      env: { LOG_LEVEL: 'trace', REQUIRE_EMAIL_VERIFICATION: 'false' },
      logStream: { write: (chunk: string) => void chunks.push(chunk) },
      modules: [loggingRoute],
    });

    // Sign-up: a name with control characters is accepted (names are free text); an address with them is not.
    const signup = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/signup',
      payload: { email: 'ada@example.com', password: PASSWORD, name: `Ada${INJECTION}` },
    });
    expect(signup.statusCode).toBe(201);
    const badEmail = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/signup',
      payload: { email: `eve${INJECTION}@example.com`, password: PASSWORD, name: 'Eve' },
    });
    expect(badEmail.statusCode).toBe(400);

    // Sign-in with a hostile user agent (stored with the session), then a hostile request id.
    const login = await loginResponse(app, 'ada@example.com', PASSWORD, { userAgent: `Mozilla${INJECTION}` });
    expect(login.statusCode).toBe(200);
    const { accessToken } = login.json<{ accessToken: string }>();
    const me = await app.inject({
      method: 'GET',
      url: '/api/v1/me',
      headers: { ...bearer(accessToken), 'x-request-id': `req${INJECTION}`, 'user-agent': `UA${INJECTION}` },
    });
    expect(me.statusCode).toBe(200);
    // The hostile id is replaced, not echoed: it would otherwise be on every line the request logs.
    expect(me.headers['x-request-id']).not.toContain('forged');

    // A path with encoded control characters (logged on the request's line), and a route logging raw input.
    const notFound = await app.inject({
      method: 'GET',
      url: `/api/v1/no-such-thing/${encodeURIComponent(INJECTION)}`,
    });
    expect(notFound.statusCode).toBe(404);
    const echo = await app.inject({
      method: 'POST',
      url: '/api/v1/log-injection/echo',
      headers: { 'user-agent': `UA${INJECTION}` },
      payload: { note: `note${INJECTION}` },
    });
    expect(echo.statusCode).toBe(200);
    await app.close();

    // Split the stream as a log shipper would: on any line break.
    const lines = chunks
      .join('')
      .split(/\r\n|\n|\r/)
      .filter((line) => line.length > 0);
    expect(lines.length).toBeGreaterThan(5);
    const parsed = lines.map((line) => {
      expect(() => JSON.parse(line), `not one JSON object: ${JSON.stringify(line)}`).not.toThrow();
      return JSON.parse(line) as Record<string, unknown>;
    });
    for (const line of lines) expect(line.startsWith(FORGED_LINE)).toBe(false);
    expect(parsed.filter((line) => line.msg === 'forged-line')).toEqual([]);
    for (const line of parsed) expect(String(line.requestId ?? '')).not.toContain('forged');

    // The hostile text did reach the log, intact and escaped inside values: the check above is not vacuous.
    const noted = parsed.find((line) => line.msg === 'note received');
    expect(noted).toMatchObject({ note: `note${INJECTION}`, userAgent: `UA${INJECTION}` });
    expect(lines.some((line) => line.includes(JSON.stringify(FORGED_LINE).slice(1, -1)))).toBe(true);
  });
});
