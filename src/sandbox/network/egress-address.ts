// Addresses for the egress proxy: strict IP parsing, CIDR lists, and the one question the proxy
// asks before every connect — may this address be reached from a sandbox?
//
// Written by hand on purpose (no ip-parsing library): this file IS the security boundary of the
// allowlist mode. It parses only canonical forms (dotted-quad IPv4 without leading zeros, RFC 4291
// IPv6 text without a zone id) into bytes and classifies the bytes, so a lenient parser elsewhere
// (inet_aton accepts `2130706433`, `0177.0.0.1`, `0x7f.1`, and getaddrinfo/dns.lookup resolve them)
// can never make the check and the connect disagree. IPv6 forms that carry an IPv4 address
// (mapped ::ffff:a.b.c.d, compatible ::a.b.c.d, NAT64 64:ff9b::/96, 6to4 2002::/16) are
// classified by the IPv4 address inside.
import net from 'node:net';

export interface Cidr {
  readonly family: 4 | 6;
  readonly bytes: Uint8Array;
  readonly prefix: number;
  /** Canonical text, e.g. `10.0.0.0/8`, for logs and messages. */
  readonly text: string;
}

/** Bytes of a canonical IPv4 (4 bytes) or IPv6 (16 bytes) literal, or null. Zone ids are not literals here. */
export function parseIp(text: string): Uint8Array | null {
  if (net.isIPv4(text)) return Uint8Array.from(text.split('.').map(Number));
  if (text.includes('%') || !net.isIPv6(text)) return null;
  return parseIpv6(text);
}

