import { z } from 'zod';

/**
 * Request and response schemas of the identity endpoints (`/api/v1/auth/*`, `/api/v1/me`), shared by the server,
 * the SDK and the console.
 */

/** The longest password accepted; longer ones are refused before any hashing. */
export const PASSWORD_MAX_LENGTH = 256;

/** An email address, normalised (NFKC, trimmed, lower-cased) before it is validated and used. */
export const Email = z
  .string()
  .max(254, { error: 'An email address has at most 254 characters.' })
  .transform((v) => v.normalize('NFKC').trim().toLowerCase())
  .pipe(z.email({ error: 'Enter a valid email address.' }))
  .meta({ description: 'Email address; compared case-insensitively.', example: 'ada@example.com' });

/** A password as submitted; the password policy (length, common passwords, strength) is checked by the server. */
export const Password = z
  .string()
  .min(1, { error: 'Enter a password.' })
  .max(PASSWORD_MAX_LENGTH, { error: `A password has at most ${PASSWORD_MAX_LENGTH} characters.` })
  .meta({ description: `Password, up to ${PASSWORD_MAX_LENGTH} characters. Never truncated.` });

export const PersonName = z
  .string()
  .trim()
  .min(1, { error: 'Enter a name.' })
  .max(100, { error: 'A name has at most 100 characters.' })
  .meta({ description: 'Display name.' });

/** A TOTP code (6 digits) or a recovery code. */
export const MfaCode = z
  .string()
  .trim()
  .min(6)
  .max(32)
  .meta({ description: 'A 6-digit authenticator code, or a recovery code.' });

const OpaqueToken = z.string().min(16).max(512);

export const SignupBody = z.object({ email: Email, password: Password, name: PersonName });
export const SignupResponse = z
  .object({
    email: z.string(),
    verificationRequired: z
      .boolean()
      .meta({ description: 'Whether the address must be verified before signing in.' }),
  })
  .meta({ id: 'SignupResponse' });

export const LoginBody = z.object({ email: Email, password: Password });

export const TokenPair = z
  .object({
    accessToken: z.string().meta({ description: 'JWT to send as `Authorization: Bearer <accessToken>`.' }),
    refreshToken: z.string().meta({ description: 'Opaque; exchange at /auth/refresh. Single use.' }),
    tokenType: z.literal('Bearer'),
    expiresIn: z.number().int().meta({ description: 'Seconds until the access token expires.' }),
  })
  .meta({ id: 'TokenPair' });

export const MfaChallenge = z
  .object({
    mfaRequired: z.literal(true),
    mfaToken: z.string().meta({ description: 'Present with a code at /auth/mfa/verify within 5 minutes.' }),
  })
  .meta({ id: 'MfaChallenge' });

export const LoginResponse = z.union([TokenPair, MfaChallenge]);

export const RefreshBody = z.object({ refreshToken: OpaqueToken });
export const LogoutBody = z.object({ refreshToken: OpaqueToken.optional() }).optional();

export const Session = z
  .object({
    id: z.string().meta({ description: 'Session id; the `sid` claim of its access tokens.' }),
    userAgent: z.string().nullable(),
    ip: z.string().nullable(),
    createdAt: z.string(),
    lastUsedAt: z.string(),
    current: z.boolean().meta({ description: "True for the caller's own session." }),
  })
  .meta({ id: 'Session' });
export const SessionList = z.object({ data: z.array(Session) }).meta({ id: 'SessionList' });

export const ChangePasswordBody = z.object({ currentPassword: Password, newPassword: Password });
export const ForgotPasswordBody = z.object({ email: Email });
export const ResetPasswordBody = z.object({ token: OpaqueToken, password: Password });
export const VerifyEmailBody = z.object({ token: OpaqueToken });
export const ResendVerificationBody = z.object({ email: Email });
export const Accepted = z.object({ message: z.string() }).meta({ id: 'Accepted' });

export const Me = z
  .object({
    id: z.string(),
    email: z.string(),
    name: z.string(),
    emailVerified: z.boolean(),
    mfaEnabled: z.boolean(),
    platformRole: z.enum(['superadmin']).nullable(),
    createdAt: z.string(),
  })
  .meta({ id: 'Me' });
export const UpdateMeBody = z.object({
  name: PersonName.optional(),
  email: Email.optional(),
  currentPassword: Password.optional().meta({ description: 'Required to change the email address.' }),
});
export const UpdateMeResponse = Me.extend({
  emailChangePending: z.boolean().meta({ description: 'A verification link was sent to the new address.' }),
}).meta({ id: 'UpdateMeResponse' });

export const PasswordBody = z.object({ password: Password });
export const TotpEnrollment = z
  .object({ secret: z.string().meta({ description: 'Base32 TOTP secret.' }), otpauthUri: z.string() })
  .meta({ id: 'TotpEnrollment' });
export const MfaCodeBody = z.object({ code: MfaCode });
export const RecoveryCodes = z
  .object({
    recoveryCodes: z.array(z.string()).meta({ description: 'Ten single-use codes, shown only now.' }),
  })
  .meta({ id: 'RecoveryCodes' });
export const PasswordAndCodeBody = z.object({ password: Password, code: MfaCode });
export const MfaVerifyBody = z.object({ mfaToken: z.string().min(16).max(4096), code: MfaCode });
