/**
 * Plinth's error catalogue. Every error a client can receive has a stable machine `code`; the codes are
 * part of the public API (the SDK exports them), so a code is never renamed or reused for another meaning.
 */

/** One entry of an error catalogue: the HTTP status and the default human-readable title. */
export interface ErrorDefinition {
  readonly code: string;
  readonly status: number;
  readonly title: string;
}

type ErrorSpecs = Record<string, { status: number; title: string }>;

/**
 * Turns `{ CODE: { status, title } }` into a catalogue whose entries also carry their own `code`,
 * so a module declares each code once and throws `new AppError(vehicleErrors.VEHICLE_NOT_FOUND)`.
 */
export function defineErrors<const T extends ErrorSpecs>(
  specs: T,
): { readonly [K in keyof T & string]: ErrorDefinition & { code: K } } {
  const catalogue: Record<string, ErrorDefinition> = {};
  for (const [code, spec] of Object.entries(specs)) {
    catalogue[code] = Object.freeze({ code, status: spec.status, title: spec.title });
  }
  return Object.freeze(catalogue) as { readonly [K in keyof T & string]: ErrorDefinition & { code: K } };
}

/** Errors raised by the platform's HTTP plumbing, shared by every module. */
export const coreErrors = defineErrors({
  BAD_REQUEST: { status: 400, title: 'The request is malformed.' },
  INVALID_JSON: { status: 400, title: 'The request body is not valid JSON.' },
  VALIDATION_FAILED: { status: 400, title: 'The request does not match the expected schema.' },
  INVALID_CURSOR: { status: 400, title: 'The pagination cursor is invalid for this list.' },
  /** A JSON body over the request limits: nested too deeply, or an array or object with too many entries. */
  JSON_TOO_COMPLEX: { status: 400, title: 'The request body is nested too deeply or has too many entries.' },
  TOO_MANY_QUERY_PARAMETERS: { status: 400, title: 'The query string has too many parameters.' },
  /**
   * A client error with no more specific code, e.g. from a Fastify plugin; the response's `status` is the one
   * the refusing component chose (403, 405, 408, 429, …).
   */
  REQUEST_REFUSED: { status: 400, title: 'The request was refused.' },
  UNAUTHENTICATED: { status: 401, title: 'Authentication is required.' },
  NOT_FOUND: { status: 404, title: 'Nothing exists at this address.' },
  PAYLOAD_TOO_LARGE: { status: 413, title: 'The request body is too large.' },
  URI_TOO_LONG: { status: 414, title: 'The request URL is too long.' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, title: 'The request body has an unsupported content type.' },
  HEADERS_TOO_LARGE: { status: 431, title: 'The request headers are too large.' },
  INTERNAL_ERROR: { status: 500, title: 'An unexpected error occurred.' },
  SERVICE_UNAVAILABLE: { status: 503, title: 'The service is temporarily unavailable.' },
  /** Load shedding: this replica refuses new requests until its event loop or memory recovers (`Retry-After`). */
  SERVER_OVERLOADED: { status: 503, title: 'The server is overloaded; retry later.' },
});

/** The `type` URI of a problem document for a given error code (RFC 9457 §3.1.1). */
export function problemType(code: string): string {
  return `urn:plinth:problem:${code.toLowerCase().replaceAll('_', '-')}`;
}
