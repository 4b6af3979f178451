import { sql, type Transaction } from 'kysely';
import { containsText } from '../db/database.ts';
import type { Database } from '../db/schema.ts';

/**
 * Where a module declares the personal data it holds, so that a data export can include all of it (GDPR art. 15
 * and 20) and an erasure can remove all of it (art. 17). Every module that stores something about a person adds
 * a source at start-up (`app.personalData.add({ name, export, erase?, blockers? })`); the privacy module's export
 * job reads every source, and its erasure job runs every eraser.
 */

/** The person being erased, as the erasers need them. */
export interface ErasureSubject {
  userId: string;
  /** Their address and name: erasers remove every copy of these, wherever a module kept one. */
  email: string;
  name: string;
  /** The addresses their sessions came from. */
  ips: readonly string[];
  /** What stands in for the user's id where a record must keep an actor (the audit log): stable, irreversible. */
  pseudonym: string;
  /** When the erasure happens (ISO-8601), from the application clock. */
  at: string;
}
export interface PersonalDataSource {
  /** The section's name in an export archive (`profile`, `memberships`): a file `<name>.json`. */
  name: string;
  /**
   * Everything the module holds about the person, as plain JSON — never a secret (no password hash, token or
   * key material: say that one exists, not what it is). Runs in a transaction across tenants, so a module
   * reads the person's rows in every organization; it must read only that person's rows.
   */
  export(db: Transaction<Database>, userId: string): Promise<unknown>;
  /**
   * Deletes, or irreversibly pseudonymises, what the module holds about the person, in the erasure's transaction
   * (across tenants). Erasers run in the reverse order of their modules' registration — a module's dependents
   * first — so the identity module, registered first, deletes the account itself last. Rows that go with the
   * account by a cascading foreign key need no eraser.
   */
  erase?(db: Transaction<Database>, subject: ErasureSubject): Promise<void>;
  /**
   * Why the person cannot be erased yet (e.g. "the only owner of Acme, which has other members"), or nothing.
   * Checked when erasure is requested and again when it is due.
   */
  blockers?(db: Transaction<Database>, userId: string): Promise<string[]>;
}

/** The person's address, for an export that finds the copies of it other records carry (undefined: no account). */
export async function emailOf(db: Transaction<Database>, userId: string): Promise<string | undefined> {
  const user = await db.selectFrom('users').select('email').where('id', '=', userId).executeTakeFirst();
  return user?.email;
}

/** What an erasure writes in place of the person's address or name in a copy of a record that must stay. */
export const ERASED = '[erased]';

/** The JSON columns that keep copies of a person's public representation. */
export type JsonCopies =
  | { table: 'domain_events'; column: 'data' }
  | { table: 'webhook_deliveries'; column: 'payload' };

/**
 * Replaces, in the JSON text of `column` of every row of `table` (an org-owned table: `db` is the erasure's
 * transaction across tenants), each string value that is the person's address or name with {@link ERASED}. For
 * copies of a record kept as JSON (an event's payload) that must survive the erasure, since something still has
 * to happen with them. Whole string values only, so that a short name is not cut out of other words.
 */
export async function eraseFromJson(
  db: Transaction<Database>,
  { table, column }: JsonCopies,
  subject: Pick<ErasureSubject, 'email' | 'name'>,
): Promise<void> {
  for (const value of [subject.email, subject.name]) {
    const quoted = JSON.stringify(value);
    await db
      .updateTable(table)
      .set({ [column]: sql<string>`replace(${sql.ref(column)}, ${quoted}, ${JSON.stringify(ERASED)})` })
      .where(containsText(db, column, quoted))
      .execute();
  }
}

export interface PersonalDataRegistry {
  add(source: PersonalDataSource): void;
  /** Every source, in the order added. */
  list(): readonly PersonalDataSource[];
}

const SECTION_NAME = /^[a-z][a-zA-Z0-9]{0,63}$/;

export function createPersonalDataRegistry(): PersonalDataRegistry {
  const sources = new Map<string, PersonalDataSource>();
  return {
    add(source) {
      if (!SECTION_NAME.test(source.name)) throw new Error(`"${source.name}" is not a valid section name`);
      if (sources.has(source.name))
        throw new Error(`personal data section "${source.name}" is declared twice`);
      sources.set(source.name, source);
    },
    list: () => [...sources.values()],
  };
}
