/**
 * The egress policy: which addresses an outbound delivery may reach (design §5, reliability §3.1).
 *
 * An address is reachable when it is ordinary public unicast. Everything else is blocked: private (RFC 1918),
 * loopback, link-local (169.254/16 with the cloud metadata address, fe80::/10), CGNAT 100.64/10, 0.0.0.0/8 and ::,
 * broadcast, multicast, reserved and documentation ranges, IPv6 unique-local fc00::/7, IPv4-compatible ::/96 and all
 * IPv6 outside 2000::/3. IPv4-mapped IPv6 (::ffff:a.b.c.d) is unwrapped first and judged as the IPv4 address it
 * reaches; NAT64 64:ff9b::/96 and 6to4 2002::/16 are judged by the IPv4 address they embed (gitlab-org/gitlab-ce#53242).
 * The classification is ipaddr.js's `range()`: anything that is not 'unicast' is blocked.
 *
 * The allowlist (`egress.allow`, empty by default) opens exceptions. Its rule, kept narrow on purpose because
 * allowlisting one internal address once switched off rebinding protection everywhere (gitlab-org/gitlab#293733):
 *
 * - Entries are CIDRs (10.20.0.0/16, ::1/128), bare addresses (a /32 or /128) or exact host names (no wildcards).
 * - A CIDR entry is matched against each *resolved* address (after unwrapping IPv4-mapped forms). It opens that
 *   address, nothing else: a name resolving to one allowed and one private address is still blocked.
 * - A host-name entry opens the addresses that name resolves to, except unspecified, broadcast, multicast and
 *   link-local ones (cloud metadata lives at 169.254.169.254): those open only through an explicit CIDR.
 * - Nothing skips the other checks: names are still resolved once, every address is checked, the connection goes to
 *   the checked address, redirects are never followed, and a resolver failure blocks (fail closed).
 * - Plain http:// is allowed only when every address was opened by the allowlist (CIDR or host entry); a public
 *   address alone does not qualify.
 *
 * Issue strings name ranges, never the resolved address: they reach API callers, and echoing what an internal name
 * resolves to would turn registration into a network scanner (reliability §3.1, read-SSRF).
 */
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import { RouterError } from '../../src/errors.ts';

type Addr = ipaddr.IPv4 | ipaddr.IPv6;

/** A resolver with the shape of `dns.promises.lookup(host, { all: true })`; injected so tests never touch DNS. */
export type LookupAll = (hostname: string, options: { all: true }) => Promise<readonly { address: string; family: number }[]>;

export type AddressVerdict =
  | { readonly allowed: true; readonly address: string; readonly via: 'public' | 'cidr' | 'host' }
  | { readonly allowed: false; readonly address: string; readonly reason: string };

export interface EgressPolicy {
  /** The entries as given, for the start-up log line. */
  readonly entries: readonly string[];
  /** True when the host name itself is listed. */
  allowsHost(host: string): boolean;
  /**
   * The verdict for one resolved (or literal) address of `host`. `host` matters only for host-name entries; pass
   * the URL's host name, or undefined for a bare address.
   */
  checkAddress(ip: string, host?: string): AddressVerdict;
}

/** Ranges a host-name entry can never open (only an explicit CIDR can). */
const NOT_OPENABLE_BY_HOST: ReadonlySet<string> = new Set(['unspecified', 'broadcast', 'multicast', 'linkLocal']);

// Beyond ipaddr.js's table: IPv4-compatible ::a.b.c.d (deprecated, RFC 4291 §2.5.5.1) and everything outside the
// global unicast block 2000::/3, which ipaddr.js calls 'unicast' although nothing is assigned there.
const V6_COMPATIBLE = ipaddr.parseCIDR('::/96') as [ipaddr.IPv6, number];
const V6_GLOBAL = ipaddr.parseCIDR('2000::/3') as [ipaddr.IPv6, number];
const V6_NAT64_WKP = ipaddr.parseCIDR('64:ff9b::/96') as [ipaddr.IPv6, number];

/** Host names compared as the WHATWG URL parser leaves them: lower case, no brackets, no trailing dot. */
export function normaliseHost(host: string): string {
  let h = host.trim().toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (h.endsWith('.')) h = h.slice(0, -1);
  return h;
}

