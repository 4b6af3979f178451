import { coreErrors, ListQuery } from '@plinth/shared';
import { type SelectQueryBuilder, sql } from 'kysely';
import { z } from 'zod';
import { AppError } from './errors.ts';
import { isId } from './ids.ts';

/**
 * Cursor (keyset) pagination, whitelisted sorting and equality filters for any list endpoint.
 *
 * A module describes what a list may be sorted and filtered by; `listQuerySchema` turns that into the route's
 * query schema (so the API docs show the allowed values) and `paginate` applies the parsed query to a Kysely
 * select. Keyset pagination stays fast at any depth and never skips or repeats rows when others are inserted,
 * unlike offsets. Ties on the sort column are broken by the id column, so the order is total.
 */
export interface ListSpec<Sort extends string, Filters extends z.ZodRawShape> {
  /** API sort field → column. The column must be non-null and selected under its own name (after any `table.`). */
  sort: Record<Sort, string>;
  /** The order when the client names none, e.g. `-createdAt` (newest first). */
  defaultSort: Sort | `-${Sort}`;
  /** API filter name → schema of its query parameter. */
  filters?: Filters;
  /** API filter name → column it is compared with (equality). */
  filterColumns?: Record<keyof Filters, string>;
  /**
   * The unique column that breaks ties; by default `id`, which by Plinth's convention holds UUIDs, so a cursor
   * whose id is not a UUID is refused without a query.
   */
  idColumn?: string;
}

/** The `Filters` of a list that has none. */
export type NoFilters = Record<never, never>;

/** The query schema for a list endpoint: `limit`, `cursor`, the allowed `sort` values and the filters. */
export function listQuerySchema<Sort extends string, Filters extends z.ZodRawShape>(
  spec: ListSpec<Sort, Filters>,
) {
  const fields = Object.keys(spec.sort) as Sort[];
  const sortValues = fields.flatMap((f) => [f, `-${f}`]) as [string, ...string[]];
  const optionalFilters = Object.fromEntries(
    Object.entries(spec.filters ?? {}).map(([name, schema]) => [name, (schema as z.ZodType).optional()]),
  ) as unknown as { [K in keyof Filters]: z.ZodOptional<Filters[K]> };
  return ListQuery.extend({
    sort: z
      .enum(sortValues)
      .default(spec.defaultSort)
      .meta({ description: `Sort field, \`-\` prefix for descending. One of: ${sortValues.join(', ')}.` }),
    ...optionalFilters,
  });
}

const CursorPayload = z.tuple([z.string(), z.union([z.string(), z.number()]), z.string()]);

function encodeCursor(sort: string, value: unknown, id: unknown): string {
  return Buffer.from(JSON.stringify([sort, value, id])).toString('base64url');
}

function decodeCursor(cursor: string, sort: string, uuidIds: boolean): [value: string | number, id: string] {
  let parsed: z.infer<typeof CursorPayload>;
  try {
    parsed = CursorPayload.parse(JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')));
  } catch {
    throw new AppError(coreErrors.INVALID_CURSOR, { detail: 'The cursor is malformed.' });
  }
  if (parsed[0] !== sort) {
    throw new AppError(coreErrors.INVALID_CURSOR, {
      detail: 'The cursor belongs to a list with a different sort.',
    });
  }
  if (uuidIds && !isId(parsed[2])) {
    throw new AppError(coreErrors.INVALID_CURSOR, { detail: 'The cursor is malformed.' });
  }
  return [parsed[1], parsed[2]];
}

/**
 * Whether `error` is PostgreSQL refusing a value for its column's type (SQLSTATE class 22, "data exception",
 * e.g. `invalid input syntax for type integer`). Cursors are not signed, so a client can edit the sort value
 * in one; PostgreSQL then refuses it, while SQLite compares across types by its fixed storage-class order and
 * simply answers a page.
 */
function isDataException(error: unknown): boolean {
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'string' && code.startsWith('22');
}

function rowKey(column: string): string {
  return column.slice(column.lastIndexOf('.') + 1);
}

/**
 * Runs one page of `query`, ordered, filtered and positioned after `params.cursor`.
 * @returns the page's rows and the cursor of the next page (null when this is the last one).
 */
export async function paginate<DB, TB extends keyof DB, Row extends Record<string, unknown>>(
  query: SelectQueryBuilder<DB, TB, Row>,
  params: { limit: number; cursor?: string | undefined; sort: string } & Record<string, unknown>,
  spec: ListSpec<string, z.ZodRawShape>,
): Promise<{ data: Row[]; nextCursor: string | null }> {
  const descending = params.sort.startsWith('-');
  const field = descending ? params.sort.slice(1) : params.sort;
  const column = spec.sort[field];
  if (column === undefined)
    throw new AppError(coreErrors.VALIDATION_FAILED, { detail: `Cannot sort by ${field}.` });
  const idColumn = spec.idColumn ?? 'id';
  let q = query;

  for (const [name, filterColumn] of Object.entries(spec.filterColumns ?? {})) {
    const value = params[name];
    if (value !== undefined) q = q.where(sql.ref(filterColumn), '=', value);
  }

  if (params.cursor) {
    const [value, id] = decodeCursor(params.cursor, params.sort, spec.idColumn === undefined);
    const op = descending ? '<' : '>';
    q = q.where((eb) =>
      eb.or([
        eb(sql.ref(column), op, value),
        eb.and([eb(sql.ref(column), '=', value), eb(sql.ref(idColumn), op, id)]),
      ]),
    );
  }

  const direction = descending ? 'desc' : 'asc';
  const rows = await q
    .orderBy(sql.ref(column), direction)
    .orderBy(sql.ref(idColumn), direction)
    .limit(params.limit + 1)
    .execute()
    .catch((error: unknown) => {
      if (params.cursor && isDataException(error)) {
        throw new AppError(coreErrors.INVALID_CURSOR, {
          detail: 'The cursor does not fit this list.',
          cause: error,
        });
      }
      throw error;
    });

  const data = rows.slice(0, params.limit) as Row[];
  const last = data.at(-1);
  const nextCursor =
    rows.length > params.limit && last
      ? encodeCursor(params.sort, last[rowKey(column)], last[rowKey(idColumn)])
      : null;
  return { data, nextCursor };
}
