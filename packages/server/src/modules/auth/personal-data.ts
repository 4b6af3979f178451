import type { PersonalDataSource } from '../../core/personal-data.ts';
import { purgeAfter, type RetentionPolicy } from '../../core/retention.ts';
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

/** How long the identity module keeps what has served its purpose (docs/operations.md lists every policy). */
export const identityRetention: RetentionPolicy[] = [
  {
    name: 'sessions',
    description: 'sessions that ended (expired or revoked), with their refresh tokens',
    days: 30,
    apply: purgeAfter({ table: 'sessions', after: ['expires_at', 'revoked_at'] }),
  },
  {
    name: 'refresh_tokens',
    description:
      "refresh tokens past their expiry (a live session's spent tokens stay until then: reuse detection needs them)",
    days: 30,
    apply: purgeAfter({ table: 'refresh_tokens', after: ['expires_at'] }),
  },
  {
    name: 'one_time_tokens',
    description: 'email-verification and password-reset tokens once used or expired',
    days: 1,
    apply: purgeAfter({ table: 'one_time_tokens', after: ['used_at', 'expires_at'] }),
  },
  {
    name: 'login_throttles',
    description: 'sign-in failure counters untouched for longer than any lock lasts',
    days: 2,
    apply: purgeAfter({ table: 'login_throttles', after: ['updated_at'], key: 'key' }),
  },
];