function parseIpv6(text: string): Uint8Array | null {
  // A trailing dotted quad (::ffff:127.0.0.1) becomes its two hex groups (::ffff:7f00:1).
  let body = text;
  const lastColon = text.lastIndexOf(':');
  const quad = text.slice(lastColon + 1);
  if (quad.includes('.')) {
    if (!net.isIPv4(quad)) return null;
    const [a = 0, b = 0, c = 0, d = 0] = quad.split('.').map(Number);
    body = `${text.slice(0, lastColon + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const halves = body.split('::');
  if (halves.length > 2) return null;
  const groups = (s: string | undefined) => (s === undefined || s === '' ? [] : s.split(':').map((g) => (/^[0-9a-f]{1,4}$/i.test(g) ? parseInt(g, 16) : Number.NaN)));
  const head = groups(halves[0]);
  const rest = groups(halves[1]);
  const missing = 8 - head.length - rest.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const all = [...head, ...(halves.length === 2 ? new Array<number>(missing).fill(0) : []), ...rest];
  if (all.some((g) => Number.isNaN(g))) return null;
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/** RFC 5952 text of 4 or 16 bytes (IPv6 lowercase, longest zero run compressed). */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return Array.from(bytes).join('.');
  const g = Array.from({ length: 8 }, (_, i) => ((bytes[2 * i] ?? 0) << 8) | (bytes[2 * i + 1] ?? 0));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = (a: number[]) => a.map((x) => x.toString(16)).join(':');
  return best < 0 ? hex(g) : `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

function inPrefix(bytes: Uint8Array, base: Uint8Array, prefix: number): boolean {
  if (bytes.length !== base.length) return false;
  for (let bit = 0; bit < prefix; bit += 8) {
    const n = Math.min(8, prefix - bit);
    const mask = (0xff << (8 - n)) & 0xff;
    if (((bytes[bit / 8] ?? 0) & mask) !== ((base[bit / 8] ?? 0) & mask)) return false;
  }
  return true;
}

const v4 = (a: number, b = 0, c = 0, d = 0) => Uint8Array.from([a, b, c, d]);
const v6 = (text: string) => parseIpv6(text) as Uint8Array;

/** The IPv4 address an IPv6 address carries (mapped, compatible, translated, NAT64, 6to4), or null. */
export function embeddedIpv4(b: Uint8Array): { ip: Uint8Array; via: string } | null {
  if (b.length !== 16) return null;
  const last4 = b.slice(12, 16);
  if (inPrefix(b, v6('::ffff:0:0'), 96)) return { ip: last4, via: 'IPv4-mapped' };
  if (inPrefix(b, v6('::ffff:0:0:0'), 96)) return { ip: last4, via: 'IPv4-translated' };
  if (inPrefix(b, v6('64:ff9b::'), 96)) return { ip: last4, via: 'NAT64' };
  if (inPrefix(b, v6('2002::'), 16)) return { ip: b.slice(2, 6), via: '6to4' };
  // IPv4-compatible ::a.b.c.d (deprecated), but not :: and ::1 themselves.
  if (inPrefix(b, v6('::'), 96) && !(last4[0] === 0 && last4[1] === 0 && last4[2] === 0)) return { ip: last4, via: 'IPv4-compatible' };
  return null;
}

type Rule = [bytes: Uint8Array, prefix: number, reason: string, exemptable: boolean];
// Order matters: the first match names the reason (metadata before link-local/private).
// exemptable: an operator's EGRESS_ALLOW_PRIVATE_CIDRS may open it; the others never make sense
// as a destination (unspecified reaches this host, multicast and broadcast are not a peer).
const V4_RULES: Rule[] = [
  [v4(0), 8, 'unspecified address (0.0.0.0/8)', false],
  [v4(255, 255, 255, 255), 32, 'broadcast address', false],
  [v4(127), 8, 'loopback address', true],
  [v4(169, 254, 169, 254), 32, 'cloud metadata address', true],
  [v4(169, 254), 16, 'link-local address', true],
  [v4(10), 8, 'private address (10.0.0.0/8)', true],
  [v4(172, 16), 12, 'private address (172.16.0.0/12)', true],
  [v4(192, 168), 16, 'private address (192.168.0.0/16)', true],
  [v4(100, 64), 10, 'carrier-grade NAT address (100.64.0.0/10)', true],
  [v4(224), 4, 'multicast address', false],
  [v4(240), 4, 'reserved address (240.0.0.0/4)', false],
];
const V6_RULES: Rule[] = [
  [v6('::'), 128, 'unspecified address (::)', false],
  [v6('::1'), 128, 'loopback address', true],
  [v6('fd00:ec2::254'), 128, 'cloud metadata address', true],
  [v6('fe80::'), 10, 'link-local address', true],
  [v6('fec0::'), 10, 'site-local address', true],
  [v6('fc00::'), 7, 'private address (unique local fc00::/7)', true],
  [v6('64:ff9b:1::'), 48, 'private address (local-use NAT64 64:ff9b:1::/48)', true],
  [v6('2001::'), 32, 'Teredo address (embeds an obfuscated IPv4)', false],
  [v6('ff00::'), 8, 'multicast address', false],
];

function inAny(b: Uint8Array, list: readonly Cidr[]): boolean {
  return list.some((c) => inPrefix(b, c.bytes, c.prefix));
}

/**
 * Why a sandbox may not connect to `ip` (one line), or null when it may. Anything that is not a
 * canonical IP literal is refused (a zone id, `0177.0.0.1`, a name). `allowPrivate` exempts the
 * loopback, private, link-local, metadata and CGNAT classes inside its CIDRs, never unspecified,
 * broadcast, multicast or reserved.
 */
export function refusedAddressReason(ip: string, allowPrivate: readonly Cidr[]): string | null {
  if (ip.includes('%')) return `${ip} is refused (IPv6 zone id)`;
  const bytes = parseIp(ip);
  if (bytes === null) return `${ip} is refused (not a canonical IP address)`;
  const inner = embeddedIpv4(bytes);
  const check = (b: Uint8Array, exempt: boolean): string | null => {
    for (const [base, prefix, reason, exemptable] of b.length === 4 ? V4_RULES : V6_RULES) {
      if (!inPrefix(b, base, prefix)) continue;
      return exemptable && exempt ? null : reason;
    }
    return null;
  };
  const exempt = inAny(bytes, allowPrivate) || (inner !== null && inner.via === 'IPv4-mapped' && inAny(inner.ip, allowPrivate));
  const own = check(bytes, exempt);
  if (own !== null) return `${ip} is refused (${own})`;
  if (inner !== null) {
    const why = check(inner.ip, exempt);
    if (why !== null) return `${ip} is refused (${inner.via} ${formatIp(inner.ip)}: ${why})`;
  }
  return null;
}

/** Parses EGRESS_ALLOW_PRIVATE_CIDRS entries (`10.0.0.0/8`, `fd12::/16`, a bare address = one host). Throws naming the entry. */
export function parseCidrs(list: readonly string[]): Cidr[] {
  return list.map((entry, i) => {
    const fail = (why: string) => new Error(`Invalid CIDR ${JSON.stringify(entry)} at index ${i}: ${why}`);
    const [addr = '', len, extra] = entry.split('/');
    if (extra !== undefined) throw fail('more than one "/"');
    const bytes = parseIp(addr);
    if (bytes === null) throw fail('not a canonical IPv4 or IPv6 address');
    const max = bytes.length * 8;
    if (len !== undefined && !/^(0|[1-9][0-9]{0,2})$/.test(len)) throw fail('the prefix length is not a number');
    const prefix = len === undefined ? max : Number(len);
    if (prefix > max) throw fail(`the prefix length is over ${max}`);
    const masked = bytes.map((b, k) => b & ((0xff << (8 - Math.max(0, Math.min(8, prefix - 8 * k)))) & 0xff));
    return { family: bytes.length === 4 ? 4 : 6, bytes: masked, prefix, text: `${formatIp(masked)}/${prefix}` };
  });
}
