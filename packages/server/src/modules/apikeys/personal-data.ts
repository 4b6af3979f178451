import type { PersonalDataSource } from '../../core/personal-data.ts';

/** The API keys a person created, for a data export: what they are for and how used, never their secrets. */
export const apiKeyPersonalData: PersonalDataSource = {
  name: 'apiKeysCreated',
  async export(db, userId) {
    const rows = await db
      .selectFrom('api_keys')
      .select([
        'id',
        'org_id',
        'name',
        'scopes',
        'allowed_ips',
        'expires_at',
        'created_at',
        'rotated_at',
        'last_used_at',
        'revoked_at',
      ])
      .where('created_by', '=', userId)
      .orderBy('created_at')
      .execute();
    return rows.map((r) => ({
      id: r.id,
      orgId: r.org_id,
      name: r.name,
      scopes: JSON.parse(r.scopes) as string[],
      allowedIps: r.allowed_ips === null ? null : (JSON.parse(r.allowed_ips) as string[]),
      expiresAt: r.expires_at,
      createdAt: r.created_at,
      rotatedAt: r.rotated_at,
      lastUsedAt: r.last_used_at,
      revokedAt: r.revoked_at,
    }));
  },
};
