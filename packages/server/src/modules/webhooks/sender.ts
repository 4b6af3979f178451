import { Agent, request } from 'undici';
import { type AddressPolicy, AddressRefusedError, addressRefusal, guardedLookup, hostOf } from './ssrf.ts';

/** What one HTTP attempt of a delivery came to. */
export interface AttemptOutcome {
  /** The response's status; null when none was received (refused, unreachable, timed out). */
  statusCode: number | null;
  /** From the start of the attempt to the end of the (truncated) response body. */
  latencyMs: number;
  /** The start of the response body, as text (at most `RESPONSE_BODY_MAX_CHARS`). */
  responseBody: string | null;
  /** Why it failed, when it failed before or instead of a response. */
  error: string | null;
  /** The response's `Retry-After`, in seconds from now, when it gave one. */
  retryAfterSeconds: number | undefined;
}

export interface WebhookSender {
  /** POSTs `body` with `headers` to `url`; never throws, never follows a redirect. */
  send(url: string, headers: Record<string, string>, body: string, now: Date): Promise<AttemptOutcome>;
  close(): Promise<void>;
}

/** How much of a response body is kept in the delivery log, in characters (and read, in bytes). */
export const RESPONSE_BODY_MAX_CHARS = 2048;
const RESPONSE_BODY_MAX_BYTES = RESPONSE_BODY_MAX_CHARS * 4;
const ERROR_MAX_CHARS = 500;

/**
 * The HTTP client of deliveries: one undici connection pool whose every connection is opened through
 * `guardedLookup` (so it reaches only addresses checked at that moment), with `timeoutMs` over the whole attempt —
 * connecting, sending, the response head and the part of its body that is read. Redirects are never followed
 * (undici's `request` does not follow them): a 3xx is an answer like any other non-2xx, a failure.
 */
export function createWebhookSender(options: { policy: AddressPolicy; timeoutMs: number }): WebhookSender {
  const { policy, timeoutMs } = options;
  const agent = new Agent({
    connect: { lookup: guardedLookup(policy), timeout: timeoutMs },
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    keepAliveTimeout: 4000,
    connections: 32,
  });

  return {
    async send(url, headers, body, now) {
      const started = performance.now();
      const elapsed = () => Math.round(performance.now() - started);
      const failed = (error: string): AttemptOutcome => ({
        statusCode: null,
        latencyMs: elapsed(),
        responseBody: null,
        error: error.slice(0, ERROR_MAX_CHARS),
        retryAfterSeconds: undefined,
      });
      let target: URL;
      try {
        target = new URL(url);
      } catch {
        return failed('The endpoint URL is not valid.');
      }
      if (target.protocol !== 'https:' && target.protocol !== 'http:') return failed('Not an http(s) URL.');
      // An IP address in the URL is connected to without a lookup, so it is checked here.
      const { host, literal } = hostOf(target);
      if (literal && !policy.hosts.has(host)) {
        const refusal = addressRefusal(policy, host);
        if (refusal) return failed(`Refused: the address ${host} is not public (${refusal}).`);
      }
      try {
        const response = await request(target, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'user-agent': 'Plinth-Webhooks/1', ...headers },
          body,
          dispatcher: agent,
          signal: AbortSignal.timeout(timeoutMs),
        });
        const responseBody = await readStart(response.body);
        return {
          statusCode: response.statusCode,
          latencyMs: elapsed(),
          responseBody,
          error: null,
          retryAfterSeconds: retryAfterSeconds(response.headers['retry-after'], now),
        };
      } catch (error) {
        return failed(describe(error));
      }
    },
    close: () => agent.close(),
  };
}

/** The first `RESPONSE_BODY_MAX_CHARS` characters of a body; the rest is not read (the connection is dropped). */
async function readStart(body: AsyncIterable<Buffer> & { destroy(): unknown }): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    chunks.push(chunk);
    size += chunk.length;
    if (size >= RESPONSE_BODY_MAX_BYTES) break;
  }
  body.destroy();
  // U+0000 cannot be stored in PostgreSQL text; a receiver's body is shown, not interpreted.
  return Buffer.concat(chunks)
    .toString('utf8')
    .replaceAll('\u0000', '\uFFFD')
    .slice(0, RESPONSE_BODY_MAX_CHARS);
}

/** `Retry-After` as seconds from `now`: delta-seconds or an HTTP date (RFC 9110 §10.2.3); undefined otherwise. */
export function retryAfterSeconds(value: string | string[] | undefined, now: Date): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (text === undefined) return undefined;
  const trimmed = text.trim();
  if (/^\d{1,10}$/.test(trimmed)) return Number(trimmed);
  const at = Date.parse(trimmed);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, Math.ceil((at - now.getTime()) / 1000));
}

/** A failure as the delivery log shows it: the reason, never the request (its headers carry signatures). */
function describe(error: unknown): string {
  if (!(error instanceof Error)) return 'The request failed.';
  const refused = findCause(error, (e) => e instanceof AddressRefusedError);
  if (refused) return `Refused: ${refused.message}`;
  if (error.name === 'TimeoutError' || findCause(error, (e) => /Timeout/i.test(e.name))) {
    return 'Timed out: no complete response in time.';
  }
  const cause = error.cause instanceof Error ? error.cause : undefined;
  const code = (cause as NodeJS.ErrnoException | undefined)?.code ?? (error as NodeJS.ErrnoException).code;
  const message =
    cause && cause.message !== error.message ? `${error.message}: ${cause.message}` : error.message;
  return code && !message.includes(code) ? `${code}: ${message}` : message;
}

function findCause(error: Error, test: (e: Error) => boolean): Error | undefined {
  let current: unknown = error;
  for (let depth = 0; current instanceof Error && depth < 5; depth++) {
    if (test(current)) return current;
    current = current.cause;
  }
  return undefined;
}
