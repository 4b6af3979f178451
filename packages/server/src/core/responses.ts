import { coreErrors, Problem } from '@plinth/shared';

const problemStatuses = new Map<number, string>(Object.values(coreErrors).map((e) => [e.status, e.title]));

/**
 * Response schemas for the error statuses a route can answer, each an RFC 9457 problem document, so the
 * OpenAPI document lists every error a client must handle. Every route gets 500 as well.
 */
export function problemResponses<const S extends number>(...statuses: S[]): Record<S | 500, typeof Problem> {
  const responses: Record<number, typeof Problem> = {};
  for (const status of [...statuses, 500]) {
    responses[status] = Problem.meta({
      description: problemStatuses.get(status) ?? 'The request was refused.',
    });
  }
  return responses as Record<S | 500, typeof Problem>;
}
