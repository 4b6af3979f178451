import { afterEach, describe, expect, it } from 'vitest';
import type { PlinthApp } from '../../app.ts';
import { bearer, createFakeClock, DAY, HOUR, login, PASSWORD } from '../../test/auth-helpers.ts';
import { testDialects } from '../../test/dialects.ts';
import { buildTestApp } from '../../test/harness.ts';
import { createOrg, invite, signedInUser } from '../../test/org-helpers.ts';

// Retention: every module's declared policies, applied by the daily `privacy.retention` job — which removes what
// served its purpose past its days, keeps what is still live, and takes `RETENTION_DAYS` overrides by name.

describe.each(testDialects)('retention (%s)', (dialect) => {
  const apps: PlinthApp[] = [];
  afterEach(async () => {
    for (const app of apps.splice(0)) await app.close();
  });

  async function start(env: Record<string, string> = {}) {
    const clock = createFakeClock('2030-07-01T12:00:00.000Z');
    const app = await buildTestApp(dialect, { clock, env });
    apps.push(app);
    return { app, clock };
  }

  const sessionIds = async (app: PlinthApp, userId: string) =>
    (await app.database.db.selectFrom('sessions').select('id').where('user_id', '=', userId).execute()).map(
      (s) => s.id,
    );

  it('removes ended sessions and expired export archives after their days, once a day, and keeps live ones', async () => {
    const { app, clock } = await start();
    const user = await signedInUser(app, 'retained@example.test');
    // An organization's row (tenant-scoped, behind row-level security on PostgreSQL) the job must reach too.
    const { id: orgId } = await createOrg(app, user.accessToken, 'Retained Org');
    await invite(app, user.accessToken, orgId, 'never-accepts@example.test', 'member');
    const ended = await login(app, user.email, PASSWORD);
    await app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(ended.accessToken) });
    const exportRes = await app.inject({
      method: 'POST',
      url: '/api/v1/me/export',
      headers: bearer(user.accessToken),
    });
    const exportId = exportRes.json<{ id: string }>().id;
    await app.jobs.drain();
    expect(await sessionIds(app, user.userId)).toHaveLength(2);

    // Eight days on: the export's link expired a day ago; the ended session is still within its 30 days.
    clock.advance(8 * DAY);
    await app.jobs.drain();
    const exported = await app.database.db
      .selectFrom('data_exports')
      .select(['state', 'archive'])
      .where('id', '=', exportId)
      .executeTakeFirstOrThrow();
    expect(exported).toEqual({ state: 'expired', archive: null });
    expect(await sessionIds(app, user.userId)).toHaveLength(2);
    // One run for the day, however often the worker looks.
    await app.jobs.drain();
    const retentionRuns = () =>
      app.database.db
        .selectFrom('jobs')
        .select(['idempotency_key', 'state'])
        .where('name', '=', 'privacy.retention')
        .execute();
    const firstRuns = await retentionRuns();
    expect(firstRuns).toHaveLength(1);

    // Thirty-one days after the sign-out, a sign-in keeps one session alive; the ended one goes.
    clock.advance(23 * DAY);
    const live = await login(app, user.email, PASSWORD);
    await app.jobs.drain();
    const left = await sessionIds(app, user.userId);
    expect(left).toHaveLength(2);
    expect(
      (await app.inject({ method: 'GET', url: '/api/v1/me', headers: bearer(live.accessToken) })).statusCode,
    ).toBe(200);

    // Today's run happened, and the first one, finished 23 days ago, went with the `jobs` policy (14 days).
    const runs = await retentionRuns();
    expect(runs).toHaveLength(1);
    expect(runs[0]?.state).toBe('succeeded');
    expect(runs[0]?.idempotency_key).not.toBe(firstRuns[0]?.idempotency_key);

    // The invitation expired 7 days in; 30 days after that, it goes.
    const invitations = () =>
      app.database.withTenant(orgId, (db) => db.selectFrom('invitations').select('id').execute());
    expect(await invitations()).toHaveLength(1);
    clock.advance(7 * DAY);
    await app.jobs.drain();
    expect(await invitations()).toEqual([]);
  });

  it('takes RETENTION_DAYS over a default, and refuses to start for a policy that does not exist', async () => {
    const { app, clock } = await start({ RETENTION_DAYS: 'sessions=1' });
    const user = await signedInUser(app, 'short@example.test');
    await app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(user.accessToken) });
    // The worker's first look sets the schedule's first due time (03:30 UTC tomorrow).
    await app.jobs.drain();
    clock.advance(2 * DAY + HOUR);
    await app.jobs.drain();
    expect(await sessionIds(app, user.userId)).toEqual([]);

    await expect(start({ RETENTION_DAYS: 'sesions=1' })).rejects.toThrow(
      /RETENTION_DAYS names no such policy: sesions/,
    );
    await expect(start({ RETENTION_DAYS: 'sessions=forever' })).rejects.toThrow(/RETENTION_DAYS/);
  });
});
