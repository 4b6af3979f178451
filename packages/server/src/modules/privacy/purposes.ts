import { ConsentPurposeName } from '@plinth/shared';

/**
 * Consent purposes, as data: what a person can be asked to consent to. A module declares its own purposes with
 * a description (`defineConsentPurposes`), the way it declares permissions, and adds them to the installation's
 * registry at start-up (`app.consentPurposes.add(...)`); a purpose nobody declared cannot be recorded, so the
 * history holds only names the code knows the meaning of.
 */
export interface ConsentPurposeStatement {
  /** Lower-case letters, digits and underscores, starting with a letter; at most 64 characters. */
  readonly name: string;
  /** What consenting to it allows, in one sentence a person can understand. */
  readonly description: string;
}

/**
 * Declares a module's purposes: `{ marketing_email: { description } }` → statements, each name checked for the
 * shape the API accepts (a purpose the API could never name would be dead data).
 */
export function defineConsentPurposes(
  specs: Record<string, { description: string }>,
): ConsentPurposeStatement[] {
  return Object.entries(specs).map(([name, spec]) => {
    if (!ConsentPurposeName.safeParse(name).success)
      throw new Error(`"${name}" is not a valid consent purpose name`);
    return { name, description: spec.description };
  });
}

/** The purposes every installation declares. */
export const platformConsentPurposes = defineConsentPurposes({
  terms: { description: 'Acceptance of the terms of service.' },
  privacy_policy: { description: 'Acknowledgement of the privacy policy.' },
  marketing_email: { description: 'Receiving news and offers by email.' },
  analytics: { description: 'Use of product analytics to measure and improve the service.' },
});

/** The installation's declared purposes. Declarations happen at start-up; lookups on every request. */
export interface ConsentPurposeRegistry {
  /** Declares purposes; a name declared twice is a programming error and throws. */
  add(statements: readonly ConsentPurposeStatement[]): void;
  has(name: string): boolean;
  /** Every declared purpose, sorted by name. */
  list(): ConsentPurposeStatement[];
}

/** A registry holding `initial` (by default the platform's purposes). */
export function createConsentPurposeRegistry(
  initial: readonly ConsentPurposeStatement[] = platformConsentPurposes,
): ConsentPurposeRegistry {
  const purposes = new Map<string, ConsentPurposeStatement>();
  const registry: ConsentPurposeRegistry = {
    add(statements) {
      for (const statement of statements) {
        if (purposes.has(statement.name))
          throw new Error(`consent purpose ${statement.name} is declared twice`);
        purposes.set(statement.name, statement);
      }
    },
    has: (name) => purposes.has(name),
    list: () => [...purposes.values()].sort((a, b) => (a.name < b.name ? -1 : 1)),
  };
  registry.add(initial);
  return registry;
}
