import type { Kysely } from 'kysely';
import { columnTypes } from '../column-types.ts';
import type { Migration } from '../migrate.ts';

/**
 * Accounts, sessions and everything that proves who someone is. Secrets are never stored in the clear:
 * passwords, refresh tokens, one-time tokens and recovery codes as hashes; the TOTP secret and a refresh
 * token's pending successor encrypted with ENCRYPTION_KEY. Flags are nullable timestamps (when it happened)
 * rather than booleans, which the two dialects represent differently.
 */
export const identity: Migration = {
  async up(db: Kysely<unknown>, dialect) {
    const t = columnTypes(dialect);

    await db.schema
      .createTable('users')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('email', t.text, (c) => c.notNull().unique())
      .addColumn('name', t.text, (c) => c.notNull())
      .addColumn('password_hash', 'text', (c) => c.notNull())
      .addColumn('password_changed_at', t.timestamp, (c) => c.notNull())
      .addColumn('email_verified_at', t.timestamp)
      .addColumn('disabled_at', t.timestamp)
      .addColumn('platform_role', 'text')
      .addColumn('totp_secret', 'text')
      .addColumn('totp_enabled_at', t.timestamp)
      .addColumn('totp_last_step', 'bigint')
      .addColumn('created_at', t.timestamp, (c) => c.notNull())
      .addColumn('updated_at', t.timestamp, (c) => c.notNull())
      .execute();

    await db.schema
      .createTable('password_history')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('user_id', t.id, (c) => c.notNull().references('users.id').onDelete('cascade'))
      .addColumn('password_hash', 'text', (c) => c.notNull())
      .addColumn('created_at', t.timestamp, (c) => c.notNull())
      .execute();
    await db.schema
      .createIndex('password_history_user')
      .on('password_history')
      .columns(['user_id', 'created_at'])
      .execute();

    await db.schema
      .createTable('sessions')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('user_id', t.id, (c) => c.notNull().references('users.id').onDelete('cascade'))
      .addColumn('user_agent', 'text')
      .addColumn('ip', 'text')
      .addColumn('created_at', t.timestamp, (c) => c.notNull())
      .addColumn('last_used_at', t.timestamp, (c) => c.notNull())
      .addColumn('expires_at', t.timestamp, (c) => c.notNull())
      .addColumn('revoked_at', t.timestamp)
      .addColumn('revoked_reason', 'text')
      .execute();
    await db.schema.createIndex('sessions_user').on('sessions').columns(['user_id', 'created_at']).execute();
    await db.schema.createIndex('sessions_revoked').on('sessions').column('revoked_at').execute();

    await db.schema
      .createTable('refresh_tokens')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('session_id', t.id, (c) => c.notNull().references('sessions.id').onDelete('cascade'))
      .addColumn('token_hash', 'text', (c) => c.notNull().unique())
      .addColumn('created_at', t.timestamp, (c) => c.notNull())
      .addColumn('expires_at', t.timestamp, (c) => c.notNull())
      .addColumn('spent_at', t.timestamp)
      .addColumn('successor', 'text')
      .execute();
    await db.schema.createIndex('refresh_tokens_session').on('refresh_tokens').column('session_id').execute();

    await db.schema
      .createTable('one_time_tokens')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('user_id', t.id, (c) => c.notNull().references('users.id').onDelete('cascade'))
      .addColumn('purpose', 'text', (c) => c.notNull())
      .addColumn('token_hash', 'text', (c) => c.notNull().unique())
      .addColumn('target', 'text')
      .addColumn('created_at', t.timestamp, (c) => c.notNull())
      .addColumn('expires_at', t.timestamp, (c) => c.notNull())
      .addColumn('used_at', t.timestamp)
      .execute();
    await db.schema
      .createIndex('one_time_tokens_user')
      .on('one_time_tokens')
      .columns(['user_id', 'purpose'])
      .execute();

    await db.schema
      .createTable('recovery_codes')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('user_id', t.id, (c) => c.notNull().references('users.id').onDelete('cascade'))
      .addColumn('code_hash', 'text', (c) => c.notNull())
      .addColumn('created_at', t.timestamp, (c) => c.notNull())
      .addColumn('used_at', t.timestamp)
      .execute();
    await db.schema.createIndex('recovery_codes_user').on('recovery_codes').column('user_id').execute();

    // Failure counters per submitted email and per client IP, whether or not an account exists.
    await db.schema
      .createTable('login_throttles')
      .addColumn('key', t.text, (c) => c.primaryKey())
      .addColumn('failures', 'integer', (c) => c.notNull())
      .addColumn('locks', 'integer', (c) => c.notNull())
      .addColumn('locked_until', t.timestamp)
      .addColumn('updated_at', t.timestamp, (c) => c.notNull())
      .execute();

    await db.schema
      .createTable('mail_outbox')
      .addColumn('id', t.id, (c) => c.primaryKey())
      .addColumn('recipient', 'text', (c) => c.notNull())
      .addColumn('subject', 'text', (c) => c.notNull())
      .addColumn('text_body', 'text', (c) => c.notNull())
      .addColumn('html_body', 'text', (c) => c.notNull())
      .addColumn('created_at', t.timestamp, (c) => c.notNull())
      .execute();
  },
};
