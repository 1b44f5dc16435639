// The allowlist policy of a session's egress proxy: patterns (exact host, `*.suffix`, IP literal,
// optional `:port`), the allow/deny decision on a host and port, and (re-exported from
// egress-address.ts) the address checks made after resolution.
//
// Written by hand, not with a URL or glob library: this is the security boundary of the allowlist
// mode, and general parsers are lenient on purpose (WHATWG URL turns `0177.0.0.1` into
// `127.0.0.1`, globs match more than a suffix). Here every host, in a pattern or in a request, is
// normalised one way — lowercase, one trailing dot dropped, IP literals in canonical text — and a
// host that only a lenient parser would read as an address (`2130706433`, `0x7f.1`, `127.1`) is
// refused outright, so the name decided on and the address connected to cannot disagree.
import net from 'node:net';
import { AppError } from '../../errors.js';
import { formatIp, parseIp } from './egress-address.js';

export { parseCidrs, refusedAddressReason, type Cidr } from './egress-address.js';

export type NetworkMode = 'none' | 'allowlist' | 'outbound';
export interface EgressPolicy {
  allow: readonly string[];
  deny: readonly string[];
}

/** At most this many entries in `allow` and in `deny` each. */
export const MAX_POLICY_ENTRIES = 256;
/** The longest host name DNS can carry (a pattern's or a request's host). */
export const MAX_HOST_LENGTH = 253;
/** Ports a pattern without `:port` allows. A deny pattern without a port denies every port. */
export const DEFAULT_PORTS: readonly number[] = [80, 443];

export class EgressPatternError extends AppError {
  constructor(
    readonly pattern: string,
    readonly reason: string,
    where = '',
  ) {
    super(400, 'INVALID_NETWORK_POLICY', `Invalid network pattern ${where}${JSON.stringify(pattern)}: ${reason}`);
  }
}

export interface ParsedPattern {
  readonly source: string;
  /** exact: a host name; suffix: `*.host`, its subdomains only; ip: an IP literal (canonical, no brackets). */
  readonly kind: 'exact' | 'suffix' | 'ip';
  readonly host: string;
  /** null: DEFAULT_PORTS for allow, every port for deny. */
  readonly port: number | null;
}

export interface NormalHost {
  readonly kind: 'name' | 'ip';
  /** Lowercase name without a trailing dot, or canonical IP text without brackets. */
  readonly host: string;
}

class HostError extends Error {}

/** One host (no port), as a request or a pattern names it; throws HostError with a one-line reason. */
function normaliseHostOrThrow(raw: string): NormalHost {
  if (raw === '') throw new HostError('the host is empty');
  if (/\s/.test(raw)) throw new HostError('the host contains whitespace');
  if (raw.includes('%')) throw new HostError('IPv6 zone ids (%...) are refused');
  const bracketed = raw.startsWith('[') && raw.endsWith(']');
  if (bracketed || raw.includes(':')) {
    const bytes = parseIp(bracketed ? raw.slice(1, -1) : raw);
    if (bytes?.length !== 16) throw new HostError('not a valid IPv6 literal');
    return { kind: 'ip', host: formatIp(bytes) };
  }
  if (/[^\x21-\x7e]/.test(raw)) throw new HostError('the host is not ASCII (write the punycode xn-- form)');
  const host = (raw.endsWith('.') ? raw.slice(0, -1) : raw).toLowerCase();
  if (host.length > MAX_HOST_LENGTH) throw new HostError(`the host is longer than ${MAX_HOST_LENGTH} characters`);
  if (net.isIPv4(host)) return { kind: 'ip', host };
  const labels = host.split('.');
  if (labels.some((l) => l === '')) throw new HostError('the host has an empty label');
  // inet_aton and WHATWG URL read a host whose last label is numeric as an IPv4 address in
  // decimal, octal or hex parts; no real name ends that way. Only the dotted quad is accepted.
  if (/^(?:[0-9]+|0x[0-9a-f]*)$/.test(labels[labels.length - 1] ?? '')) {
    throw new HostError('a numeric host that is not a canonical dotted-quad IPv4 address (decimal, octal or hex forms are refused)');
  }
  const bad = labels.find((l) => l.length > 63 || !/^[a-z0-9_-]+$/.test(l));
  if (bad !== undefined) throw new HostError(bad.length > 63 ? 'a label is longer than 63 characters' : `the label ${JSON.stringify(bad)} has characters a host name cannot have`);
  return { kind: 'name', host };
}

/** A request's host normalised, or the reason it is refused. */
export function normaliseHost(raw: string): NormalHost | { error: string } {
  try {
    return normaliseHostOrThrow(raw);
  } catch (err) {
    if (err instanceof HostError) return { error: err.message };
    throw err;
  }
}

