import { hash } from 'node:crypto';

/**
 * The hash chain of an organization's audit events.
 *
 * Each event stores `prev_hash` (the previous event's `hash`; {@link GENESIS_HASH} for the first) and its own
 * `hash`, so editing, inserting or removing any event breaks every link after it. The personal fields — who
 * (`actor_id`), from where (`ip`, `user_agent`) and what they changed (`changes`) — do not enter the hash
 * directly: they are hashed into `personal_digest`, and the digest enters the hash. Erasing a person then
 * pseudonymises those fields (a stable pseudonym for `actor_id`, null for the rest, `erased_at` set) without
 * touching `personal_digest` or `hash`: verification recomputes the digest only for rows not erased, and the
 * chain over every other field still verifies. What an erasure can hide is only what it is meant to hide.
 *
 * The serialisation is canonical: a JSON object whose keys are a fixed set written in sorted (code-point) order,
 * every value a string, a number or null, so the same event always yields the same bytes. The field sets below
 * are part of the stored data's meaning: changing them makes every existing chain fail to verify.
 */

/** The `prev_hash` of an organization's first event: 64 zeros. */
export const GENESIS_HASH = '0'.repeat(64);

/** The personal fields, as stored (`changes` as its JSON text). */
export interface PersonalFields {
  actorId: string;
  ip: string | null;
  userAgent: string | null;
  changes: string | null;
}

/** Every field the hash covers besides the personal digest and the previous hash. */
export interface ChainedFields {
  id: string;
  orgId: string;
  seq: number;
  at: string;
  actorType: string;
  actorVia: string | null;
  action: string;
  targetType: string | null;
  targetId: string | null;
  requestId: string | null;
  outcome: string;
}

/** JSON of `fields` with its keys in sorted order: the canonical form. */
export function canonicalJson(fields: Record<string, string | number | null>): string {
  const sorted: Record<string, string | number | null> = {};
  for (const key of Object.keys(fields).sort()) sorted[key] = fields[key] ?? null;
  return JSON.stringify(sorted);
}

/** One-shot hashing (`crypto.hash`, Node ≥ 20.12): several times cheaper than a `Hash` object for short inputs. */
function sha256(text: string): string {
  return hash('sha256', text, 'hex');
}

/** SHA-256 (hex) over the canonical form of `{actorId, changes, ip, userAgent}`. */
export function personalDigest(fields: PersonalFields): string {
  return sha256(
    canonicalJson({
      actorId: fields.actorId,
      changes: fields.changes,
      ip: fields.ip,
      userAgent: fields.userAgent,
    }),
  );
}

/**
 * SHA-256 (hex) over the canonical form of `{action, actorType, actorVia, at, id, orgId, outcome,
 * personalDigest, prevHash, requestId, seq, targetId, targetType}`.
 */
export function eventHash(fields: ChainedFields & { personalDigest: string; prevHash: string }): string {
  return sha256(
    canonicalJson({
      action: fields.action,
      actorType: fields.actorType,
      actorVia: fields.actorVia,
      at: fields.at,
      id: fields.id,
      orgId: fields.orgId,
      outcome: fields.outcome,
      personalDigest: fields.personalDigest,
      prevHash: fields.prevHash,
      requestId: fields.requestId,
      seq: fields.seq,
      targetId: fields.targetId,
      targetType: fields.targetType,
    }),
  );
}
