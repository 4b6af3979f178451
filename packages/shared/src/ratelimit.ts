import { z } from 'zod';
import { defineErrors } from './errors.ts';

/** Errors of the rate limiter. */
export const rateLimitErrors = defineErrors({
  RATE_LIMITED: {
    status: 429,
    title: 'Too many requests; retry after the number of seconds in Retry-After.',
  },
});

/** The buckets a request is counted in, as named by a 429's `bucket` member and by the usage endpoint. */
export const RateLimitBucket = z
  .enum(['anonymous', 'auth', 'authAccounts', 'user', 'expensive', 'apikey', 'org'])
  .meta({
    id: 'RateLimitBucket',
    description:
      'anonymous: per IP, unauthenticated requests; auth: per IP, sign-in and other auth routes; authAccounts: per IP, distinct accounts that failed to sign in; user: per person; expensive: per caller, expensive routes; apikey: per API key, by plan; org: per organization (all its members and keys), by plan.',
  });
export type RateLimitBucket = z.infer<typeof RateLimitBucket>;

/** One bucket's consumption in its current window. */
export const BucketUsage = z
  .object({
    bucket: RateLimitBucket,
    subject: z
      .object({
        type: z.enum(['org', 'apikey', 'user']),
        id: z.string(),
        name: z.string().optional().meta({ description: "The API key's name." }),
      })
      .meta({ description: 'Whose share of the limit this is.' }),
    limit: z.number().int().meta({ description: 'Requests the window allows.' }),
    used: z.number().int().meta({ description: 'Requests counted in the current window.' }),
    remaining: z.number().int().meta({ description: 'Requests left in the current window.' }),
    windowSeconds: z.number().int().meta({ description: 'The length of the window.' }),
    resetsAt: z.iso
      .datetime()
      .meta({ description: 'When the current window ends (a full window from now, if none is open).' }),
    burst: z
      .object({ limit: z.number().int(), windowSeconds: z.number().int() })
      .optional()
      .meta({ description: 'The extra allowance drawn on once the window is spent.' }),
  })
  .meta({ id: 'BucketUsage' });
export type BucketUsage = z.infer<typeof BucketUsage>;

export const OrgUsage = z
  .object({
    plan: z
      .string()
      .meta({ description: "The organization's plan, which selects the org and API key limits." }),
    buckets: z.array(BucketUsage).meta({
      description:
        "The organization's bucket, then its active API keys' (the 100 most recently created), then the caller's own.",
    }),
  })
  .meta({ id: 'OrgUsage' });
export type OrgUsage = z.infer<typeof OrgUsage>;
