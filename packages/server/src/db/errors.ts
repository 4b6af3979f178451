/**
 * Whether `error` is the database refusing a duplicate in a unique column or constraint: PostgreSQL's
 * unique_violation (23505), or SQLite's `UNIQUE constraint failed` (better-sqlite3 and node:sqlite word it alike).
 */
export function isUniqueViolation(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  return code === '23505' || (typeof message === 'string' && message.includes('UNIQUE constraint failed'));
}
