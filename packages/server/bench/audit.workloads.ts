import { organization } from './orgs.workloads.ts';
import { RATE_LIMIT_ROUNDS, roundName } from './ratelimit.workloads.ts';
import type { Workload } from './workload.ts';

/**
 * What auditing costs a state change: the same authenticated create (a custom role) with and without its audit
 * event, on one server (`audit`: Plinth with the bench module of audit-server.ts). The two modes take turns,
 * three rounds each, and the comparison is between their medians.
 */
export const AUDITED_CREATE = 'plinth: create a role, audited';
export const UNAUDITED_CREATE = 'plinth: create a role, not audited';

const create = (name: string, mode: 'audited' | 'plain'): Workload => ({
  name,
  server: 'audit',
  async prepare(server) {
    const { orgId, accessToken } = await organization(server);
    return {
      method: 'POST',
      path: `/api/v1/orgs/${orgId}/bench-roles/${mode}`,
      headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json' },
      body: '{}',
    };
  },
});

export const auditWorkloads: Workload[] = Array.from({ length: RATE_LIMIT_ROUNDS }, (_, i) => [
  create(roundName(UNAUDITED_CREATE, i + 1), 'plain'),
  create(roundName(AUDITED_CREATE, i + 1), 'audited'),
]).flat();