function parseAddress(ip: string): Addr | undefined {
  const bare = normaliseHost(ip);
  // isIP covers the canonical forms lookups return; ipaddr also parses 127.1, 0x7f.1, 2130706433 and octal forms,
  // which getaddrinfo would happily resolve too.
  if (isIP(bare) === 0 && !ipaddr.isValid(bare)) return undefined;
  try {
    const addr = ipaddr.parse(bare);
    return addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress() ? (addr as ipaddr.IPv6).toIPv4Address() : addr;
  } catch {
    return undefined;
  }
}

/** True when `host` is an IP literal in any form ipaddr.js or Node accept (brackets allowed). */
export function isIpLiteral(host: string): boolean {
  return parseAddress(host) !== undefined;
}

function embeddedV4(addr: ipaddr.IPv6): ipaddr.IPv4 | undefined {
  const p = addr.parts;
  if (addr.match(V6_NAT64_WKP)) return new ipaddr.IPv4([p[6]! >> 8, p[6]! & 0xff, p[7]! >> 8, p[7]! & 0xff]);
  if (addr.range() === '6to4') return new ipaddr.IPv4([p[1]! >> 8, p[1]! & 0xff, p[2]! >> 8, p[2]! & 0xff]);
  return undefined;
}

/**
 * The range an address falls in, ipaddr.js names ('unicast' is the only reachable one). IPv4-mapped addresses must
 * already be unwrapped (parseAddress does it).
 */
export function addressRange(addr: Addr): string {
  if (addr.kind() === 'ipv4') return addr.range();
  const v6 = addr as ipaddr.IPv6;
  const v4 = embeddedV4(v6);
  if (v4) {
    const inner = v4.range();
    return inner === 'unicast' ? 'unicast' : `${v6.range() === '6to4' ? '6to4' : 'nat64'}:${inner}`;
  }
  const range = v6.range();
  if (range !== 'unicast') return range;
  if (v6.match(V6_COMPATIBLE)) return 'ipv4Compatible';
  if (!v6.match(V6_GLOBAL)) return 'reserved';
  return 'unicast';
}

/** Classifies one address without any allowlist: `{ range }`, blocked unless range is 'unicast'. */
export function classifyAddress(ip: string): { readonly address: string; readonly range: string; readonly blocked: boolean } {
  const addr = parseAddress(ip);
  if (!addr) return { address: ip, range: 'invalid', blocked: true };
  const range = addressRange(addr);
  return { address: addr.toString(), range, blocked: range !== 'unicast' };
}

function parseEntry(entry: string): { cidr: [Addr, number] } | { host: string } {
  const e = entry.trim();
  if (e.includes('/')) {
    const [addr, bits] = ipaddr.parseCIDR(e); // throws on garbage
    // An IPv4-mapped CIDR (::ffff:10.0.0.0/104) means the IPv4 range it maps.
    if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress() && bits >= 96) {
      return { cidr: [(addr as ipaddr.IPv6).toIPv4Address(), bits - 96] };
    }
    return { cidr: [addr, bits] };
  }
  // Bare addresses must be canonical: "127.1" in an allowlist is more likely a typo than intent.
  const bare = normaliseHost(e);
  if (isIP(bare) !== 0) {
    const addr = parseAddress(bare)!;
    return { cidr: [addr, addr.kind() === 'ipv4' ? 32 : 128] };
  }
  if (!/^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/.test(bare) || /^[0-9.]+$/.test(bare)) {
    throw new Error(`not a CIDR, an address or a host name`);
  }
  return { host: bare };
}

/**
 * Builds the policy from `egress.allow`. Throws ROUTER_ERR_CONFIG_INVALID listing every bad entry.
 */
