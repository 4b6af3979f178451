import { account, post } from './auth.workloads.ts';
import type { BenchServer } from './servers.ts';
import type { Workload } from './workload.ts';

/**
 * An organization's member list read by the same caller two ways: with an access token (JWT verification, the
 * in-memory revocation set, the cached membership) and with an API key (key parsing, HMAC of the secret, the
 * cached key, usage counting). Everything after authentication — the permission check, the tenant-scoped
 * transaction, the query — is the same, so the difference between the two rows is the cost of each credential.
 */
export async function organization(server: BenchServer): Promise<{ orgId: string; accessToken: string }> {
  const credentials = await account(server);
  const { accessToken } = await post(server, '/api/v1/auth/login', credentials);
  const auth = { authorization: `Bearer ${String(accessToken)}` };
  const { id } = await post(server, '/api/v1/orgs', { name: 'Bench Fleet' }, auth);
  return { orgId: String(id), accessToken: String(accessToken) };
}

export const JWT_LIST = 'plinth: GET /api/v1/orgs/{id}/members (access token)';
export const API_KEY_LIST = 'plinth: GET /api/v1/orgs/{id}/members (API key)';

export const orgWorkloads: Workload[] = [
  {
    name: JWT_LIST,
    server: 'plinth',
    async prepare(server) {
      const { orgId, accessToken } = await organization(server);
      return { path: `/api/v1/orgs/${orgId}/members`, headers: { authorization: `Bearer ${accessToken}` } };
    },
  },
  {
    name: API_KEY_LIST,
    server: 'plinth',
    async prepare(server) {
      const { orgId, accessToken } = await organization(server);
      const { key } = await post(
        server,
        `/api/v1/orgs/${orgId}/apikeys`,
        { name: 'bench', scopes: ['members:read'] },
        { authorization: `Bearer ${accessToken}` },
      );
      return { path: `/api/v1/orgs/${orgId}/members`, headers: { authorization: `Bearer ${String(key)}` } };
    },
  },
];
