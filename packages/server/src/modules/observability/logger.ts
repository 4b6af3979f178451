import { type FastifyReply, type FastifyRequest, type FastifyServerOptions, LogController } from 'fastify';
import type { Config } from '../../config.ts';

/**
 * Field paths whose values never reach a log line, whatever code logs them. Request headers are not logged at
 * all (see the request serializer), so this guards objects that code logs by mistake.
 */
const REDACTED_PATHS = [
  'password',
  '*.password',
  'token',
  '*.token',
  'secret',
  '*.secret',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'headers.cookie',
];

/**
 * Pino options for the server: JSON lines in production (one object per line, so user input containing
 * newlines cannot forge a log line), pretty-printed in development. Every line a request logs carries its
 * `requestId`.
 */
export function loggerOptions(
  config: Config,
  /** Where log lines go instead of stdout (JSON lines), e.g. a test that reads them. */
  stream?: { write(line: string): void },
): NonNullable<FastifyServerOptions['logger']> {
  return {
    level: config.log.level,
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    serializers: {
      // Fastify logs `req` on some internal messages; keep only what identifies the request.
      req: (req: { method: string; url: string; id: string }) => ({
        method: req.method,
        path: req.url.split('?')[0],
      }),
      res: (res: { statusCode: number }) => ({ status: res.statusCode }),
    },
    ...(stream ? { stream } : {}),
    ...(config.log.pretty && !stream
      ? {
          transport: {
            target: 'pino-pretty',
            options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' },
          },
        }
      : {}),
  };
}

/**
 * One log line per request, when it completes: method, route template, path (never the query string, which
 * may carry tokens), status, duration and, once authenticated, who made it (`actor`: `user:<id>` or
 * `apikey:<id>`), under the request's `requestId`. Fastify's separate "incoming
 * request" line is dropped: it doubles the log volume and says nothing the completion line does not.
 */
export class RequestLogController extends LogController {
  constructor() {
    super({ requestIdLogLabel: 'requestId' });
  }

  override incomingRequest(): void {}

  override requestCompleted(
    error: Error | null | undefined,
    request: FastifyRequest,
    reply: FastifyReply,
  ): void {
    const line = {
      method: request.method,
      route: request.routeOptions.url,
      path: request.url.split('?')[0],
      status: reply.statusCode,
      durationMs: Math.round(reply.elapsedTime * 100) / 100,
      ...(request.principal && {
        actor:
          request.principal.type === 'user'
            ? `user:${request.principal.userId}`
            : `apikey:${request.principal.keyId}`,
      }),
    };
    if (error) request.log.error({ ...line, err: error }, 'request failed while sending');
    else request.log.info(line, 'request completed');
  }
}
