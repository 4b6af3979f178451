import { coreErrors, Problem } from '@plinth/shared';
import type { z } from 'zod';

const problemStatuses = new Map<number, string>(Object.values(coreErrors).map((e) => [e.status, e.title]));

/** The media type of every error response (RFC 9457). */
export const PROBLEM_MEDIA_TYPE = 'application/problem+json';

/** A documented response: its description in the API docs and its body schema under one media type. */
export interface ContentResponse<S extends z.ZodType, M extends string> {
  description: string;
  content: { [K in M]: { schema: S } };
}

/**
 * A JSON response with a description for the API docs. A bare schema would be documented as "Default
 * Response", because a schema with an id becomes a `$ref` that cannot carry its own description.
 */
export function jsonResponse<S extends z.ZodType>(
  schema: S,
  description: string,
): ContentResponse<S, 'application/json'> {
  return { description, content: { 'application/json': { schema } } };
}

/**
 * An error response: `schema` (the problem document, or an extension of it) as `application/problem+json`,
 * the media type the error handler sends, so clients generated from the OpenAPI document expect the right one.
 */
export function problemResponse<S extends z.ZodType = typeof Problem>(
  description: string,
  schema?: S,
): ContentResponse<S, typeof PROBLEM_MEDIA_TYPE> {
  return { description, content: { [PROBLEM_MEDIA_TYPE]: { schema: (schema ?? Problem) as S } } };
}

/**
 * Response schemas for the error statuses a route can answer, each an RFC 9457 problem document, so the
 * OpenAPI document lists every error a client must handle. Every route gets 500 as well.
 */
export function problemResponses<const S extends number = never>(
  ...statuses: S[]
): Record<S | 500, ContentResponse<typeof Problem, typeof PROBLEM_MEDIA_TYPE>> {
  const responses: Record<number, ContentResponse<typeof Problem, typeof PROBLEM_MEDIA_TYPE>> = {};
  for (const status of [...statuses, 500]) {
    responses[status] = problemResponse(problemStatuses.get(status) ?? 'The request was refused.');
  }
  return responses as Record<S | 500, ContentResponse<typeof Problem, typeof PROBLEM_MEDIA_TYPE>>;
}
