import { coreErrors, Page, Problem, problemType } from '@plinth/shared';
import type { LightMyRequestResponse } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { PlinthApp } from '../app.ts';
import { columnTypes } from '../db/column-types.ts';
import type { Dialect } from '../db/database.ts';
import type { Timestamp } from '../db/schema.ts';
import { testDialects } from '../test/dialects.ts';
import { buildTestApp } from '../test/harness.ts';
import { newId } from './ids.ts';
import { listQuerySchema, paginate } from './pagination.ts';

/** A table of the test's own, following the column conventions of db/schema.ts. */
interface PartTable {
  id: string;
  name: string;
  rank: number;
  category: string;
  created_at: Timestamp;
}
interface PartDatabase {
  part: PartTable;
}

const CATEGORIES = ['brakes', 'engine', 'tyres'] as const;

const partListSpec = {
  sort: { name: 'name', rank: 'rank', createdAt: 'created_at' },
  defaultSort: '-createdAt',
  filters: { category: z.enum(CATEGORIES) },
  filterColumns: { category: 'category' },
} as const;

const ListPartsQuery = listQuerySchema(partListSpec);
const PartSchema = z.object({
  id: z.string(),
  name: z.string(),
  rank: z.number(),
  category: z.string(),
  createdAt: z.string(),
});
type Part = z.infer<typeof PartSchema>;

function partsDb(app: { database: { db: unknown } }): Kysely<PartDatabase> {
  return app.database.db as Kysely<PartDatabase>;
}

const partRoutes: FastifyPluginAsyncZod = async (api) => {
  api.get(
    '/parts',
    { schema: { querystring: ListPartsQuery, response: { 200: Page(PartSchema) } } },
    async (request) => {
      const query = partsDb(api).selectFrom('part').select(['id', 'name', 'rank', 'category', 'created_at']);
      const page = await paginate(query, request.query, partListSpec);
      return {
        data: page.data.map((row) => ({
          id: row.id,
          name: row.name,
          rank: row.rank,
          category: row.category,
          createdAt: row.created_at,
        })),
        nextCursor: page.nextCursor,
      };
    },
  );
};

