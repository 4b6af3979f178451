import type { PersonalDataSource } from '../../core/personal-data.ts';
import { containsText } from '../../db/database.ts';

/**
 * What the identity module holds about a person, for a data export: the profile (with whether a second factor is
 * on, never the secret, and no password hash), and every session with where it was used from.
 */
export const identityPersonalData: PersonalDataSource[] = [
  {
    name: 'profile',
    async export(db, userId) {
      const user = await db
        .selectFrom('users')
        .select([
          'id',
          'email',
          'name',
          'email_verified_at',
          'disabled_at',
          'platform_role',
          'totp_enabled_at',
          'password_changed_at',
          'created_at',
          'updated_at',
        ])
        .where('id', '=', userId)
        .executeTakeFirst();
      if (!user) return null;
      return {
        id: user.id,
        email: user.email,
        name: user.name,
        emailVerifiedAt: user.email_verified_at,
        disabledAt: user.disabled_at,
        platformRole: user.platform_role,
        mfaEnabledAt: user.totp_enabled_at,
        passwordChangedAt: user.password_changed_at,
        createdAt: user.created_at,
        updatedAt: user.updated_at,
      };
    },
    /**
     * Deletes the account — its sessions, tokens, codes, password history and everything else keyed to it go
     * with it by cascade — and the copies of its address and name outside it: sign-in counters for the address
     * and the addresses it signed in from, and mails in the development outbox to it or naming it.
     */
    async erase(db, subject) {
      await db
        .deleteFrom('login_throttles')
        .where('key', 'in', [`email:${subject.email}`, ...subject.ips.map((ip) => `ip:${ip}`)])
        .execute();
      await db
        .deleteFrom('mail_outbox')
        .where((eb) =>
          eb.or([
            eb('recipient', '=', subject.email),
            containsText(db, 'text_body', subject.email),
            containsText(db, 'text_body', subject.name),
          ]),
        )
        .execute();
      await db.deleteFrom('users').where('id', '=', subject.userId).execute();
    },
  },
  {
    name: 'sessions',
    async export(db, userId) {
      const rows = await db
        .selectFrom('sessions')
        .select([
          'id',
          'ip',
          'user_agent',
          'created_at',
          'last_used_at',
          'expires_at',
          'revoked_at',
          'revoked_reason',
        ])
        .where('user_id', '=', userId)
        .orderBy('created_at')
        .orderBy('id')
        .execute();
      return rows.map((r) => ({
        id: r.id,
        ip: r.ip,
        userAgent: r.user_agent,
        createdAt: r.created_at,
        lastUsedAt: r.last_used_at,
        expiresAt: r.expires_at,
        revokedAt: r.revoked_at,
        revokedReason: r.revoked_reason,
      }));
    },
  },
];
