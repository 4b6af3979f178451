import { organization } from './orgs.workloads.ts';
import { ROUNDS, roundName, type ServerName, type Workload } from './workload.ts';

/**
 * What auditing costs a state change: the same authenticated create (a custom role) with and without its audit
 * event, on one server (Plinth with the bench module of audit-server.ts), on SQLite (`audit`) and on PostgreSQL
 * (`audit-postgres`). The two modes take turns for `ROUNDS` rounds, and the comparison is round by round.
 */
export const AUDITED_CREATE = 'plinth: create a role, audited';
export const UNAUDITED_CREATE = 'plinth: create a role, not audited';
export const AUDITED_CREATE_POSTGRES = 'plinth: create a role, audited (PostgreSQL)';
export const UNAUDITED_CREATE_POSTGRES = 'plinth: create a role, not audited (PostgreSQL)';

const create = (name: string, server: ServerName, mode: 'audited' | 'plain'): Workload => {
  let caller: { orgId: string; accessToken: string } | undefined;
  return {
    name,
    server,
    async prepare(target) {
      caller = await organization(target);
      return {
        method: 'POST',
        path: `/api/v1/orgs/${caller.orgId}/bench-roles/${mode}`,
        headers: { authorization: `Bearer ${caller.accessToken}`, 'content-type': 'application/json' },
        body: '{}',
      };
    },
    // The events the load left pending are chained before the round's CPU time is read: reading the chain
    // sequences it (modules/audit/sequencer.ts), so the sequencer's work is the audited round's, never the next.
    async settle(target) {
      if (mode !== 'audited' || !caller) return;
      const res = await fetch(`${target.url}/api/v1/orgs/${caller.orgId}/audit?limit=1`, {
        headers: { authorization: `Bearer ${caller.accessToken}` },
      });
      if (!res.ok) throw new Error(`reading the audit log after the load: ${res.status}`);
    },
  };
};

const rounds = (server: ServerName, plain: string, audited: string): Workload[] =>
  Array.from({ length: ROUNDS }, (_, i) => [
    create(roundName(plain, i + 1), server, 'plain'),
    create(roundName(audited, i + 1), server, 'audited'),
  ]).flat();

export const auditWorkloads: Workload[] = [
  ...rounds('audit', UNAUDITED_CREATE, AUDITED_CREATE),
  ...rounds('audit-postgres', UNAUDITED_CREATE_POSTGRES, AUDITED_CREATE_POSTGRES),
];
