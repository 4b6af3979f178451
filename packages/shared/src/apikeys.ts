import { z } from 'zod';
import { PermissionName } from './orgs.ts';

/** Request and response schemas of API keys (`/api/v1/orgs/{orgId}/apikeys`). */

/** Every key starts with this, so that secret scanners and people recognise one. */
export const API_KEY_PREFIX = 'plk_live_';

/** An IPv4 or IPv6 address, or a CIDR range; checked for validity by the server. */
const IpOrCidr = z.string().min(2).max(49).meta({ example: '203.0.113.0/24' });

export const ApiKey = z
  .object({
    id: z.uuid(),
    name: z.string(),
    prefix: z.string().meta({ description: 'The non-secret start of the key, to recognise it by.' }),
    scopes: z.array(z.string()),
    allowedIps: z.array(z.string()).nullable().meta({ description: 'Null: usable from anywhere.' }),
    status: z.enum(['active', 'expired', 'revoked']),
    expiresAt: z.string().nullable(),
    createdBy: z.uuid().nullable(),
    createdAt: z.string(),
    rotatedAt: z.string().nullable(),
    previousSecretExpiresAt: z
      .string()
      .nullable()
      .meta({ description: 'Until when the secret replaced by the last rotation still works.' }),
    lastUsedAt: z.string().nullable().meta({ description: 'Updated in batches, within a few seconds.' }),
    usageCount: z.number().int(),
    revokedAt: z.string().nullable(),
  })
  .meta({ id: 'ApiKey' });
export type ApiKey = z.infer<typeof ApiKey>;

/** A key as created or rotated: the only response that ever contains its secret. */
export const ApiKeyWithSecret = ApiKey.extend({
  key: z.string().meta({ description: 'The full key. Shown only now: store it safely.' }),
}).meta({ id: 'ApiKeyWithSecret' });
export type ApiKeyWithSecret = z.infer<typeof ApiKeyWithSecret>;

export const CreateApiKeyBody = z.strictObject({
  name: z.string().trim().min(1).max(100),
  scopes: z.array(PermissionName).min(1).max(200),
  expiresAt: z.iso.datetime({ offset: true }).optional().meta({ description: 'When the key stops working.' }),
  allowedIps: z.array(IpOrCidr).min(1).max(100).optional(),
});

export const RotateApiKeyBody = z
  .strictObject({
    gracePeriodSeconds: z
      .number()
      .int()
      .min(0)
      .max(30 * 86_400)
      .optional()
      .meta({ description: 'How long the old secret keeps working; the installation default when omitted.' }),
  })
  .default({});
