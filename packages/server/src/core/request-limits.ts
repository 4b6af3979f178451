import { coreErrors } from '@plinth/shared';
import { parse as parseQueryString } from 'fast-querystring';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import fp from 'fastify-plugin';
import type { Config, RequestLimitsConfig } from '../config.ts';
import { AppError } from './errors.ts';
import { type RouteClass, routeClassOf } from './route-class.ts';

/**
 * Request limits: bounds on how much one request can make the server read, parse and validate, so that no
 * single request costs more than its route's purpose needs. Each limit is checked as early as the information
 * is available and refused with a 4xx problem document:
 *
 * - the request head (request line and headers): Node's HTTP parser, `MAX_HEADER_BYTES` → 431;
 * - the URL and the number of query parameters: the first `onRequest` hook → 414 / 400;
 * - the body size, per route class: Fastify's body reader, before anything is parsed → 413;
 * - the shape of a JSON body (depth, array length, object width): scanned in the raw text before `JSON.parse`
 *   builds anything → 400 `JSON_TOO_COMPLEX`; then Fastify's secure parser refuses `__proto__` and
 *   `constructor.prototype` keys → 400 `INVALID_JSON`.
 */

/** The body limit of a route class, in bytes: small for the anonymous `auth` and operational routes. */
export function bodyLimitOf(
  routeClass: RouteClass,
  config: Pick<Config, 'bodyLimitBytes' | 'requestLimits'>,
) {
  switch (routeClass) {
    case 'auth':
    case 'exempt':
      return config.requestLimits.authBodyLimitBytes;
    case 'standard':
    case 'expensive':
      return config.bodyLimitBytes;
  }
}

/** The bounds on a JSON document's shape that `jsonShapeViolation` checks. */
export type JsonShapeLimits = Pick<
  RequestLimitsConfig,
  'jsonMaxDepth' | 'jsonMaxArrayLength' | 'jsonMaxObjectKeys'
>;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;

/**
 * Checks the shape of JSON text against the limits without parsing it: the first limit it breaks, described for
 * the client, or undefined. One pass over the text, iterative, with memory bounded by `jsonMaxDepth`, so a
 * hostile body (100,000 nested `[`) costs no more than reading it and cannot overflow the stack. Text that is
 * not JSON is not diagnosed here (the parser does that); it may be reported as too complex if it would be.
 */
export function jsonShapeViolation(text: string, limits: JsonShapeLimits): string | undefined {
  const { jsonMaxDepth, jsonMaxArrayLength, jsonMaxObjectKeys } = limits;
  // Per open array or object: whether it is an array, and how many commas separate its entries so far (one
  // fewer than its entries). Nothing deeper than the limit is ever stored.
  const isArray = new Uint8Array(jsonMaxDepth);
  const separators = new Uint32Array(jsonMaxDepth);
  let depth = 0;
  const length = text.length;
  for (let i = 0; i < length; i++) {
    const char = text.charCodeAt(i);
    if (char === QUOTE) {
      i = closingQuote(text, i);
    } else if (char === OPEN_ARRAY || char === OPEN_OBJECT) {
      if (depth === jsonMaxDepth) return `Arrays and objects are nested more than ${jsonMaxDepth} deep.`;
      isArray[depth] = char === OPEN_ARRAY ? 1 : 0;
      separators[depth] = 0;
      depth++;
    } else if (char === CLOSE_ARRAY || char === CLOSE_OBJECT) {
      if (depth > 0) depth--;
    } else if (char === COMMA && depth > 0) {
      const level = depth - 1;
      const commas = (separators[level] ?? 0) + 1;
      separators[level] = commas;
      const entries = commas + 1;
      if (isArray[level] === 1) {
        if (entries > jsonMaxArrayLength) return `An array has more than ${jsonMaxArrayLength} elements.`;
      } else if (entries > jsonMaxObjectKeys) {
        return `An object has more than ${jsonMaxObjectKeys} members.`;
      }
    }
  }
  return undefined;
}

/** The index of the quote that closes the string opening at `start`, or the text's length if none does. */
function closingQuote(text: string, start: number): number {
  let from = start + 1;
  for (;;) {
    const quote = text.indexOf('"', from);
    if (quote === -1) return text.length;
    // A quote preceded by an odd number of backslashes is escaped and does not end the string. Each backslash
    // is looked at once, so the scan stays linear whatever the string holds.
    let backslashes = 0;
    while (text.charCodeAt(quote - 1 - backslashes) === BACKSLASH) backslashes++;
    if (backslashes % 2 === 0) return quote;
    from = quote + 1;
  }
}