export function createEgressPolicy(allow: readonly string[]): EgressPolicy {
  const cidrs: [Addr, number][] = [];
  const hosts = new Set<string>();
  const bad: string[] = [];
  for (const entry of allow) {
    try {
      const parsed = parseEntry(entry);
      if ('cidr' in parsed) cidrs.push(parsed.cidr);
      else hosts.add(parsed.host);
    } catch (err) {
      bad.push(`egress.allow entry "${entry}": ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  if (bad.length > 0) throw new RouterError('ROUTER_ERR_CONFIG_INVALID', bad.join('; '));

  const inCidr = (addr: Addr): boolean => cidrs.some(([net, bits]) => net.kind() === addr.kind() && addr.match(net, bits));
  const allowsHost = (host: string): boolean => hosts.has(normaliseHost(host));

  return {
    entries: Object.freeze([...allow]),
    allowsHost,
    checkAddress(ip, host) {
      const addr = parseAddress(ip);
      if (!addr) return { allowed: false, address: ip, reason: 'invalid' };
      const address = addr.toString();
      if (inCidr(addr)) return { allowed: true, address, via: 'cidr' };
      const range = addressRange(addr);
      if (host !== undefined && allowsHost(host) && !NOT_OPENABLE_BY_HOST.has(range.split(':').at(-1)!)) return { allowed: true, address, via: 'host' };
      if (range === 'unicast') return { allowed: true, address, via: 'public' };
      return { allowed: false, address, reason: range };
    },
  };
}

/**
 * Why a connection was refused. Thrown by the connector (its `code` is what classify.ts maps to ssrf_blocked or
 * dns_error), never by the policy itself. `message` carries the range, not the address.
 */
export class EgressError extends Error {
  readonly code: 'ROUTER_SSRF_BLOCKED' | 'ROUTER_DNS_FAILED';
  /** A range name ('loopback', 'private', …), 'http_not_allowed', or the resolver's error code. */
  readonly reason: string;
  readonly host: string;

  constructor(code: EgressError['code'], host: string, reason: string, options?: { cause?: unknown }) {
    super(code === 'ROUTER_SSRF_BLOCKED' ? `egress to ${host} blocked (${reason})` : `could not resolve ${host} (${reason})`, options);
    this.name = 'EgressError';
    this.code = code;
    this.host = host;
    this.reason = reason;
  }
}

/**
 * Resolves `hostname` once and checks every address; returns the address to connect to, or throws EgressError.
 * The connector and the registration check share it, so the two can never disagree.
 */
export async function resolveChecked(
  hostname: string,
  /** 'https:' or 'http:'; anything but https needs an explicit allowlist entry. */
  protocol: string,
  policy: EgressPolicy,
  lookup: LookupAll,
): Promise<AddressVerdict & { allowed: true }> {
  const host = normaliseHost(hostname);
  const explicitOnly = protocol !== 'https:';
  const judge = (ip: string): AddressVerdict & { allowed: true } => {
    const v = policy.checkAddress(ip, host);
    if (!v.allowed) throw new EgressError('ROUTER_SSRF_BLOCKED', host, v.reason);
    if (explicitOnly && v.via === 'public') throw new EgressError('ROUTER_SSRF_BLOCKED', host, 'http_not_allowed');
    return v;
  };
  // Literal IPs: Node's net.connect never calls a lookup for them, so they are judged here (nodejs/undici#2019).
  if (isIpLiteral(host)) return judge(host);

  let addresses: readonly { address: string }[];
  try {
    addresses = await lookup(host, { all: true });
  } catch (err) {
    const code = (err as { code?: unknown } | null)?.code;
    throw new EgressError('ROUTER_DNS_FAILED', host, typeof code === 'string' ? code : 'lookup_failed', { cause: err });
  }
  if (!Array.isArray(addresses) || addresses.length === 0) throw new EgressError('ROUTER_DNS_FAILED', host, 'ENOTFOUND');
  // Every address is judged, not only the one used: a resolver answering one public and one private address is a
  // rebinding setup (gitlab-org/gitlab-ce#63959).
  const verdicts = addresses.map((a) => judge(a.address));
  return verdicts[0]!;
}

function describeRefusal(reason: string, literal: boolean): string {
  if (reason === 'http_not_allowed') return 'plain http:// is allowed only for destinations listed in egress.allow';
  return `${literal ? 'the address' : 'the host resolves to an address that'} is not allowed by the egress rules (${reason})`;
}

/**
 * Registration-time check of a subscriber URL (the REST API answers 422 with these issues). An empty list means
 * acceptable now; the connector checks again at every connect, since DNS answers change.
 */
export async function checkUrlForRegistration(url: string, policy: EgressPolicy, lookup: LookupAll): Promise<string[]> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return ['url is not a valid absolute URL'];
  }
  const issues: string[] = [];
  if (u.protocol !== 'https:' && u.protocol !== 'http:') issues.push(`scheme ${u.protocol.replace(/:$/, '')} is not allowed; use https`);
  if (u.username !== '' || u.password !== '') issues.push('url must not contain credentials (user:password@)');
  if (u.hostname === '') issues.push('url has no host');
  if (issues.length > 0) return issues;

  const literal = isIpLiteral(u.hostname);
  try {
    await resolveChecked(u.hostname, u.protocol, policy, lookup);
  } catch (err) {
    if (!(err instanceof EgressError)) throw err;
    issues.push(err.code === 'ROUTER_DNS_FAILED' ? 'the host could not be resolved' : describeRefusal(err.reason, literal));
  }
  return issues;
}
