import { z } from 'zod';
import { defineErrors } from './errors.ts';

/**
 * Daily usage reports of an organization (`/api/v1/orgs/{orgId}/reports/usage`): one per organization and UTC
 * day, computed after the day ended from what Plinth records (the audit log, memberships, API keys). docs/api.md
 * describes each figure and where it comes from.
 */

/** The widest `from`…`to` range one list request may ask for, in days (both ends included). */
export const MAX_REPORT_RANGE_DAYS = 400;

/** Errors of the reports API. */
export const reportErrors = defineErrors({
  USAGE_REPORT_NOT_FOUND: { status: 404, title: 'There is no usage report for that day.' },
  REPORT_RANGE_INVALID: { status: 400, title: 'The report date range is invalid.' },
});

/** Whether `value` is a real calendar date written `YYYY-MM-DD` (no 2026-02-30, no 2026-13-01). */
export function isCalendarDay(value: string): boolean {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(value)) return false;
  const date = new Date(`${value}T00:00:00.000Z`);
  return !Number.isNaN(date.getTime()) && date.toISOString().slice(0, 10) === value;
}

/** A UTC calendar day, `YYYY-MM-DD`. */
export const ReportDay = z
  .string()
  .max(10)
  .refine(isCalendarDay, { error: 'Not a calendar day (YYYY-MM-DD).' })
  .meta({ description: 'A UTC calendar day, `YYYY-MM-DD`.', example: '2026-12-01' });

const count = (description: string) => z.number().int().min(0).meta({ description });

/** One organization's figures for one UTC day. */
export const UsageReport = z
  .object({
    id: z.uuid(),
    orgId: z.uuid(),
    day: z
      .string()
      .meta({ description: 'The UTC day the figures cover, `YYYY-MM-DD` (00:00 to 24:00 UTC).' }),
    computedAt: z
      .string()
      .meta({ description: 'When the report was computed (shortly after the day ended).' }),
    activity: z.object({
      auditEvents: count("Events recorded in the organization's audit log during the day."),
      failedEvents: count('Of these, events whose outcome was `failure` or `denied`.'),
      activeMembers: count('Distinct people who made at least one recorded change in the organization.'),
      activeApiKeys: count('Distinct API keys that made at least one recorded change in the organization.'),
      byCategory: z.record(z.string(), z.number().int().min(0)).meta({
        description:
          'Audit events by category: the part of the action before the dot (`member`, `apikey`, `invitation`, `org`, `role`, `audit`, …).',
      }),
    }),
    members: z.object({
      added: count('`member.added` events: people who joined.'),
      removed: count('`member.removed` events: people who left or were removed.'),
      roleChanged: count('`member.role_changed` events.'),
      total: count('Members of the organization when the report was computed (not at midnight).'),
    }),
    invitations: z.object({
      created: count('Invitations sent.'),
      accepted: count('Invitations accepted.'),
      revoked: count('Invitations revoked.'),
    }),
    apiKeys: z.object({
      created: count('API keys created during the day.'),
      rotated: count('API key rotations during the day.'),
      revoked: count('API keys revoked during the day.'),
      active: count('API keys neither revoked nor expired when the report was computed.'),
    }),
    signIns: z.object({
      total: count(
        'Successful sign-ins, during the day, by people who are members (from their account logs).',
      ),
      members: count('Distinct members who signed in at least once.'),
      failed: count("Failed sign-ins (wrong password) on members' accounts."),
    }),
    auditLog: z.object({
      eventsTotal: count(
        "Events in the organization's audit chain by the end of the day, archived ones included: the log's size.",
      ),
    }),
  })
  .meta({ id: 'UsageReport' });
export type UsageReport = z.infer<typeof UsageReport>;

/** The figures of a report, as stored (everything but its identity). */
export type UsageFigures = Omit<UsageReport, 'id' | 'orgId' | 'day' | 'computedAt'>;
