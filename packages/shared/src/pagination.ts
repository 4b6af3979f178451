import { z } from 'zod';

/** The largest page a list endpoint returns, whatever the client asks for. */
export const MAX_PAGE_SIZE = 100;
/** The page size when the client does not ask for one. */
export const DEFAULT_PAGE_SIZE = 20;

/** The query parameters every list endpoint accepts. `sort` is `field` (ascending) or `-field` (descending). */
export const ListQuery = z.object({
  limit: z.coerce
    .number()
    .int()
    .min(1)
    .max(MAX_PAGE_SIZE)
    .default(DEFAULT_PAGE_SIZE)
    .meta({ description: `Page size, 1–${MAX_PAGE_SIZE}.` }),
  cursor: z
    .string()
    .max(512)
    .optional()
    .meta({ description: 'The `nextCursor` of the previous page; omit for the first page.' }),
});
export type ListQuery = z.infer<typeof ListQuery>;

/** The shape of every list response: one page of items and the cursor of the next page (null at the end). */
export function Page<T extends z.ZodType>(item: T) {
  return z.object({
    data: z.array(item),
    nextCursor: z
      .string()
      .nullable()
      .meta({ description: 'Pass as `cursor` to get the next page; null on the last page.' }),
  });
}