/**
 * What the query-string parser returns for a query string with too many parameters: the router cannot refuse a
 * request itself (an exception there escapes Fastify's error handling), so it hands over this marker, which the
 * first `onRequest` hook turns into a 400 before anything reads the query.
 */
const TOO_MANY_PARAMETERS: Record<string, unknown> = Object.freeze(Object.create(null));
/** The same kind of marker, for a query string holding an encoded NUL character (see `hasNulCharacter`). */
const NUL_IN_QUERY: Record<string, unknown> = Object.freeze(Object.create(null));

/** A `\u0000` escape in JSON text: one preceded by an even number of backslashes (escaped ones) is not. */
const ESCAPED_NUL = /(?<!\\)(?:\\\\)*\\u0000/;

/**
 * Whether JSON text holds a string with the NUL character. JSON allows it, but PostgreSQL cannot store it in a
 * text column (the insert fails, which would be a 500), and no field of the API has a use for it; so it is
 * refused at the door, the same way on both databases.
 */
export function hasNulCharacter(text: string): boolean {
  return text.includes('\\u0000') && ESCAPED_NUL.test(text);
}

/** Whether `query` (without the `?`) has more than `max` `&`-separated parts, counted without splitting it. */
export function hasMoreParametersThan(query: string, max: number): boolean {
  let parts = query.length === 0 ? 0 : 1;
  for (let at = query.indexOf('&'); at !== -1; at = query.indexOf('&', at + 1)) {
    if (++parts > max) return true;
  }
  return parts > max;
}

/**
 * Fastify's `querystringParser`: the parser Fastify uses by default (fast-querystring, whose result has no
 * prototype, so a `__proto__` parameter is an ordinary key), refusing to parse more than `maxParameters`
 * parameters.
 */
export function limitedQuerystringParser(maxParameters: number): (query: string) => Record<string, unknown> {
  return (query) => {
    if (query.length === 0) return {};
    if (hasMoreParametersThan(query, maxParameters)) return TOO_MANY_PARAMETERS;
    if (query.includes('%00')) return NUL_IN_QUERY;
    return parseQueryString(query);
  };
}

/**
 * The options of the Fastify server that enforce the request limits the router and Node's HTTP parser apply,
 * to spread into `Fastify({...})`.
 */
export function requestLimitServerOptions(config: Config) {
  return {
    bodyLimit: config.bodyLimitBytes,
    // Fastify's defaults, stated because the API relies on them: a body with a `__proto__` key, or a
    // `constructor` key holding a `prototype`, is refused (400) rather than parsed.
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    routerOptions: { querystringParser: limitedQuerystringParser(config.requestLimits.maxQueryParameters) },
  } satisfies FastifyServerOptions;
}

async function requestLimits(app: FastifyInstance): Promise<void> {
  const { requestLimits: limits } = app.config;

  // A route that sets its own `bodyLimit` (an upload) keeps it; every other one gets its class's.
  app.addHook('onRoute', (route) => {
    route.bodyLimit ??= bodyLimitOf(routeClassOf(route), app.config);
  });

  app.addHook('onRequest', async (request) => {
    if (request.url.length > limits.maxUrlLength) {
      throw new AppError(coreErrors.URI_TOO_LONG, {
        detail: `The URL is longer than ${limits.maxUrlLength} characters.`,
      });
    }
    if ((request.query as unknown) === TOO_MANY_PARAMETERS) {
      throw new AppError(coreErrors.TOO_MANY_QUERY_PARAMETERS, {
        detail: `The query string has more than ${limits.maxQueryParameters} parameters.`,
      });
    }
    if ((request.query as unknown) === NUL_IN_QUERY) {
      throw new AppError(coreErrors.BAD_REQUEST, { detail: 'The query string contains a NUL character.' });
    }
  });

  // Fastify's own JSON parser (secure against prototype poisoning, empty bodies refused), behind the shape
  // check: the text is scanned first so that a hostile document is refused before anything is built from it.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const violation = jsonShapeViolation(body as string, limits);
    if (violation !== undefined) {
      done(new AppError(coreErrors.JSON_TOO_COMPLEX, { detail: violation }), undefined);
      return;
    }
    if (hasNulCharacter(body as string)) {
      done(
        new AppError(coreErrors.BAD_REQUEST, { detail: 'A string in the body contains a NUL character.' }),
      );
      return;
    }
    parseJson(request, body as string, done);
  });
}

/**
 * The request limits that need hooks: body limits per route class, URL length, query parameter count and the
 * JSON shape check. Registered before every route, since its `onRoute` hook sees only later routes. Needs
 * `app.config`.
 */
export const requestLimitsPlugin = fp(requestLimits, { name: 'plinth-request-limits' });
