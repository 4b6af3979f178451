import type { Clock } from '../../core/clock.ts';
import type { DatabaseHandle } from '../../db/database.ts';
import type { ConsentPurposeRegistry } from './purposes.ts';

/** What the privacy module needs, built once in the composition root. */
export interface PrivacyDeps {
  database: DatabaseHandle;
  clock: Clock;
  /** The installation's declared consent purposes. */
  purposes: ConsentPurposeRegistry;
}
