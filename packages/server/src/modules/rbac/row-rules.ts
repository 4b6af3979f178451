import type { Expression, ExpressionBuilder, SqlBool } from 'kysely';
import type { OrgAccess } from './access.ts';

/**
 * Row-level rules: conditions beyond roles that decide which rows of a resource a caller may see or change
 * (a `customer` sees only the vehicles it owns, a `mechanic` only the bookings assigned to it). A module keeps
 * them as data next to its repo, keyed by role; the repo applies them to its queries:
 *
 * ```ts
 * const vehicleRules: RowRules<Database, 'vehicles'> = {
 *   customer: (eb, access) => eb('vehicles.owner_id', '=', userIdOf(access)),
 * };
 * const condition = rowCondition(vehicleRules, access);
 * if (condition) query = query.where(condition);
 * ```
 *
 * A role without a rule sees every row its permissions allow; an API key (which has no role) too, unless the
 * rules name `apikey`. A row a rule hides is, to the caller, a row that does not exist: 404.
 */
export type RowRule<DB, TB extends keyof DB> = (
  eb: ExpressionBuilder<DB, TB>,
  access: OrgAccess,
) => Expression<SqlBool>;

/** Role name (or `apikey`) → the condition rows must meet for callers with that role. */
export type RowRules<DB, TB extends keyof DB> = Readonly<Record<string, RowRule<DB, TB>>>;

/** The condition the caller's rows must meet, for a `.where(…)`; undefined when no rule restricts it. */
export function rowCondition<DB, TB extends keyof DB>(
  rules: RowRules<DB, TB>,
  access: OrgAccess,
): ((eb: ExpressionBuilder<DB, TB>) => Expression<SqlBool>) | undefined {
  const rule = rules[access.role ?? 'apikey'];
  return rule ? (eb) => rule(eb, access) : undefined;
}
