import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { coreErrors, type ErrorDefinition, type Problem, problemType } from '@plinth/shared';
import type { FastifyBaseLogger, FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { newId } from './ids.ts';

/** A field-level problem: where in the request (`body.email`) and what is wrong. */
export interface FieldError {
  path: string;
  message: string;
}

/**
 * The one error type services throw. It names an entry of an error catalogue (see `defineErrors`), optionally
 * with a request-specific `detail` and field errors; the error handler renders it as problem+json.
 */
export class AppError extends Error {
  override name = 'AppError';
  readonly code: string;
  readonly status: number;
  readonly title: string;
  readonly detail: string | undefined;
  readonly errors: FieldError[] | undefined;
  /** Extra response headers, e.g. `Retry-After`. */
  readonly headers: Record<string, string>;
  /** Extension members of the problem document (RFC 9457 §3.2), e.g. the missing `permission`. */
  readonly extensions: ProblemExtensions;

  constructor(
    definition: ErrorDefinition,
    options: {
      detail?: string;
      errors?: FieldError[];
      headers?: Record<string, string>;
      extensions?: ProblemExtensions;
      cause?: unknown;
    } = {},
  ) {
    super(options.detail ?? definition.title, { cause: options.cause });
    this.code = definition.code;
    this.status = definition.status;
    this.title = definition.title;
    this.detail = options.detail;
    this.errors = options.errors;
    this.headers = options.headers ?? {};
    this.extensions = options.extensions ?? {};
  }
}

/** The extension members a problem document may carry, as declared in the shared `Problem` schema. */
export type ProblemExtensions = Partial<Pick<Problem, 'permission' | 'bucket'>>;

/** Fastify's own client errors, mapped onto Plinth's catalogue by their code. */
const fastifyCodes: Record<string, ErrorDefinition> = {
  FST_ERR_CTP_INVALID_JSON_BODY: coreErrors.INVALID_JSON,
  FST_ERR_CTP_EMPTY_JSON_BODY: coreErrors.INVALID_JSON,
  FST_ERR_CTP_BODY_TOO_LARGE: coreErrors.PAYLOAD_TOO_LARGE,
  FST_ERR_CTP_INVALID_MEDIA_TYPE: coreErrors.UNSUPPORTED_MEDIA_TYPE,
};

/**
 * Fastify's router errors, whose own messages echo the attacker-chosen path; the client gets a fixed detail
 * instead (the path is in the log line of the request).
 */
const routerErrors: Record<string, { definition: ErrorDefinition; detail: string }> = {
  FST_ERR_BAD_URL: { definition: coreErrors.BAD_REQUEST, detail: 'The URL is not validly percent-encoded.' },
  FST_ERR_MAX_PARAM_LENGTH: {
    definition: coreErrors.URI_TOO_LONG,
    detail: 'A path segment of the URL is too long.',
  },
};

/** The catalogue entry for a client error status that no more specific mapping covers. */
function clientErrorDefinition(status: number): ErrorDefinition {
  switch (status) {
    case 400:
      return coreErrors.BAD_REQUEST;
    case 401:
      return coreErrors.UNAUTHENTICATED;
    case 404:
      return coreErrors.NOT_FOUND;
    case 413:
      return coreErrors.PAYLOAD_TOO_LARGE;
    case 414:
      return coreErrors.URI_TOO_LONG;
    case 415:
      return coreErrors.UNSUPPORTED_MEDIA_TYPE;
    case 431:
      return coreErrors.HEADERS_TOO_LARGE;
    default:
      // The status is the component's decision (a 429 must stay a 429 so clients back off); keep it.
      return { ...coreErrors.REQUEST_REFUSED, status };
  }
}

/** Request parts as clients name them in `errors[].path`; Fastify calls the query string `querystring`. */
const requestParts: Record<string, string> = { querystring: 'query' };

/** Turns anything thrown while handling a request into the AppError the client is shown. */
export function toAppError(error: unknown): AppError {
  if (error instanceof AppError) return error;
  // `throw null` or `throw 'text'` is a bug like any other; it must not break the handler that reports it.
  if (typeof error !== 'object' || error === null)
    return new AppError(coreErrors.INTERNAL_ERROR, { cause: error });
  if (hasZodFastifySchemaValidationErrors(error)) {
    const context = (error as FastifyError).validationContext ?? 'body';
    const part = requestParts[context] ?? context;
    return new AppError(coreErrors.VALIDATION_FAILED, {
      errors: error.validation.map((issue) => ({
        path: [part, ...issue.instancePath.split('/').filter(Boolean)].join('.'),
        message: issue.message ?? 'Invalid value.',
      })),
    });
  }
  const fastifyError = error as Partial<FastifyError>;
  const routerError = fastifyError.code ? routerErrors[fastifyError.code] : undefined;
  if (routerError) return new AppError(routerError.definition, { detail: routerError.detail });
  const definition = fastifyError.code ? fastifyCodes[fastifyError.code] : undefined;
  if (definition) return new AppError(definition, { detail: fastifyError.message });
  if (error instanceof SyntaxError && fastifyError.statusCode === 400) {
    return new AppError(coreErrors.INVALID_JSON, { detail: error.message });
  }
  const status = fastifyError.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return new AppError(clientErrorDefinition(status), { detail: fastifyError.message });
  }
  return new AppError(coreErrors.INTERNAL_ERROR, { cause: error });
}

