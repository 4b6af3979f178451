import ipaddr from 'ipaddr.js';

/** One allowlist entry as ipaddr.js matches it: a network address and its prefix length in bits. */
export type IpRange = [ipaddr.IPv4 | ipaddr.IPv6, number];

/**
 * An IP address or CIDR range (`203.0.113.7`, `10.0.0.0/8`, `2001:db8::/32`) as ipaddr.js matches it; a plain
 * address is a range of one (`/32` or `/128`). Undefined when `entry` is neither.
 */
export function parseRange(entry: string): IpRange | undefined {
  try {
    if (entry.includes('/')) return ipaddr.parseCIDR(entry);
    const address = ipaddr.parse(entry);
    return [address, address.kind() === 'ipv4' ? 32 : 128];
  } catch {
    return undefined;
  }
}

/**
 * Whether the client address `ip` lies in one of `ranges`; `null` means no allowlist (every address is allowed)
 * and an address that does not parse is never allowed.
 */
export function allowedFrom(ranges: readonly IpRange[] | null, ip: string): boolean {
  if (!ranges) return true;
  if (!ipaddr.isValid(ip)) return false;
  // An IPv4 client on a dual-stack socket appears as ::ffff:a.b.c.d; compare it as the IPv4 address it is.
  const address = ipaddr.process(ip);
  return ranges.some(([range, bits]) => range.kind() === address.kind() && address.match(range, bits));
}

/** The prefix an IPv6 client is counted by: one /64 is what a single subscriber or host is usually given. */
const IPV6_CLIENT_PREFIX_BITS = 64;

/**
 * The key a client address is counted under by per-IP limits: an IPv4 address as itself (also when it arrives
 * IPv4-mapped on a dual-stack socket, `::ffff:a.b.c.d`), an IPv6 address by its /64 network — whoever holds one
 * /64 holds 2^64 addresses, and counting each alone would let them step around any per-IP limit.
 */
export function clientKey(ip: string): string {
  if (!ipaddr.isValid(ip)) return ip;
  const address = ipaddr.process(ip);
  if (address.kind() === 'ipv4') return address.toString();
  const network = ipaddr.IPv6.networkAddressFromCIDR(`${address.toString()}/${IPV6_CLIENT_PREFIX_BITS}`);
  return `${network.toString()}/${IPV6_CLIENT_PREFIX_BITS}`;
}
