import { z } from 'zod';
import { MfaCode, Password } from './auth.ts';
import { defineErrors } from './errors.ts';
import { Page } from './pagination.ts';

/**
 * Request and response schemas of consent records (`/api/v1/me/consents`, `/api/v1/consent-purposes`), shared by
 * the server, the SDK and the console. Field names are the public contract.
 */

/** Errors of the privacy module. */
export const privacyErrors = defineErrors({
  /** The purpose is well formed but the installation declares no such purpose. */
  UNKNOWN_CONSENT_PURPOSE: { status: 400, title: 'The installation declares no such consent purpose.' },
  /** No export with this id belongs to the caller. */
  EXPORT_NOT_FOUND: { status: 404, title: 'No such data export.' },
  /** A download link whose signature does not verify (altered, or for another export). */
  INVALID_DOWNLOAD_LINK: { status: 403, title: 'The download link is not valid.' },
  /** The archive was downloaded already, has expired, or the export failed: ask for a new export. */
  EXPORT_GONE: { status: 410, title: 'This export is no longer available.' },
  /** Something must happen before the account can be erased (`detail` says what: e.g. an organization to hand over). */
  ERASURE_BLOCKED: { status: 409, title: 'The account cannot be erased yet.' },
});

/** The longest policy version accepted, in characters. */
export const POLICY_VERSION_MAX_LENGTH = 64;

/**
 * A purpose name: what a person consents to, e.g. `marketing_email`. The same shape every module's declared
 * purposes must have, so a name in a request can be refused for its form before it is looked up.
 */
export const ConsentPurposeName = z
  .string()
  .regex(/^[a-z][a-z0-9_]{0,63}$/, {
    error: 'Use up to 64 lower-case letters, digits and underscores, starting with a letter.',
  })
  .meta({ description: 'A declared consent purpose.', example: 'marketing_email' });

/**
 * The version of the policy text the person was shown, as the application names it (a date, a semantic version,
 * a document hash). Printable characters only, so that it reads back unchanged in an export or an audit.
 */
export const PolicyVersion = z
  .string()
  .trim()
  .min(1, { error: 'Name the policy version the person was shown.' })
  .max(POLICY_VERSION_MAX_LENGTH, {
    error: `A policy version has at most ${POLICY_VERSION_MAX_LENGTH} characters.`,
  })
  .regex(/^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/, { error: 'Use printable ASCII characters only.' })
  .meta({ description: 'The version of the policy the person was shown.', example: '2026-11-01' });

/** `PUT /api/v1/me/consents`: a grant (`granted: true`) or a withdrawal (`granted: false`). */
export const RecordConsentBody = z
  .strictObject({
    purpose: ConsentPurposeName,
    granted: z.boolean().meta({ description: 'true grants consent for the purpose; false withdraws it.' }),
    policyVersion: PolicyVersion,
  })
  .meta({ id: 'RecordConsentBody' });
export type RecordConsentBody = z.infer<typeof RecordConsentBody>;

/** One entry of a person's consent history: a grant or a withdrawal, and the evidence of who recorded it. */
export const ConsentRecord = z
  .object({
    id: z.uuid(),
    purpose: z.string(),
    granted: z.boolean(),
    policyVersion: z.string(),
    recordedAt: z.iso.datetime().meta({ description: 'When it was recorded (server time, UTC).' }),
    ip: z.string().nullable().meta({ description: 'The address the request came from.' }),
    userAgent: z.string().nullable().meta({ description: "The request's User-Agent, up to 512 characters." }),
    requestId: z
      .string()
      .nullable()
      .meta({ description: 'The `X-Request-Id` of the request that recorded it.' }),
  })
  .meta({ id: 'ConsentRecord' });
export type ConsentRecord = z.infer<typeof ConsentRecord>;

/** Where a person stands on one declared purpose. */
export const ConsentState = z
  .object({
    purpose: z.string(),
    description: z
      .string()
      .meta({ description: 'What the purpose covers, as the installation declares it.' }),
    status: z.enum(['granted', 'withdrawn', 'never_asked']).meta({
      description: 'never_asked: nothing was ever recorded for this purpose, which counts as no consent.',
    }),
    granted: z.boolean().meta({ description: 'Whether consent is in force now; false when never asked.' }),
    policyVersion: z.string().nullable().meta({ description: 'The policy version of the latest record.' }),
    at: z.iso.datetime().nullable().meta({ description: 'When the latest record was made.' }),
  })
  .meta({ id: 'ConsentState' });
export type ConsentState = z.infer<typeof ConsentState>;

/** `GET /api/v1/me/consents`: the current state of every declared purpose, and one page of the history. */
export const MyConsents = z
  .object({
    current: z.array(ConsentState).meta({ description: 'Every declared purpose, in name order.' }),
    history: Page(ConsentRecord).meta({
      description: 'Every record ever made, newest first by default, one page at a time (`limit`, `cursor`).',
    }),
  })
  .meta({ id: 'MyConsents' });
export type MyConsents = z.infer<typeof MyConsents>;

/** A purpose the installation declares. */
export const ConsentPurpose = z
  .object({ name: z.string(), description: z.string() })
  .meta({ id: 'ConsentPurpose' });
export type ConsentPurpose = z.infer<typeof ConsentPurpose>;

export const ConsentPurposeList = z
  .object({ data: z.array(ConsentPurpose).meta({ description: 'In name order.' }) })
  .meta({ id: 'ConsentPurposeList' });
export type ConsentPurposeList = z.infer<typeof ConsentPurposeList>;

/** `POST /api/v1/me/export` answers 202 with the export's id; its progress is at `GET /api/v1/me/exports/{id}`. */
export const DataExportAccepted = z.object({ id: z.uuid() }).meta({ id: 'DataExportAccepted' });

/** A data export as its owner sees it. */
export const DataExport = z
  .object({
    id: z.uuid(),
    status: z.enum(['pending', 'ready', 'downloaded', 'expired', 'failed']).meta({
      description:
        '`pending` while the archive is built; `ready` to download (once); `downloaded`, `expired` or `failed` after.',
    }),
    requestedAt: z.string(),
    completedAt: z.string().nullable(),
    expiresAt: z
      .string()
      .nullable()
      .meta({ description: 'When the archive and its link stop being available.' }),
    downloadedAt: z.string().nullable(),
    downloadUrl: z.url().nullable().meta({
      description:
        'While `ready`: a signed link that downloads the zip archive once, until `expiresAt`, without other credentials.',
    }),
    byteSize: z.number().int().nullable(),
  })
  .meta({ id: 'DataExport' });
export type DataExport = z.infer<typeof DataExport>;

/** The query of a download link: its expiry (seconds since the epoch) and signature. */
export const DataExportDownloadQuery = z.strictObject({
  expires: z.coerce.number().int().positive(),
  signature: z.string().regex(/^[0-9a-f]{64}$/, { error: 'Not a download signature.' }),
});

/** `DELETE /api/v1/me`: the password, and a second-factor code when two-factor authentication is on. */
export const EraseMeBody = z
  .strictObject({ password: Password, code: MfaCode.optional() })
  .meta({ id: 'EraseMeBody' });

/** The answer to an erasure request: when the account will be erased unless its owner signs in before. */
export const ErasureScheduled = z
  .object({
    scheduledFor: z.string().meta({
      description: 'When the account is erased (ISO-8601 UTC). Signing in before then cancels the erasure.',
    }),
  })
  .meta({ id: 'ErasureScheduled' });
