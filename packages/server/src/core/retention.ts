import { sql } from 'kysely';
import type { DatabaseHandle } from '../db/database.ts';
import type { Database } from '../db/schema.ts';

/**
 * Retention policies: how long the platform keeps rows that have served their purpose (expired sessions, used
 * tokens, finished jobs, downloaded exports). Each module declares the policies of its tables at start-up
 * (`app.retention.add(...)`); a scheduled job (`privacy.retention`, daily) applies them all. The defaults are in
 * code, documented in docs/operations.md; `RETENTION_DAYS` overrides any of them by name.
 */
export interface RetentionPolicy {
  /** Unique; what `RETENTION_DAYS` and the logs call it, e.g. `sessions`. */
  name: string;
  /** What goes, as a sentence for the operator ("sessions that ended (expired or revoked)"). */
  description: string;
  /** How many days a row is kept after it served its purpose, unless `RETENTION_DAYS` says otherwise. */
  days: number;
  /**
   * Removes (or clears) the rows whose time came before `cutoff` (ISO-8601); returns how many. Policies reach
   * every organization's rows, so each statement runs in `database.acrossTenants` (on PostgreSQL, row-level
   * security would otherwise show it none), in short transactions.
   */
  apply(database: Pick<DatabaseHandle, 'acrossTenants'>, cutoff: string): Promise<number>;
}

export interface RetentionRegistry {
  add(policy: RetentionPolicy): void;
  list(): readonly RetentionPolicy[];
}

const POLICY_NAME = /^[a-z][a-z0-9_]{0,63}$/;

export function createRetentionRegistry(): RetentionRegistry {
  const policies = new Map<string, RetentionPolicy>();
  return {
    add(policy) {
      if (!POLICY_NAME.test(policy.name))
        throw new Error(`"${policy.name}" is not a valid retention policy name`);
      if (policies.has(policy.name)) throw new Error(`retention policy "${policy.name}" is declared twice`);
      policies.set(policy.name, policy);
    },
    list: () => [...policies.values()],
  };
}

/** How many rows one delete statement removes at most: a large backlog goes in short transactions, not one long lock. */
const BATCH = 1000;

/**
 * The usual policy: delete the rows of `table` whose any of the `after` columns (the times at which a row served its
 * purpose: expired, revoked, used, finished) is before the cutoff, a batch at a time, by primary key `key`.
 */
export function purgeAfter(spec: {
  table: keyof Database & string;
  after: readonly string[];
  key?: string;
}): RetentionPolicy['apply'] {
  const key = spec.key ?? 'id';
  return async (database, cutoff) => {
    const expired = sql.join(
      spec.after.map((column) => sql`${sql.ref(column)} < ${cutoff}`),
      sql` or `,
    );
    let removed = 0;
    for (;;) {
      const result = await database.acrossTenants((db) =>
        sql`delete from ${sql.table(spec.table)} where ${sql.ref(key)} in (
          select ${sql.ref(key)} from ${sql.table(spec.table)} where ${expired} limit ${BATCH})`.execute(db),
      );
      const count = Number(result.numAffectedRows ?? 0);
      removed += count;
      if (count < BATCH) return removed;
    }
  };
}
