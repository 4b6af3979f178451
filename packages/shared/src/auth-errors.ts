import { defineErrors } from './errors.ts';

/** Errors of the identity module: sign-up, sign-in, sessions, passwords, email verification and MFA. */
export const authErrors = defineErrors({
  SIGNUP_DISABLED: { status: 403, title: 'Sign-up is closed on this installation; ask for an invitation.' },
  EMAIL_TAKEN: { status: 409, title: 'An account with this email address already exists.' },
  PASSWORD_TOO_WEAK: { status: 400, title: 'The password does not meet the password policy.' },
  PASSWORD_REUSED: { status: 400, title: 'The password was used recently; choose a new one.' },
  INVALID_CREDENTIALS: { status: 401, title: 'The email address or password is wrong.' },
  EMAIL_NOT_VERIFIED: { status: 403, title: 'Verify your email address before signing in.' },
  PASSWORD_EXPIRED: { status: 403, title: 'The password has expired; reset it to sign in.' },
  ACCOUNT_DISABLED: { status: 403, title: 'This account is disabled.' },
  ACCOUNT_LOCKED: { status: 423, title: 'Too many failed sign-ins; try again later.' },
  TOO_MANY_ATTEMPTS: { status: 429, title: 'Too many failed attempts from this address; try again later.' },
  INVALID_TOKEN: { status: 401, title: 'The token is missing, invalid or expired.' },
  SESSION_REVOKED: { status: 401, title: 'This session has ended; sign in again.' },
  INVALID_REFRESH_TOKEN: { status: 401, title: 'The refresh token is invalid, expired or already used.' },
  INVALID_ONE_TIME_TOKEN: { status: 400, title: 'The link is invalid, expired or already used.' },
  WRONG_PASSWORD: { status: 403, title: 'The current password is wrong.' },
  MFA_ALREADY_ENABLED: { status: 409, title: 'Two-factor authentication is already on.' },
  MFA_NOT_ENROLLED: { status: 409, title: 'Start two-factor enrolment first.' },
  MFA_NOT_ENABLED: { status: 409, title: 'Two-factor authentication is not on.' },
  INVALID_MFA_CODE: { status: 401, title: 'The two-factor code is wrong or already used.' },
  SESSION_NOT_FOUND: { status: 404, title: 'No such session.' },
  USER_NOT_FOUND: { status: 404, title: 'No such user.' },
  FORBIDDEN: { status: 403, title: 'You may not do this.' },
  /** A superadmin route called from outside `SUPERADMIN_ALLOWED_IPS`, refused before authentication. */
  SUPERADMIN_IP_NOT_ALLOWED: { status: 403, title: 'Operator actions are not allowed from this address.' },
});
