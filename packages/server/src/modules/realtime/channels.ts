import { isId } from '../../core/ids.ts';
import type { Principal } from '../auth/index.ts';
import type { AccessResolver } from '../rbac/index.ts';
import { REALTIME_READ } from './permissions.ts';

/**
 * Channel names. There are two kinds, and a channel is one string so that it can be a map key, a Redis message
 * prefix and a query parameter alike:
 * - `org:<orgId>`: an organization's events, for its members (and its API keys) holding `realtime:read`;
 * - `user:<userId>`: one person's own notifications, for that person only (never an API key).
 * Ids are in the one form Plinth hands out (lower-case UUIDs), so two spellings never name one channel.
 */
export type ParsedChannel = { kind: 'org'; orgId: string } | { kind: 'user'; userId: string };

/** The channel of an organization's events. */
export const orgChannel = (orgId: string): string => `org:${orgId}`;
/** The channel of a user's own notifications. */
export const userChannel = (userId: string): string => `user:${userId}`;

/** The channel `name` denotes, or undefined when it is not a channel name. */
export function parseChannel(name: string): ParsedChannel | undefined {
  const at = name.indexOf(':');
  if (at < 0) return undefined;
  const kind = name.slice(0, at);
  const id = name.slice(at + 1);
  if (!isId(id)) return undefined;
  if (kind === 'org') return { kind, orgId: id };
  if (kind === 'user') return { kind, userId: id };
  return undefined;
}

/**
 * Whether `principal` may follow `channel` now. An organization's channel needs a membership (or an API key of
 * that organization) whose permissions include `realtime:read`; the resolver is the one organization
 * routes use, with its cache that every replica forgets at once when a membership or role changes. A user's
 * channel is its owner's alone. Asked on every subscribe and again on every re-check.
 */
export async function mayFollow(
  channel: ParsedChannel,
  principal: Principal,
  access: Pick<AccessResolver, 'resolve'>,
): Promise<boolean> {
  if (channel.kind === 'user') return principal.type === 'user' && principal.userId === channel.userId;
  const granted = await access.resolve(channel.orgId, principal);
  return granted?.permissions.has(REALTIME_READ) ?? false;
}
