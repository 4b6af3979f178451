import { z } from 'zod';
import { defineErrors } from './errors.ts';

/** Request and response schemas of the audit log (`/api/v1/orgs/{orgId}/audit`). */

/** Errors of the audit log. */
export const auditErrors = defineErrors({
  /** `from` after `to` in a list or export query. */
  AUDIT_RANGE_INVALID: { status: 400, title: 'The time range is empty: `from` is after `to`.' },
});

/** Who acted: a person (with the session they acted in), an API key, or the platform itself. */
export const AuditActor = z
  .object({
    type: z.enum(['user', 'apikey', 'system']),
    id: z.string().meta({
      description:
        "The user's or key's id, a component name for `system`, or a stable pseudonym once the person's data was erased.",
    }),
    via: z.string().optional().meta({ description: 'For a user: the session the request was made in.' }),
  })
  .meta({ id: 'AuditActor' });
export type AuditActor = z.infer<typeof AuditActor>;

/** One field's values before and after a change; secret fields read `[redacted]`. */
export const AuditFieldChange = z.object({ before: z.unknown(), after: z.unknown() });

export const AuditEvent = z
  .object({
    seq: z
      .number()
      .int()
      .meta({ description: "The event's position in its organization's chain: 1, 2, 3, …" }),
    at: z.string().meta({ description: 'When it happened (ISO-8601 UTC).' }),
    orgId: z.uuid().nullable().meta({
      description:
        "The organization; null for an account's own events and the installation's (operators' actions).",
    }),
    actor: AuditActor,
    action: z
      .string()
      .meta({ description: '`resource.verb`, e.g. `apikey.created`.', example: 'apikey.created' }),
    target: z
      .object({ type: z.string(), id: z.string() })
      .nullable()
      .meta({ description: 'What was acted on; null when the action has no single target.' }),
    requestId: z.string().nullable(),
    ip: z.string().nullable(),
    userAgent: z.string().nullable(),
    outcome: z.enum(['success', 'failure', 'denied']),
    changes: z
      .record(z.string(), AuditFieldChange)
      .nullable()
      .meta({ description: 'For updates: the fields that changed, before and after, secrets redacted.' }),
  })
  .meta({ id: 'AuditEvent' });
export type AuditEvent = z.infer<typeof AuditEvent>;

/**
 * The answer of a chain verification. `checked` counts the events examined, the broken one included;
 * `brokenAt` is the sequence number of the first event whose link or content does not verify.
 */
export const AuditVerifyResult = z
  .union([
    z.object({ ok: z.literal(true), checked: z.number().int() }),
    z.object({ ok: z.literal(false), checked: z.number().int(), brokenAt: z.number().int() }),
  ])
  .meta({ id: 'AuditVerifyResult' });
export type AuditVerifyResult = z.infer<typeof AuditVerifyResult>;

/** The filters shared by the list and the export. */
export const AuditFilters = {
  actorId: z.string().min(1).max(200).meta({ description: 'Only events by this actor.' }),
  action: z.string().min(1).max(100).meta({ description: 'Only events of this action.' }),
  targetType: z.string().min(1).max(100),
  targetId: z.string().min(1).max(200),
};

/** The time range shared by the list and the export: `from` inclusive, `to` exclusive. */
export const AuditTimeRange = {
  from: z.iso.datetime({ offset: true }).optional().meta({ description: 'Events at or after this time.' }),
  to: z.iso.datetime({ offset: true }).optional().meta({ description: 'Events before this time.' }),
};

export const AuditExportQuery = z.object({
  format: z
    .enum(['csv', 'ndjson'])
    .default('ndjson')
    .meta({ description: 'CSV with a header row, or JSON lines.' }),
  actorId: AuditFilters.actorId.optional(),
  action: AuditFilters.action.optional(),
  targetType: AuditFilters.targetType.optional(),
  targetId: AuditFilters.targetId.optional(),
  ...AuditTimeRange,
});
export type AuditExportQuery = z.infer<typeof AuditExportQuery>;