async function createPartTable(app: PlinthApp, dialect: Dialect): Promise<void> {
  const t = columnTypes(dialect);
  await partsDb(app)
    .schema.createTable('part')
    .addColumn('id', t.id, (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('rank', 'integer', (c) => c.notNull())
    .addColumn('category', 'text', (c) => c.notNull())
    .addColumn('created_at', t.timestamp, (c) => c.notNull())
    .execute();
}

// Lower-case ASCII words order the same under SQLite's binary collation and PostgreSQL's locale collations,
// so one expected order serves both dialects.
const NAMES = ['alder', 'birch', 'cedar', 'elm', 'fir', 'hazel', 'maple', 'oak'];
const ROW_COUNT = 57;

/**
 * 57 parts with many equal sort values (8 names, 6 ranks, 9 timestamps), whose ids are assigned in an order
 * unrelated to any sort column, so ties are broken by the id and nothing else.
 */
function seedParts(): Part[] {
  const ids = Array.from({ length: ROW_COUNT }, () => newId());
  return Array.from({ length: ROW_COUNT }, (_, i) => ({
    // 23 is coprime with 57, so this is a permutation of the ids.
    id: ids[(i * 23) % ROW_COUNT] ?? '',
    name: NAMES[(i * 5) % NAMES.length] ?? '',
    rank: (i * 7) % 6,
    category: CATEGORIES[i % CATEGORIES.length] ?? 'brakes',
    createdAt: new Date(Date.UTC(2026, 0, 1, 12, (i * 4) % 9, 0, 250)).toISOString(),
  }));
}

async function insertParts(app: PlinthApp, parts: Part[]): Promise<void> {
  await partsDb(app)
    .insertInto('part')
    .values(parts.map(({ createdAt, ...rest }) => ({ ...rest, created_at: createdAt })))
    .execute();
}

type SortField = keyof typeof partListSpec.sort;

/** The order the API promises: by the sort field, then by id, both in the requested direction. */
function expectedOrder(parts: Part[], sort: string): string[] {
  const descending = sort.startsWith('-');
  const field = (descending ? sort.slice(1) : sort) as SortField;
  const compare = (a: string | number, b: string | number) => (a < b ? -1 : a > b ? 1 : 0);
  return [...parts]
    .sort((a, b) => {
      const order = compare(a[field], b[field]) || compare(a.id, b.id);
      return descending ? -order : order;
    })
    .map((p) => p.id);
}

interface PartPage {
  data: Part[];
  nextCursor: string | null;
}

function expectProblem(response: LightMyRequestResponse, code: string): Problem {
  expect(response.statusCode).toBe(400);
  expect(response.headers['content-type']).toBe('application/problem+json; charset=utf-8');
  const problem = Problem.parse(response.json());
  expect(problem).toMatchObject({ status: 400, code, type: problemType(code) });
  expect(problem.requestId).toBe(response.headers['x-request-id']);
  return problem;
}

/** A well-formed UUID that is not the id of any row. */
const ID = '0190a0a0-0000-7000-8000-000000000000';

function cursorOf(payload: unknown): string {
  return Buffer.from(JSON.stringify(payload)).toString('base64url');
}

describe.each(testDialects)('cursor pagination (%s)', (dialect) => {
  let app: PlinthApp;
  let parts: Part[];

  async function getPage(query: Record<string, string | number>): Promise<PartPage> {
    const response = await app.inject({ method: 'GET', url: '/api/v1/parts', query: stringify(query) });
    expect(response.statusCode, response.body).toBe(200);
    return response.json<PartPage>();
  }

  /** Follows `nextCursor` to the end; returns every page. */
  async function walk(query: Record<string, string | number>): Promise<PartPage[]> {
    const pages: PartPage[] = [];
    let cursor: string | null = null;
    do {
      const page = await getPage(cursor === null ? query : { ...query, cursor });
      pages.push(page);
      cursor = page.nextCursor;
      // More pages than rows means the cursor does not advance.
      expect(pages.length).toBeLessThanOrEqual(ROW_COUNT + 1);
    } while (cursor !== null);
    return pages;
  }

  beforeAll(async () => {
    app = await buildTestApp(dialect, { modules: [partRoutes] });
    await createPartTable(app, dialect);
    parts = seedParts();
    await insertParts(app, parts);
  });
  afterAll(async () => {
    await app.close();
  });

  it.each(['name', '-name', 'rank', '-rank', 'createdAt', '-createdAt'])(
    'returns every row exactly once, in order, walking all pages sorted by %s',
    async (sort) => {
      const pages = await walk({ sort, limit: 7 });
      expect(pages).toHaveLength(Math.ceil(ROW_COUNT / 7));
      for (const page of pages.slice(0, -1)) {
        expect(page.data).toHaveLength(7);
        expect(page.nextCursor).toEqual(expect.any(String));
      }
      expect(pages.at(-1)?.nextCursor).toBeNull();
      expect(pages.flatMap((p) => p.data.map((part) => part.id))).toEqual(expectedOrder(parts, sort));
    },
  );

  it('returns rows exactly as stored', async () => {
    const [page] = await walk({ sort: 'name', limit: 100 });
    const byId = new Map(parts.map((p) => [p.id, p]));
    for (const part of page?.data ?? []) expect(part).toEqual(byId.get(part.id));
  });

  it('ends without an empty page when the row count is a multiple of the page size', async () => {
    const pages = await walk({ sort: 'rank', limit: 19 });
    expect(pages.map((p) => p.data.length)).toEqual([19, 19, 19]);
    expect(pages.at(-1)?.nextCursor).toBeNull();
  });

  it('answers a single page with nextCursor null when everything fits', async () => {
    const page = await getPage({ limit: 100 });
    expect(page.data).toHaveLength(ROW_COUNT);
    expect(page.nextCursor).toBeNull();
  });

  it('defaults to 20 rows, newest first', async () => {
    const page = await getPage({});
    expect(page.data.map((p) => p.id)).toEqual(expectedOrder(parts, '-createdAt').slice(0, 20));
    expect(page.nextCursor).toEqual(expect.any(String));
  });

  it('accepts the page-size bounds 1 and 100', async () => {
    expect((await getPage({ limit: 1 })).data).toHaveLength(1);
    expect((await getPage({ limit: 100 })).data).toHaveLength(ROW_COUNT);
  });

  it.each(['0', '101', 'abc', '-1', '2.5', ''])('refuses limit=%s with 400 at query.limit', async (limit) => {
    const response = await app.inject({ method: 'GET', url: `/api/v1/parts?limit=${limit}` });
    const problem = expectProblem(response, 'VALIDATION_FAILED');
    expect(problem.errors?.map((e) => e.path)).toEqual(['query.limit']);
  });

  it.each(['category', '-id', 'id', '--name', 'name desc', 'created_at'])(
    'refuses sort=%s, which is not an allowed sort, with 400 at query.sort',
    async (sort) => {
      const response = await app.inject({ method: 'GET', url: '/api/v1/parts', query: { sort } });
      const problem = expectProblem(response, 'VALIDATION_FAILED');
      expect(problem.errors?.map((e) => e.path)).toEqual(['query.sort']);
    },
  );

  it('filters by equality on a whitelisted filter, across pages', async () => {
    const pages = await walk({ category: 'engine', sort: '-rank', limit: 5 });
    const engineParts = parts.filter((p) => p.category === 'engine');
    expect(pages.flatMap((p) => p.data.map((part) => part.id))).toEqual(expectedOrder(engineParts, '-rank'));
    expect(engineParts.length).toBeGreaterThan(5);
  });

  it('refuses a filter value outside its schema with 400 at query.<filter>', async () => {
    const response = await app.inject({ method: 'GET', url: '/api/v1/parts', query: { category: 'wipers' } });
    const problem = expectProblem(response, 'VALIDATION_FAILED');
    expect(problem.errors?.map((e) => e.path)).toEqual(['query.category']);
  });

  it('ignores a query parameter that is not a declared filter, so it can never reach SQL', async () => {
    // `name` is a column and a sort field, but not a filter: the schema drops it.
    const filtered = await getPage({ name: 'oak', id: parts[0]?.id ?? '', limit: 100, sort: 'name' });
    expect(filtered.data.map((p) => p.id)).toEqual(expectedOrder(parts, 'name'));
  });

  it('refuses a malformed cursor with 400 INVALID_CURSOR', async () => {
    for (const cursor of [
      'not-a-cursor',
      cursorOf({ a: 1 }),
      cursorOf(['name']),
      cursorOf(['name', null, 'x']),
    ]) {
      const response = await app.inject({
        method: 'GET',
        url: '/api/v1/parts',
        query: { sort: 'name', cursor },
      });
      const problem = expectProblem(response, 'INVALID_CURSOR');
      expect(problem.title).toBe(coreErrors.INVALID_CURSOR.title);
    }
  });

  it('refuses a cursor that was issued for a different sort', async () => {
    const byName = await getPage({ sort: 'name', limit: 5 });
    for (const sort of ['rank', '-name', '-createdAt']) {
      const response = await app.inject({
        method: 'GET',
        url: '/api/v1/parts',
        query: { sort, cursor: byName.nextCursor ?? '' },
      });
      expectProblem(response, 'INVALID_CURSOR');
    }
  });

  it('refuses a cursor longer than 512 characters with 400 at query.cursor', async () => {
    const response = await app.inject({
      method: 'GET',
      url: '/api/v1/parts',
      query: { cursor: 'a'.repeat(513) },
    });
    const problem = expectProblem(response, 'VALIDATION_FAILED');
    expect(problem.errors?.map((e) => e.path)).toEqual(['query.cursor']);
  });

  it('refuses a tampered cursor whose id is not an id with 400 INVALID_CURSOR', async () => {
    for (const id of ['not-an-id', "' or 1=1 --", '0190A0A0-0000-7000-8000-000000000000']) {
      const response = await app.inject({
        method: 'GET',
        url: '/api/v1/parts',
        query: { sort: 'name', cursor: cursorOf(['name', 'oak', id]) },
      });
      expectProblem(response, 'INVALID_CURSOR');
    }
  });

  // Cursors are not signed, so a client can put any value in one. PostgreSQL refuses a value its column cannot
  // hold, which must reach the client as INVALID_CURSOR rather than a 500; SQLite compares across types in its
  // fixed storage-class order and answers an ordinary page. Neither leaks anything.
  it.each([
    ['text for a number sort field', ['rank', 'three', ID], { postgres: 400, sqlite: 200 }],
    ['text for a timestamp sort field', ['createdAt', 'last tuesday', ID], { postgres: 400, sqlite: 200 }],
    ['a number for a text sort field', ['name', 5, ID], { postgres: 200, sqlite: 200 }],
  ] as const)('answers a tampered cursor carrying %s without failing', async (_what, payload, statuses) => {
    const response = await app.inject({
      method: 'GET',
      url: '/api/v1/parts',
      query: { sort: payload[0], cursor: cursorOf(payload) },
    });
    if (statuses[dialect] === 400) {
      expectProblem(response, 'INVALID_CURSOR');
    } else {
      expect(response.statusCode).toBe(200);
      const page = response.json<PartPage>();
      expect(page.data.length).toBeLessThanOrEqual(20);
    }
  });

  it('neither repeats nor skips rows when rows are added while a client is paging', async () => {
    const first = await getPage({ sort: 'name', limit: 10 });
    const seen = first.data.map((p) => p.id);
    // One new row sorts before the cursor (the client has passed it), one after (the client will reach it).
    const before: Part = { ...seedParts()[0], id: newId(), name: 'aaa', rank: 0, category: 'brakes' } as Part;
    const after: Part = { ...before, id: newId(), name: 'zzz' };
    await insertParts(app, [before, after]);
    try {
      const rest = await walk({ sort: 'name', limit: 10, cursor: first.nextCursor ?? '' });
      const ids = [...seen, ...rest.flatMap((p) => p.data.map((part) => part.id))];
      expect(ids).toEqual([...expectedOrder(parts, 'name'), after.id]);
    } finally {
      await partsDb(app).deleteFrom('part').where('id', 'in', [before.id, after.id]).execute();
    }
  });
});

function stringify(query: Record<string, string | number>): Record<string, string> {
  return Object.fromEntries(Object.entries(query).map(([k, v]) => [k, String(v)]));
}
