import { uuidv7 } from 'uuidv7';

/** A new primary key: a UUIDv7, so ids sort by creation time and index well on both dialects. */
export function newId(): string {
  return uuidv7();
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Whether `value` is a lower-case hyphenated UUID, the only form Plinth ever hands out. */
export function isId(value: string): boolean {
  return UUID.test(value);
}
