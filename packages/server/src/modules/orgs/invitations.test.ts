import { randomBytes } from 'node:crypto';
import { AcceptInvitationResponse, Invitation, MyOrganization, Page } from '@plinth/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PlinthApp } from '../../app.ts';
import {
  bearer,
  cleanupAfterEach,
  createFakeClock,
  createOperator,
  expectProblem,
  findUser,
  latestOutboxMail,
  linkFromMail,
  login,
  loginResponse,
  outboxMails,
  PASSWORD,
  SECOND,
  STRONG_PASSWORDS,
  settleBackgroundWork,
  startTestApp,
  tokenFromLink,
} from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { buildTestApp } from '../../test/harness.ts';
import {
  addMember,
  createOrg,
  INVITATION_SUBJECT,
  invite,
  signedInUser,
  type TestUser,
} from '../../test/org-helpers.ts';

// Invitations bring people into an organization by email: the link carries a secret token (in the URL
// fragment, which never reaches a server log), works once, for the invited address only, until it expires or is
// revoked or replaced; an invitation to someone without an account creates it, already verified.

const PUBLIC_URL = 'https://plinth.test';
const ENV = { REQUIRE_EMAIL_VERIFICATION: 'false', PUBLIC_URL };
const [NEW_PASSWORD = '', OPERATOR_PASSWORD = ''] = STRONG_PASSWORDS;
const InvitationsPage = Page(Invitation);

const accept = (app: PlinthApp, payload: Record<string, unknown>, accessToken?: string) =>
  app.inject({
    method: 'POST',
    url: '/api/v1/invitations/accept',
    payload,
    ...(accessToken === undefined ? {} : { headers: bearer(accessToken) }),
  });

const pendingInvitations = async (app: PlinthApp, accessToken: string, orgId: string) => {
  const res = await app.inject({
    method: 'GET',
    url: `/api/v1/orgs/${orgId}/invitations`,
    headers: bearer(accessToken),
  });
  expect(res.statusCode).toBe(200);
  return InvitationsPage.parse(res.json()).data;
};

const myOrgs = async (app: PlinthApp, accessToken: string) => {
  const res = await app.inject({ method: 'GET', url: '/api/v1/orgs', headers: bearer(accessToken) });
  expect(res.statusCode).toBe(200);
  return Page(MyOrganization).parse(res.json()).data;
};

const userCount = async (app: PlinthApp) =>
  Number(
    (
      await app.database.db
        .selectFrom('users')
        .select((eb) => eb.fn.countAll().as('n'))
        .executeTakeFirstOrThrow()
    ).n,
  );

