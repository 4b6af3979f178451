import { uuidv7 } from 'uuidv7';
import { z } from 'zod';

/** A new primary key: a UUIDv7, so ids sort by creation time and index well on both dialects. */
export function newId(): string {
  return uuidv7();
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Whether `value` is a lower-case hyphenated UUID, the only form Plinth ever hands out. */
export function isId(value: string): boolean {
  return UUID.test(value);
}

/**
 * A path parameter holding an id, in the one form Plinth hands out (lower-case UUID). Another spelling of the same
 * UUID is refused (400) rather than matched: PostgreSQL would compare it equal and SQLite would not, and caches
 * keyed by id would miss it, so an upper-case id could change a row without its cached copy being forgotten.
 */
export function idParam(error: string) {
  return z.string().regex(UUID, { error }).meta({ format: 'uuid' });
}
