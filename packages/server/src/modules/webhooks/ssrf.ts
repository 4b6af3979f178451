import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { lookup as dnsLookupAsync } from 'node:dns/promises';
import type { LookupFunction } from 'node:net';
import ipaddr from 'ipaddr.js';
import { type IpRange, parseRange } from '../../core/ip-ranges.ts';

/**
 * Server-side request forgery defence for webhook URLs (ASVS 1.3.6). A URL is accepted when it is http(s)
 * (https only in production), carries no user name or password, and its host is a public address — or the host,
 * or the address, is listed in `WEBHOOK_ALLOWED_HOSTS`. "Public" means what ipaddr.js calls `unicast`: every
 * special-purpose range is refused — loopback, RFC 1918 private, CGNAT 100.64/10, link-local 169.254/16 (cloud
 * metadata at 169.254.169.254 included), 0.0.0.0/8, broadcast, multicast, the reserved and documentation ranges;
 * in IPv6 `::`, `::1`, fe80::/10, fc00::/7, multicast, NAT64 (64:ff9b::/96), 6to4 and Teredo (which embed IPv4
 * addresses), and IPv4-mapped addresses are judged as the IPv4 address they carry.
 *
 * The check runs when an endpoint is created or changed, and again at every delivery: the connection is opened
 * only to an address that `guardedLookup` resolved and checked itself, so a name that resolved to a public
 * address at creation and to 127.0.0.1 later (DNS rebinding) is refused at the connection.
 */

/** What a webhook URL may reach besides public addresses: `WEBHOOK_ALLOWED_HOSTS`, parsed. */
export interface AddressPolicy {
  /** Host names allowed whatever they resolve to (lower case). */
  hosts: ReadonlySet<string>;
  /** Addresses and ranges allowed although not public. */
  ranges: readonly IpRange[];
}

export function addressPolicy(allowedHosts: readonly string[]): AddressPolicy {
  const hosts = new Set<string>();
  const ranges: IpRange[] = [];
  for (const entry of allowedHosts) {
    const range = parseRange(entry);
    if (range) ranges.push(range);
    else hosts.add(entry.toLowerCase());
  }
  return { hosts, ranges };
}

/** A refused address or URL, with a reason that is safe to show the organization and to log. */
export class AddressRefusedError extends Error {
  override name = 'AddressRefusedError';
}

/** Why `address` may not be reached (`loopback`, `private`, …), or undefined when it may. */
export function addressRefusal(policy: AddressPolicy, address: string): string | undefined {
  if (!ipaddr.isValid(address)) return 'not an IP address';
  // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is judged as the IPv4 address it reaches.
  const parsed = ipaddr.process(address);
  if (policy.ranges.some(([range, bits]) => range.kind() === parsed.kind() && parsed.match(range, bits))) {
    return undefined;
  }
  const range = parsed.range();
  return range === 'unicast' ? undefined : range;
}

/** The URL's host without the brackets of an IPv6 literal, and whether it is an IP address. */
export function hostOf(url: URL): { host: string; literal: boolean } {
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  return { host: host.toLowerCase(), literal: ipaddr.isValid(host) };
}

/** Names that always mean this machine (RFC 6761), refused without asking DNS. */
function isLocalName(host: string): boolean {
  return host === 'localhost' || host.endsWith('.localhost') || host === 'localhost.localdomain';
}

/** How long the check at creation waits for DNS before accepting a name it cannot resolve yet, in ms. */
const CREATE_LOOKUP_TIMEOUT_MS = 3000;

/**
 * Checks a webhook URL as given by a client, before it is stored. Throws AddressRefusedError with the reason.
 * A host name is resolved and every address it has must be allowed; a name that does not resolve (yet) is
 * accepted, since every delivery checks the addresses it connects to anyway.
 * @returns the URL as it will be stored (the WHATWG serialisation: IPv4 in dotted form, host lower-cased).
 */
export async function checkWebhookUrl(
  input: string,
  options: { policy: AddressPolicy; requireHttps: boolean },
): Promise<string> {
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    throw new AddressRefusedError('Not an absolute URL.');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new AddressRefusedError('Only http and https URLs can receive webhooks.');
  }
  if (options.requireHttps && url.protocol !== 'https:') {
    throw new AddressRefusedError('Webhook URLs must use https.');
  }
  if (url.username !== '' || url.password !== '') {
    // Credentials in a URL end up in logs and screenshots; receivers authenticate deliveries by their signature.
    throw new AddressRefusedError('Webhook URLs must not contain a user name or password.');
  }
  const { host, literal } = hostOf(url);
  if (options.policy.hosts.has(host)) return url.toString();
  if (literal) {
    const refusal = addressRefusal(options.policy, host);
    if (refusal) throw new AddressRefusedError(`The address ${host} is not public (${refusal}).`);
    return url.toString();
  }
  if (isLocalName(host)) throw new AddressRefusedError(`${host} is this machine (loopback).`);
  const addresses = await resolveWithin(host, CREATE_LOOKUP_TIMEOUT_MS);
  for (const { address } of addresses) {
    const refusal = addressRefusal(options.policy, address);
    if (refusal)
      throw new AddressRefusedError(`${host} resolves to ${address}, which is not public (${refusal}).`);
  }
  return url.toString();
}

/** Every address of `host`, or none when it does not resolve within `timeoutMs`. */
async function resolveWithin(host: string, timeoutMs: number): Promise<LookupAddress[]> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<LookupAddress[]>((resolve) => {
    timer = setTimeout(() => resolve([]), timeoutMs);
    timer.unref();
  });
  try {
    return await Promise.race([
      dnsLookupAsync(host, { all: true, verbatim: true }).catch(() => [] as LookupAddress[]),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A `lookup` for the HTTP client's connections: resolves the name, refuses the connection (AddressRefusedError)
 * when any of its addresses is not allowed, and otherwise hands exactly the checked addresses to the socket — so
 * what is connected to is what was checked, whatever DNS answers a moment later.
 */
export function guardedLookup(addressPolicy: AddressPolicy): LookupFunction {
  return (hostname, options, callback) => {
    const host = hostname.toLowerCase();
    dnsLookup(hostname, { all: true, verbatim: true, family: options.family ?? 0 }, (error, addresses) => {
      if (error) {
        callback(error, '', 0);
        return;
      }
      if (!addressPolicy.hosts.has(host)) {
        if (isLocalName(host)) {
          callback(new AddressRefusedError(`${host} is this machine (loopback).`), '', 0);
          return;
        }
        for (const { address } of addresses) {
          const refusal = addressRefusal(addressPolicy, address);
          if (refusal) {
            const refused = new AddressRefusedError(
              `${host} resolves to ${address}, which is not public (${refusal}).`,
            );
            callback(refused, '', 0);
            return;
          }
        }
      }
      const first = addresses[0];
      if (!first) {
        callback(Object.assign(new Error(`${host} has no address`), { code: 'ENOTFOUND' }), '', 0);
        return;
      }
      if (options.all) (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, addresses);
      else callback(null, first.address, first.family);
    });
  };
}