describe.each(testDialects)('invitations (%s)', (dialect) => {
  // One app for the tests that need no particular configuration; each uses its own people and organization.
  let app: PlinthApp;
  beforeAll(async () => {
    app = await buildTestApp(dialect, { env: ENV });
  });
  afterAll(async () => {
    await app?.close();
  });
  const cleanups = cleanupAfterEach();

  let serial = 0;
  /** An address no other test uses. */
  const address = (label: string) => `${label}-${++serial}@example.com`;
  const person = (label: string): Promise<TestUser> => signedInUser(app, address(label));

  /** Someone who owns a new organization. */
  async function owner(orgName = 'Acme Logistics') {
    const user = await person('owner');
    const org = await createOrg(app, user.accessToken, orgName);
    return { ...user, orgId: org.id };
  }
  const postInvitation = (accessToken: string, orgId: string, payload: Record<string, unknown>) =>
    app.inject({
      method: 'POST',
      url: `/api/v1/orgs/${orgId}/invitations`,
      headers: bearer(accessToken),
      payload,
    });
  const invitationMails = async (email: string) =>
    (await outboxMails(app, email)).filter((mail) => mail.subject === INVITATION_SUBJECT);

  describe('POST /orgs/{orgId}/invitations', () => {
    it('mails a link with the token in its fragment, and never puts the token in the response', async () => {
      const ada = await owner('Northwind Traders');
      const email = address('invitee');

      const res = await postInvitation(ada.accessToken, ada.orgId, { email, role: 'member' });

      expect(res.statusCode).toBe(201);
      const invitation = Invitation.parse(res.json());
      expect(Object.keys(res.json()).sort()).toEqual(Object.keys(invitation).sort());
      expect(invitation).toMatchObject({ email, role: 'member', invitedBy: ada.userId });
      // The default lifetime: seven days.
      expect(Date.parse(invitation.expiresAt) - Date.parse(invitation.createdAt)).toBe(7 * 86_400 * SECOND);

      const mail = await latestOutboxMail(app, email, { subject: INVITATION_SUBJECT });
      const link = new URL(linkFromMail(mail));
      expect(`${link.origin}${link.pathname}`).toBe(`${PUBLIC_URL}/accept-invitation`);
      expect(link.search).toBe('');
      const token = tokenFromLink(link.toString());
      expect(token.length).toBeGreaterThanOrEqual(32);
      expect(res.body).not.toContain(token);
      expect(mail.text_body).toContain('Northwind Traders');
    });

    it('refuses to invite someone who is already a member (409 ALREADY_MEMBER) and sends nothing', async () => {
      const ada = await owner();
      const member = await addMember(app, ada.accessToken, ada.orgId, address('member'), 'member');
      const mailsBefore = (await invitationMails(member.email)).length;

      expectProblem(
        await postInvitation(ada.accessToken, ada.orgId, {
          email: member.email.toUpperCase(),
          role: 'admin',
        }),
        409,
        'ALREADY_MEMBER',
      );
      expectProblem(
        await postInvitation(ada.accessToken, ada.orgId, { email: ada.email, role: 'viewer' }),
        409,
        'ALREADY_MEMBER',
      );

      await settleBackgroundWork();
      expect(await invitationMails(member.email)).toHaveLength(mailsBefore);
      expect(await pendingInvitations(app, ada.accessToken, ada.orgId)).toEqual([]);
    });

    it('refuses to let an admin invite an owner (403 ROLE_NOT_GRANTABLE), and an unknown role (400 UNKNOWN_ROLE)', async () => {
      const ada = await owner();
      const admin = await addMember(app, ada.accessToken, ada.orgId, address('admin'), 'admin');
      const email = address('invitee');

      expectProblem(
        await postInvitation(admin.accessToken, ada.orgId, { email, role: 'owner' }),
        403,
        'ROLE_NOT_GRANTABLE',
      );
      expectProblem(
        await postInvitation(admin.accessToken, ada.orgId, { email, role: 'wizard' }),
        400,
        'UNKNOWN_ROLE',
      );
      await settleBackgroundWork();
      expect(await invitationMails(email)).toEqual([]);
      expect(await pendingInvitations(app, ada.accessToken, ada.orgId)).toEqual([]);

      // A role the admin holds every permission of is fine.
      expect((await postInvitation(admin.accessToken, ada.orgId, { email, role: 'member' })).statusCode).toBe(
        201,
      );
    });

    it('keeps the mail subject fixed and an organization name with line breaks on one line', async () => {
      const ada = await owner('Acme\r\nBcc: victim@example.test\r\n\r\nInjected paragraph');
      const email = address('invitee');

      await invite(app, ada.accessToken, ada.orgId, email, 'viewer');

      const mail = await latestOutboxMail(app, email, { subject: INVITATION_SUBJECT });
      expect(mail.subject).toBe(INVITATION_SUBJECT);
      expect(mail.subject).not.toMatch(/[\r\n]/);
      const lines = mail.text_body.split(/\r?\n/);
      expect(lines.filter((line) => /^\s*Bcc:/i.test(line))).toEqual([]);
      expect(lines).not.toContain('Injected paragraph');
      expect(mail.text_body).toContain('Acme Bcc: victim@example.test Injected paragraph');
      expect(await outboxMails(app, 'victim@example.test')).toEqual([]);
    });
  });

  describe('pending invitations: list, replace, revoke', () => {
    it('lists only pending invitations, newest first', async () => {
      const ada = await owner();
      const accepted = address('accepted');
      const revoked = address('revoked');
      const pending = address('pending');
      const acceptedToken = await invite(app, ada.accessToken, ada.orgId, accepted, 'member');
      await invite(app, ada.accessToken, ada.orgId, revoked, 'viewer');
      await invite(app, ada.accessToken, ada.orgId, pending, 'admin');
      const all = await pendingInvitations(app, ada.accessToken, ada.orgId);
      expect(all.map((i) => [i.email, i.role])).toEqual([
        [pending, 'admin'],
        [revoked, 'viewer'],
        [accepted, 'member'],
      ]);

      expect(
        (await accept(app, { token: acceptedToken, name: 'Alan Turing', password: NEW_PASSWORD })).statusCode,
      ).toBe(200);
      const toRevoke = all.find((i) => i.email === revoked)?.id;
      const del = await app.inject({
        method: 'DELETE',
        url: `/api/v1/orgs/${ada.orgId}/invitations/${toRevoke}`,
        headers: bearer(ada.accessToken),
      });
      expect(del.statusCode).toBe(204);

      expect((await pendingInvitations(app, ada.accessToken, ada.orgId)).map((i) => i.email)).toEqual([
        pending,
      ]);
    });

    it('replaces an earlier invitation of the same address: the old link stops working', async () => {
      const ada = await owner();
      const email = address('invitee');
      const oldToken = await invite(app, ada.accessToken, ada.orgId, email, 'viewer');
      const newToken = await invite(app, ada.accessToken, ada.orgId, email, 'member');

      expect(
        (await pendingInvitations(app, ada.accessToken, ada.orgId)).map((i) => [i.email, i.role]),
      ).toEqual([[email, 'member']]);
      expectProblem(
        await accept(app, { token: oldToken, name: 'Alan Turing', password: NEW_PASSWORD }),
        400,
        'INVALID_INVITATION',
      );
      expect(await findUser(app, email)).toBeUndefined();

      const res = await accept(app, { token: newToken, name: 'Alan Turing', password: NEW_PASSWORD });
      expect(res.statusCode).toBe(200);
      expect(AcceptInvitationResponse.parse(res.json())).toMatchObject({ role: 'member', orgId: ada.orgId });
    });

    it('revoking an invitation stops its link at once', async () => {
      const ada = await owner();
      const email = address('invitee');
      const token = await invite(app, ada.accessToken, ada.orgId, email, 'member');
      const [invitation] = await pendingInvitations(app, ada.accessToken, ada.orgId);
      const revoke = () =>
        app.inject({
          method: 'DELETE',
          url: `/api/v1/orgs/${ada.orgId}/invitations/${invitation?.id}`,
          headers: bearer(ada.accessToken),
        });

      expect((await revoke()).statusCode).toBe(204);

      expectProblem(
        await accept(app, { token, name: 'Alan Turing', password: NEW_PASSWORD }),
        400,
        'INVALID_INVITATION',
      );
      expect(await findUser(app, email)).toBeUndefined();
      expect(await pendingInvitations(app, ada.accessToken, ada.orgId)).toEqual([]);
      expectProblem(await revoke(), 404, 'INVITATION_NOT_FOUND');
    });

    it('stops an invitation whose inviter can no longer grant its role, so a demoted admin keeps no back door', async () => {
      const ada = await owner();
      const admin = await addMember(app, ada.accessToken, ada.orgId, address('admin'), 'admin');
      const email = address('sockpuppet');
      const token = await invite(app, admin.accessToken, ada.orgId, email, 'admin');
      const demote = await app.inject({
        method: 'PATCH',
        url: `/api/v1/orgs/${ada.orgId}/members/${admin.userId}`,
        headers: bearer(ada.accessToken),
        payload: { role: 'viewer' },
      });
      expect(demote.statusCode).toBe(200);

      expectProblem(
        await accept(app, { token, name: 'Alan Turing', password: NEW_PASSWORD }),
        400,
        'INVALID_INVITATION',
      );
      expect(await findUser(app, email)).toBeUndefined();
    });
  });

  describe('POST /invitations/accept', () => {
    it('adds the signed-in invited account with the invited role at once, and only once', async () => {
      const ada = await owner();
      const grace = await person('grace');
      const getOrg = () =>
        app.inject({ method: 'GET', url: `/api/v1/orgs/${ada.orgId}`, headers: bearer(grace.accessToken) });
      // Not a member yet, which the server now remembers for a while.
      expectProblem(await getOrg(), 404, 'ORG_NOT_FOUND');
      // Invited under another spelling of the same address.
      const token = await invite(app, ada.accessToken, ada.orgId, grace.email.toUpperCase(), 'member');

      const res = await accept(app, { token }, grace.accessToken);

      expect(res.statusCode).toBe(200);
      expect(AcceptInvitationResponse.parse(res.json())).toEqual({
        orgId: ada.orgId,
        role: 'member',
        userId: grace.userId,
        accountCreated: false,
      });
      expect((await myOrgs(app, grace.accessToken)).map((o) => [o.id, o.role])).toEqual([
        [ada.orgId, 'member'],
      ]);
      expect((await getOrg()).statusCode).toBe(200);
      expectProblem(await accept(app, { token }, grace.accessToken), 400, 'INVALID_INVITATION');
    });

    it('refuses an invitation sent to another address (403 INVITATION_FOR_ANOTHER_ACCOUNT), leaving it usable', async () => {
      const ada = await owner();
      const grace = await person('grace');
      const mallory = await person('mallory');
      const token = await invite(app, ada.accessToken, ada.orgId, grace.email, 'admin');

      expectProblem(await accept(app, { token }, mallory.accessToken), 403, 'INVITATION_FOR_ANOTHER_ACCOUNT');

      expect(await myOrgs(app, mallory.accessToken)).toEqual([]);
      expect((await accept(app, { token }, grace.accessToken)).statusCode).toBe(200);
    });

    it('asks the owner of an existing account to sign in (401 SIGN_IN_TO_ACCEPT), changing nothing', async () => {
      const ada = await owner();
      const grace = await person('grace');
      const token = await invite(app, ada.accessToken, ada.orgId, grace.email, 'member');

      const res = await accept(app, { token, name: 'Not Grace', password: NEW_PASSWORD });

      expectProblem(res, 401, 'SIGN_IN_TO_ACCEPT');
      expect(res.headers['www-authenticate']).toMatch(/^Bearer/);
      // The account is untouched: its own password still works, the one sent with the invitation does not.
      expect((await loginResponse(app, grace.email, NEW_PASSWORD)).statusCode).toBe(401);
      const { accessToken } = await login(app, grace.email, PASSWORD);
      expect(await myOrgs(app, accessToken)).toEqual([]);
      expect((await accept(app, { token }, accessToken)).statusCode).toBe(200);
    });

    it('refuses a weak password for a new account and creates nothing; the invitation stays usable', async () => {
      const ada = await owner();
      const email = address('newcomer');
      const token = await invite(app, ada.accessToken, ada.orgId, email, 'viewer');

      expectProblem(
        await accept(app, { token, name: 'Alan Turing', password: 'password123' }),
        400,
        'PASSWORD_TOO_WEAK',
      );
      expectProblem(await accept(app, { token }), 400, 'INVALID_INVITATION');
      expect(await findUser(app, email)).toBeUndefined();

      const res = await accept(app, { token, name: 'Alan Turing', password: NEW_PASSWORD });
      expect(res.statusCode).toBe(200);
      expect(AcceptInvitationResponse.parse(res.json())).toMatchObject({
        accountCreated: true,
        role: 'viewer',
      });
    });

    it('refuses a token that was never issued, creating no account', async () => {
      const usersBefore = await userCount(app);

      const res = await accept(app, {
        token: randomBytes(32).toString('base64url'),
        name: 'Alan Turing',
        password: NEW_PASSWORD,
      });

      expectProblem(res, 400, 'INVALID_INVITATION');
      expect(await userCount(app)).toBe(usersBefore);
    });
  });

  it('stops working after INVITATION_TTL_SECONDS', async () => {
    const clock = createFakeClock('2026-03-02T08:00:00.000Z');
    const expiring = await startTestApp(dialect, cleanups, {
      clock,
      env: { ...ENV, INVITATION_TTL_SECONDS: '3600' },
    });
    const ada = await signedInUser(expiring, 'ada@example.com');
    const org = await createOrg(expiring, ada.accessToken);
    const token = await invite(expiring, ada.accessToken, org.id, 'newcomer@example.com', 'member');
    const [invitation] = await pendingInvitations(expiring, ada.accessToken, org.id);
    expect(invitation?.expiresAt).toBe('2026-03-02T09:00:00.000Z');

    clock.advance(3600 * SECOND - 1);
    // The owner's access token has expired by now; sign in again to look.
    const { accessToken } = await login(expiring, 'ada@example.com', PASSWORD);
    expect(await pendingInvitations(expiring, accessToken, org.id)).toHaveLength(1);

    clock.advance(1);

    expect(await pendingInvitations(expiring, accessToken, org.id)).toEqual([]);
    expectProblem(
      await accept(expiring, { token, name: 'Alan Turing', password: NEW_PASSWORD }),
      400,
      'INVALID_INVITATION',
    );
    expect(await findUser(expiring, 'newcomer@example.com')).toBeUndefined();
  });

  it('creates a verified account for a new address, which can sign in, even with sign-up closed', async () => {
    const closed = await startTestApp(dialect, cleanups, { env: { ...ENV, SIGNUP_ENABLED: 'false' } });
    // With sign-up closed, the first account is an operator's.
    await createOperator(closed, { email: 'operator@example.com', password: OPERATOR_PASSWORD });
    const operator = await login(closed, 'operator@example.com', OPERATOR_PASSWORD);
    const org = await createOrg(closed, operator.accessToken, 'Invite Only');
    const signup = await closed.inject({
      method: 'POST',
      url: '/api/v1/auth/signup',
      payload: { email: 'newcomer@example.com', password: NEW_PASSWORD, name: 'Alan Turing' },
    });
    expectProblem(signup, 403, 'SIGNUP_DISABLED');
    const token = await invite(closed, operator.accessToken, org.id, 'newcomer@example.com', 'member');

    const res = await accept(closed, { token, name: 'Alan Turing', password: NEW_PASSWORD });

    expect(res.statusCode).toBe(200);
    const accepted = AcceptInvitationResponse.parse(res.json());
    expect(accepted).toMatchObject({ orgId: org.id, role: 'member', accountCreated: true });
    const user = await findUser(closed, 'newcomer@example.com');
    expect(user).toMatchObject({ id: accepted.userId, name: 'Alan Turing' });
    expect(user?.email_verified_at).not.toBeNull();
    const { accessToken } = await login(closed, 'newcomer@example.com', NEW_PASSWORD);
    expect((await myOrgs(closed, accessToken)).map((o) => [o.id, o.role])).toEqual([[org.id, 'member']]);
    expectProblem(
      await accept(closed, { token, name: 'Alan Turing', password: NEW_PASSWORD }),
      400,
      'INVALID_INVITATION',
    );
  });
});
