import { ApiKeyWithSecret, Organization } from '@plinth/shared';
import type { PlinthApp } from '../app.ts';
import { mailTemplates } from '../modules/mail/index.ts';
import {
  bearer,
  latestOutboxMail,
  linkFromMail,
  login,
  outboxMails,
  PASSWORD,
  signupAndVerify,
  tokenFromLink,
} from './auth-helpers.ts';

/**
 * Helpers for tests of organizations, roles and API keys. Like the identity helpers they drive the app through
 * `app.inject` as a client would, and throw (failing the test) on any unexpected answer. Shared by several test
 * files: keep the signatures stable.
 */

/** The subject of invitation mails, from the template itself. */
export const INVITATION_SUBJECT = mailTemplates.invitation({
  orgName: 'x',
  inviterName: 'x',
  role: 'x',
  url: 'https://x.test/',
  expiresInDays: 1,
}).subject;

/** Someone signed in: their id, address and access token. */
export interface TestUser {
  userId: string;
  email: string;
  accessToken: string;
}

/** Signs up (verifying the address when the installation requires it) and signs in, with `PASSWORD`. */
export async function signedInUser(app: PlinthApp, email: string, name = 'Grace Hopper'): Promise<TestUser> {
  const { userId, email: stored } = await signupAndVerify(app, { email, password: PASSWORD, name });
  const { accessToken } = await login(app, stored, PASSWORD);
  return { userId, email: stored, accessToken };
}

/** `POST /orgs` as `accessToken`; returns the organization (the caller is its owner). */
export async function createOrg(
  app: PlinthApp,
  accessToken: string,
  name = 'Acme Logistics',
): Promise<Organization> {
  const res = await app.inject({
    method: 'POST',
    url: '/api/v1/orgs',
    headers: bearer(accessToken),
    payload: { name },
  });
  if (res.statusCode !== 201)
    throw new Error(`creating an organization answered ${res.statusCode}: ${res.body}`);
  return Organization.parse(res.json());
}

/** Invites `email` with `role` as `inviterToken`, and returns the token from the invitation mail. */
export async function invite(
  app: PlinthApp,
  inviterToken: string,
  orgId: string,
  email: string,
  role: string,
): Promise<string> {
  const earlier = (await outboxMails(app, email)).filter((m) => m.subject === INVITATION_SUBJECT).length;
  const res = await app.inject({
    method: 'POST',
    url: `/api/v1/orgs/${orgId}/invitations`,
    headers: bearer(inviterToken),
    payload: { email, role },
  });
  if (res.statusCode !== 201) throw new Error(`inviting ${email} answered ${res.statusCode}: ${res.body}`);
  const mail = await latestOutboxMail(app, email, { subject: INVITATION_SUBJECT, minCount: earlier + 1 });
  return tokenFromLink(linkFromMail(mail));
}

/**
 * A new account that has joined `orgId` with `role` through an invitation from `inviterToken`, signed in.
 * The address must not have an account yet.
 */
export async function addMember(
  app: PlinthApp,
  inviterToken: string,
  orgId: string,
  email: string,
  role: string,
): Promise<TestUser> {
  const user = await signedInUser(app, email);
  const token = await invite(app, inviterToken, orgId, user.email, role);
  const res = await app.inject({
    method: 'POST',
    url: '/api/v1/invitations/accept',
    headers: bearer(user.accessToken),
    payload: { token },
  });
  if (res.statusCode !== 200)
    throw new Error(`accepting the invitation answered ${res.statusCode}: ${res.body}`);
  return user;
}

/** `POST /orgs/{orgId}/apikeys` as `accessToken`; returns the key with its secret. */
export async function createApiKey(
  app: PlinthApp,
  accessToken: string,
  orgId: string,
  body: { scopes: string[]; name?: string; expiresAt?: string; allowedIps?: string[] },
): Promise<ApiKeyWithSecret> {
  const res = await app.inject({
    method: 'POST',
    url: `/api/v1/orgs/${orgId}/apikeys`,
    headers: bearer(accessToken),
    payload: { name: 'test key', ...body },
  });
  if (res.statusCode !== 201) throw new Error(`creating an API key answered ${res.statusCode}: ${res.body}`);
  return ApiKeyWithSecret.parse(res.json());
}
