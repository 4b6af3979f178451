import { z } from 'zod';

/** One field-level validation failure. `path` is a dotted path into the request part, e.g. `body.email`. */
export const ProblemFieldError = z.object({
  path: z.string().meta({ description: 'Where the problem is, e.g. `body.email` or `query.limit`.' }),
  message: z.string().meta({ description: 'What is wrong, in words a person understands.' }),
});

/** An RFC 9457 problem document, the body of every error response Plinth sends. */
export const Problem = z
  .object({
    type: z.string().meta({ description: 'A URI naming the kind of problem.' }),
    title: z.string().meta({ description: 'A short summary of the kind of problem.' }),
    status: z.number().int().meta({ description: 'The HTTP status code.' }),
    detail: z.string().optional().meta({ description: 'What went wrong with this request.' }),
    code: z.string().meta({ description: 'A stable machine-readable error code.' }),
    requestId: z.string().meta({ description: 'The request id, also sent as the `X-Request-Id` header.' }),
    errors: z.array(ProblemFieldError).optional().meta({ description: 'Field-level validation failures.' }),
    permission: z
      .string()
      .optional()
      .meta({ description: 'On a 403 for a missing permission: the permission the caller lacks.' }),
    bucket: z.string().optional().meta({
      description: 'On a 429: the rate-limit bucket that refused the request (see RateLimitBucket).',
    }),
  })
  .meta({ id: 'Problem', description: 'An RFC 9457 problem document.' });
export type Problem = z.infer<typeof Problem>;