/** Throws EgressPatternError (naming the pattern and why) for anything but `host`, `*.suffix`, an IP literal, each with an optional `:port`. */
export function parsePattern(p: string, where = ''): ParsedPattern {
  const fail = (reason: string) => new EgressPatternError(p, reason, where);
  if (typeof p !== 'string' || p === '') throw fail('it is empty');
  if (/\s/.test(p)) throw fail('it contains whitespace');
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(p)) throw fail('it has a scheme; write the host only (e.g. "pypi.org", "*.example.com:8443")');
  if (p.includes('/')) throw fail('it has a path; a pattern names a host (and port), not a URL');
  if (/[?#@]/.test(p)) throw fail('it has a query, fragment or user info');
  let hostPart = p;
  let portPart: string | null = null;
  if (p.startsWith('[')) {
    const end = p.indexOf(']');
    if (end < 0) throw fail('an IPv6 literal has no closing "]"');
    hostPart = p.slice(0, end + 1);
    const rest = p.slice(end + 1);
    if (rest !== '') {
      if (!rest.startsWith(':')) throw fail('unexpected text after "]"');
      portPart = rest.slice(1);
    }
  } else if (p.split(':').length === 2) {
    [hostPart = '', portPart = ''] = p.split(':');
  } // more than one ':' without brackets: a bare IPv6 literal, checked below
  let port: number | null = null;
  if (portPart !== null) {
    if (!/^[0-9]{1,5}$/.test(portPart) || Number(portPart) < 1 || Number(portPart) > 65535) throw fail('the port is not a number from 1 to 65535');
    port = Number(portPart);
  }
  const wildcard = hostPart.startsWith('*.');
  const bare = wildcard ? hostPart.slice(2) : hostPart;
  if (bare.includes('*')) throw fail('a wildcard is allowed only as a leading "*." (subdomains of a suffix)');
  let host: NormalHost;
  try {
    host = normaliseHostOrThrow(bare);
  } catch (err) {
    throw err instanceof HostError ? fail(err.message) : err;
  }
  if (wildcard && host.kind === 'ip') throw fail('a wildcard cannot precede an IP address');
  return { source: p, kind: wildcard ? 'suffix' : host.kind === 'ip' ? 'ip' : 'exact', host: host.host, port };
}

/** Throws EgressPatternError naming the list and index of the first bad entry, or a list over MAX_POLICY_ENTRIES. */
export function validatePolicy(p: EgressPolicy): void {
  for (const list of ['allow', 'deny'] as const) {
    const entries = p[list];
    if (entries.length > MAX_POLICY_ENTRIES) throw new EgressPatternError(`${list}[${MAX_POLICY_ENTRIES}]`, `"${list}" has ${entries.length} entries; at most ${MAX_POLICY_ENTRIES}`);
    entries.forEach((e, i) => parsePattern(e, `${list}[${i}] `));
  }
}

// Patterns are parsed once per distinct text (a policy is read on every connection).
const cache = new Map<string, ParsedPattern | EgressPatternError>();
function cachedPattern(p: string): ParsedPattern | EgressPatternError {
  let v = cache.get(p);
  if (v === undefined) {
    try {
      v = parsePattern(p);
    } catch (err) {
      if (!(err instanceof EgressPatternError)) throw err;
      v = err;
    }
    if (cache.size >= 4096) cache.clear();
    cache.set(p, v);
  }
  return v;
}

function hostMatches(pat: ParsedPattern, h: NormalHost): boolean {
  if (pat.kind === 'ip' || h.kind === 'ip') return pat.kind === 'ip' && h.kind === 'ip' && pat.host === h.host;
  if (pat.kind === 'exact') return h.host === pat.host;
  return h.host.endsWith(`.${pat.host}`); // subdomains only: the apex itself does not end with ".suffix"
}

/** Whether the proxy may go on to resolve `host:port` (deny wins over allow), with a one-line reason. */
export function decide(policy: EgressPolicy, host: string, port: number): { allowed: boolean; reason: string } {
  const h = normaliseHost(host);
  if ('error' in h) return { allowed: false, reason: `host ${JSON.stringify(host)} is refused: ${h.error}` };
  const label = h.kind === 'ip' && h.host.includes(':') ? `[${h.host}]:${port}` : `${h.host}:${port}`;
  for (const d of policy.deny) {
    const pat = cachedPattern(d);
    // Fail closed: a deny list that does not parse (validatePolicy keeps these out) denies everything.
    if (pat instanceof EgressPatternError) return { allowed: false, reason: `the deny list holds an invalid pattern ${JSON.stringify(d)}` };
    if (hostMatches(pat, h) && (pat.port === null || pat.port === port)) return { allowed: false, reason: `${label} is denied by ${JSON.stringify(d)}` };
  }
  let otherPort: string | null = null;
  for (const a of policy.allow) {
    const pat = cachedPattern(a);
    if (pat instanceof EgressPatternError || !hostMatches(pat, h)) continue;
    if (pat.port === null ? DEFAULT_PORTS.includes(port) : pat.port === port) return { allowed: true, reason: `allowed by ${JSON.stringify(a)}` };
    otherPort ??= a;
  }
  if (otherPort !== null) {
    return { allowed: false, reason: `port ${port} is not allowed for ${h.host} by ${JSON.stringify(otherPort)} (without ":port" a pattern allows ${DEFAULT_PORTS.join(' and ')})` };
  }
  return { allowed: false, reason: `${label} matches no allow pattern` };
}