export function problemOf(error: AppError, requestId: string): Problem {
  return {
    type: problemType(error.code),
    title: error.title,
    status: error.status,
    ...(error.detail === undefined ? {} : { detail: error.detail }),
    code: error.code,
    requestId,
    ...(error.errors === undefined ? {} : { errors: error.errors }),
    ...error.extensions,
  };
}

export function sendProblem(reply: FastifyReply, error: AppError): FastifyReply {
  return reply
    .status(error.status)
    .headers(error.headers)
    .type('application/problem+json; charset=utf-8')
    .send(problemOf(error, reply.request.id));
}

async function errorHandling(app: FastifyInstance): Promise<void> {
  app.setErrorHandler((error: unknown, request: FastifyRequest, reply: FastifyReply) => {
    const appError = toAppError(error);
    if (appError.status >= 500) {
      // The client sees only the catalogue title; the log keeps everything needed to find the bug.
      request.log.error({ err: error }, 'request failed');
    } else {
      request.log.debug({ code: appError.code, detail: appError.detail }, 'request refused');
    }
    return sendProblem(reply, appError);
  });

  // The detail does not echo the URL back: the path is attacker-chosen and belongs in logs, not responses.
  app.setNotFoundHandler((_request, reply) =>
    sendProblem(
      reply,
      new AppError(coreErrors.NOT_FOUND, { detail: 'No route matches this method and path.' }),
    ),
  );
}

/**
 * Fastify's `frameworkErrors` option: renders the errors its router raises before any hook runs (a URL that is
 * not validly percent-encoded, an over-long path parameter) as problem+json like every other error. Those
 * requests skip the `onRequest` hooks, so the request id and `nosniff` headers are set here.
 */
export function frameworkErrorHandler(
  error: FastifyError,
  request: FastifyRequest,
  reply: FastifyReply,
): void {
  const appError = toAppError(error);
  if (appError.status >= 500) request.log.error({ err: error }, 'request failed');
  else request.log.debug({ code: appError.code, path: request.url }, 'request refused by the router');
  reply.header('x-request-id', request.id).header('x-content-type-options', 'nosniff');
  sendProblem(reply, appError);
}

/** Renders every error (thrown, validation, unknown route) as RFC 9457 problem+json with the request id. */
export const errorHandlingPlugin = fp(errorHandling, { name: 'plinth-errors' });

/** What Node's HTTP parser reports for requests it cannot hand to Fastify, as the client is told. */
function connectionErrorOf(code: string): { definition: ErrorDefinition; detail: string } {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return {
        definition: coreErrors.HEADERS_TOO_LARGE,
        detail: 'The request line and headers together are larger than the server accepts.',
      };
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return {
        definition: { ...coreErrors.REQUEST_REFUSED, status: 408 },
        detail: 'The request was not received in time.',
      };
    default:
      return { definition: coreErrors.BAD_REQUEST, detail: 'The request is not valid HTTP.' };
  }
}

/**
 * Fastify's `clientErrorHandler`: answers the requests Node's HTTP parser refuses before Fastify sees them
 * (headers over `MAX_HEADER_BYTES`, malformed HTTP, a request not received in time) with a problem document
 * like every other error, instead of Fastify's plain JSON, then closes the connection: after a parse error the
 * rest of the stream cannot be trusted. No request exists yet, so the request id is a fresh one.
 */
export function clientErrorHandler(
  this: { log: FastifyBaseLogger },
  error: Error & { code?: string },
  socket: Socket,
): void {
  // A reset connection is gone; there is nobody to answer.
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const { definition, detail } = connectionErrorOf(error.code ?? '');
  const requestId = newId();
  this.log.debug({ requestId, code: error.code }, 'request refused by the HTTP parser');
  if (socket.writable) {
    const body = JSON.stringify(problemOf(new AppError(definition, { detail }), requestId));
    socket.write(
      `HTTP/1.1 ${definition.status} ${STATUS_CODES[definition.status] ?? 'Client Error'}\r\n` +
        'Content-Type: application/problem+json; charset=utf-8\r\n' +
        `Content-Length: ${Buffer.byteLength(body)}\r\n` +
        `X-Request-Id: ${requestId}\r\n` +
        'X-Content-Type-Options: nosniff\r\n' +
        'Connection: close\r\n\r\n' +
        body,
    );
  }
  socket.destroy();
}
