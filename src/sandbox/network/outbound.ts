// Network mode "outbound": general TCP/UDP from a session's network namespace through slirp4netns,
// with the host kept out of reach.
//
// slirp4netns puts a tap device (tap0, 10.0.2.100/24, default route via 10.0.2.2) in the session's
// namespace and opens, in the host's namespace, a real socket to whatever destination the sandbox
// names. --disable-host-loopback only stops 10.0.2.2 from meaning the host's 127.0.0.1: every host
// service bound to 0.0.0.0 or to a host address, the LAN and 169.254.169.254 stay reachable. So the
// service (root) also installs nftables rules in the session's namespace, where the sandbox holds no
// capability and cannot change them: its output chain refuses the host's own addresses, slirp's
// virtual network, loopback, private, link-local, CGNAT, multicast and reserved destinations, except
// slirp's DNS forwarder (10.0.2.3 port 53) and what the operator lists in allowPrivate (which opens
// only the private, link-local and CGNAT classes: never the host's own addresses, loopback,
// 10.0.2.0/24, unspecified, multicast or reserved ones). The address set is read when the session's
// network starts: an address the host gains later is not in it (the private classes still are). The rules go in, and are read back,
// before slirp4netns starts, so there is no moment with a tap device and no rules.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { resolveCommand } from '../spawn.js';

export interface Outbound {
  /** slirp4netns's pid (to put it in a session cgroup, or to watch it). */
  readonly pid: number;
  /** The rules installed in the namespace, as given to `nft -f -`. */
  readonly ruleset: string;
  /** Ends slirp4netns (closes its exit descriptor, SIGKILL after a grace period). Idempotent. */
  close(): Promise<void>;
}

export interface OutboundOptions {
  /** CIDRs (or single addresses) the operator means to expose: BUBBLE_SANDBOX_EGRESS_ALLOW_PRIVATE_CIDRS. */
  allowPrivate: readonly string[];
  logger: Pick<Logger, 'info' | 'warn'>;
  /** How long slirp4netns may take to report ready (default 5000 ms). */
  readyTimeoutMs?: number;
  /** Host addresses to refuse; default: every address on the host's interfaces now (os.networkInterfaces()). */
  hostAddresses?: readonly string[];
}

export class OutboundError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OutboundError';
  }
}

export const NFT_TABLE = 'bubble_sandbox_outbound';
/** slirp4netns's fixed virtual network (--configure): 10.0.2.2 is its host alias, 10.0.2.3 its DNS forwarder. */
const SLIRP_NETWORK = '10.0.2.0/24';
const SLIRP_DNS = '10.0.2.3';
const GRACE_MS = 1000;

/**
 * Destinations refused unless inside allowPrivate (the exemptable classes of egress-address.ts's
 * list, which this mirrors as CIDRs; nft cannot look inside embedded IPv4 as the proxy does).
 */
export const REFUSED_V4: readonly string[] = [
  '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', // private
  '100.64.0.0/10', // CGNAT
  '169.254.0.0/16', // link-local, cloud metadata 169.254.169.254
];
export const REFUSED_V6: readonly string[] = [
  'fc00::/7', // unique local, cloud metadata fd00:ec2::254
  'fe80::/10', // link-local
  'fec0::/10', // site-local
  '64:ff9b:1::/48', // local-use NAT64
];
/** Destinations refused even when allowPrivate covers them (besides the host's own addresses). */
export const NEVER_V4: readonly string[] = [
  SLIRP_NETWORK, // slirp's virtual network: 10.0.2.2 is its alias for the host
  '127.0.0.0/8', // loopback (the namespace's own goes out lo, accepted first)
  '0.0.0.0/8', // "this network", unspecified
  '224.0.0.0/4', // multicast
  '240.0.0.0/4', // reserved, and the limited broadcast 255.255.255.255
];
export const NEVER_V6: readonly string[] = [
  '::/128', '::1/128', // unspecified, loopback
  '::ffff:0:0/96', // IPv4-mapped (never valid on the wire)
  '64:ff9b::/96', // NAT64: would reach any IPv4 destination, private ones included, through a translator
  '2001::/32', // Teredo (embeds an obfuscated IPv4)
  '2002::/16', // 6to4 (embeds an IPv4)
  'ff00::/8', // multicast
];

// ---------------------------------------------------------------------------------------------
// Addresses

interface Cidr { family: 4 | 6; base: bigint; bits: number }

function ipToBigInt(ip: string, family: 4 | 6): bigint {
  if (family === 4) return ip.split('.').reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
  let text = ip;
  // A trailing dotted quad (::ffff:1.2.3.4) becomes two hextets.
  const quad = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (quad?.[1] !== undefined) {
    const v = ipToBigInt(quad[1], 4);
    text = `${text.slice(0, -quad[1].length)}${(v >> 16n).toString(16)}:${(v & 0xffffn).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const fill = tail === undefined ? [] : new Array<string>(8 - left.length - right.length).fill('0');
  return [...left, ...fill, ...right].reduce((acc, h) => (acc << 16n) | BigInt(parseInt(h, 16)), 0n);
}

function bigIntToIp(v: bigint, family: 4 | 6): string {
  if (family === 4) return [24n, 16n, 8n, 0n].map((s) => ((v >> s) & 0xffn).toString()).join('.');
  const hextets: string[] = [];
  for (let s = 112n; s >= 0n; s -= 16n) hextets.push(((v >> s) & 0xffffn).toString(16));
  // The longest run of zero hextets becomes "::" (nft accepts either form; this one reads better).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; i++) {
    let j = i;
    while (j < 8 && hextets[j] === '0') j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
  }
  if (best < 0) return hextets.join(':');
  return `${hextets.slice(0, best).join(':')}::${hextets.slice(best + bestLen).join(':')}`;
}

/** "a.b.c.d", "a.b.c.d/n", "x::y", "x::y/n" (zone ids dropped); host bits are cleared. Throws OutboundError. */
export function parseCidr(text: string): Cidr {
  const trimmed = text.trim();
  const slash = trimmed.indexOf('/');
  const addr = (slash < 0 ? trimmed : trimmed.slice(0, slash)).replace(/%.*$/, '');
  const family = net.isIP(addr);
  if (family !== 4 && family !== 6) throw new OutboundError(`not an IP address or CIDR: ${JSON.stringify(text)}`);
  const max = family === 4 ? 32 : 128;
  const prefix = slash < 0 ? String(max) : trimmed.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefix) || Number(prefix) > max) throw new OutboundError(`bad prefix length in ${JSON.stringify(text)}`);
  const bits = Number(prefix);
  const mask = ((1n << BigInt(max)) - 1n) ^ ((1n << BigInt(max - bits)) - 1n);
  return { family, base: ipToBigInt(addr, family) & mask, bits };
}

function formatCidr(c: Cidr): string {
  const ip = bigIntToIp(c.base, c.family);
  return c.bits === (c.family === 4 ? 32 : 128) ? ip : `${ip}/${c.bits}`;
}

/** Every address on the host's interfaces, in the service's (host) namespace. */
export function hostInterfaceAddresses(): string[] {
  const out = new Set<string>();
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) out.add(a.address.replace(/%.*$/, ''));
  }
  return [...out];
}

// ---------------------------------------------------------------------------------------------
// Rules

interface RulePlan {
  never4: Cidr[]; never6: Cidr[];
  allow4: Cidr[]; allow6: Cidr[];
  refused4: Cidr[]; refused6: Cidr[];
}

function planRules(allowPrivate: readonly string[], hostAddresses: readonly string[]): RulePlan {
  const allow = allowPrivate.map(parseCidr);
  const host = hostAddresses.map(parseCidr);
  const never = [...NEVER_V4, ...NEVER_V6].map(parseCidr).concat(host);
  const refused = [...REFUSED_V4, ...REFUSED_V6].map(parseCidr);
  const fam = (list: Cidr[], f: 4 | 6) => list.filter((c) => c.family === f);
  return {
    never4: fam(never, 4), never6: fam(never, 6),
    allow4: fam(allow, 4), allow6: fam(allow, 6),
    refused4: fam(refused, 4), refused6: fam(refused, 6),
  };
}

function setBlock(name: string, type: 'ipv4_addr' | 'ipv6_addr', elems: Cidr[]): string {
  const unique = [...new Set(elems.map(formatCidr))];
  const elements = unique.length > 0 ? `\n    elements = { ${unique.join(', ')} }` : '';
  return `  set ${name} {\n    type ${type}\n    flags interval\n    auto-merge${elements}\n  }\n`;
}

const REJECT = 'reject with icmpx admin-prohibited';
const RULES = [
  'oifname "lo" accept',
  `ip daddr ${SLIRP_DNS} meta l4proto { tcp, udp } th dport 53 accept`,
  `ip daddr @never4 ${REJECT}`,
  `ip6 daddr @never6 ${REJECT}`,
  'ip daddr @allow4 accept',
  'ip6 daddr @allow6 accept',
  `ip daddr @refused4 ${REJECT}`,
  `ip6 daddr @refused6 ${REJECT}`,
];

/** The nft script: replaces the table atomically (creating it first so the delete cannot fail). */
export function renderRuleset(allowPrivate: readonly string[], hostAddresses: readonly string[]): string {
  const p = planRules(allowPrivate, hostAddresses);
  return [
    `table inet ${NFT_TABLE}\n`,
    `delete table inet ${NFT_TABLE}\n`,
    `table inet ${NFT_TABLE} {\n`,
    setBlock('never4', 'ipv4_addr', p.never4),
    setBlock('never6', 'ipv6_addr', p.never6),
    setBlock('allow4', 'ipv4_addr', p.allow4),
    setBlock('allow6', 'ipv6_addr', p.allow6),
    setBlock('refused4', 'ipv4_addr', p.refused4),
    setBlock('refused6', 'ipv6_addr', p.refused6),
    '  chain output {\n    type filter hook output priority filter; policy accept;\n',
    ...RULES.map((r) => `    ${r}\n`),
    '  }\n}\n',
  ].join('');
}

interface NftElem { prefix?: { addr: string; len: number }; range?: [string, string] }
type NftObject = Record<string, { name?: string; hook?: string; policy?: string; elem?: (string | NftElem)[]; chain?: string }>;

function elemToCidrs(e: string | NftElem, family: 4 | 6): { lo: bigint; hi: bigint } | null {
  const max = family === 4 ? 32 : 128;
  if (typeof e === 'string') { const v = parseCidr(e).base; return { lo: v, hi: v }; }
  if (e.prefix) {
    const c = parseCidr(`${e.prefix.addr}/${e.prefix.len}`);
    return { lo: c.base, hi: c.base + (1n << BigInt(max - c.bits)) - 1n };
  }
  if (e.range) return { lo: parseCidr(e.range[0]).base, hi: parseCidr(e.range[1]).base };
  return null;
}

/** Reads the table back (nft -j list table) and checks the chain, its rules and every set element. */
function verifyRuleset(listing: string, allowPrivate: readonly string[], hostAddresses: readonly string[]): void {
  let parsed: { nftables?: NftObject[] };
  try {
    parsed = JSON.parse(listing) as { nftables?: NftObject[] };
  } catch {
    throw new OutboundError('nft -j list table did not give JSON');
  }
  const objs = parsed.nftables ?? [];
  const chain = objs.find((o) => o.chain?.name === 'output')?.chain;
  if (chain?.hook !== 'output' || chain.policy !== 'accept') throw new OutboundError('nftables output chain missing after install');
  const rules = objs.filter((o) => o.rule?.chain === 'output').length;
  if (rules !== RULES.length) throw new OutboundError(`nftables output chain has ${rules} rules, expected ${RULES.length}`);
  const plan = planRules(allowPrivate, hostAddresses);
  for (const [name, want] of Object.entries(plan) as [keyof RulePlan, Cidr[]][]) {
    const family = name.endsWith('6') ? 6 : 4;
    const set = objs.find((o) => o.set?.name === name)?.set;
    if (!set) throw new OutboundError(`nftables set ${name} missing after install`);
    const have = (set.elem ?? []).map((e) => elemToCidrs(e, family)).filter((x) => x !== null);
    for (const c of want) {
      const max = family === 4 ? 32 : 128;
      const hi = c.base + (1n << BigInt(max - c.bits)) - 1n;
      if (!have.some((h) => h.lo <= c.base && hi <= h.hi)) throw new OutboundError(`nftables set ${name} lacks ${formatCidr(c)} after install`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Processes

interface Run { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

function run(cmd: string, args: string[], input: string | null, timeoutMs = 10_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [input === null ? 'ignore' : 'pipe', 'pipe', 'pipe'], env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => { clearTimeout(timer); reject(err); });
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr }); });
    // A child that exits before reading its input (a bad netns path) shows through 'close';
    // the write's EPIPE must not become an uncaught exception of the service.
    child.stdin?.on('error', () => undefined);
    if (input !== null) child.stdin?.end(input);
  });
}

const oneLine = (s: string) => s.trim().split('\n').slice(-3).join(' | ').slice(0, 500);

async function installRules(netnsPath: string, ruleset: string): Promise<string> {
  const nsenter = resolveCommand('nsenter');
  const nft = resolveCommand('nft');
  const load = await run(nsenter, [`--net=${netnsPath}`, '--', nft, '-f', '-'], ruleset);
  if (load.code !== 0) throw new OutboundError(`nft could not install the outbound rules in ${netnsPath}: ${oneLine(load.stderr) || `exit ${load.code ?? load.signal}`}`);
  const list = await run(nsenter, [`--net=${netnsPath}`, '--', nft, '-j', 'list', 'table', 'inet', NFT_TABLE], null);
  if (list.code !== 0) throw new OutboundError(`nft could not list the outbound rules in ${netnsPath}: ${oneLine(list.stderr)}`);
  return list.stdout;
}

const CAP_NET_ADMIN = 12n;
const CAP_SYS_ADMIN = 21n;
let availability: { available: boolean; reason: string | null } | null = null;

function findExecutable(name: string): string | null {
  const p = resolveCommand(name);
  return p.includes('/') ? p : null;
}

function checkAvailable(): { available: boolean; reason: string | null } {
  for (const [name, pkg] of [['slirp4netns', 'slirp4netns'], ['nft', 'nftables'], ['nsenter', 'util-linux'], ['unshare', 'util-linux']] as const) {
    if (findExecutable(name) === null) return { available: false, reason: `${name} not found (install the ${pkg} package)` };
  }
  let capEff = 0n;
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    capEff = BigInt(`0x${m?.[1] ?? '0'}`);
  } catch {
    return { available: false, reason: 'cannot read /proc/self/status' };
  }
  for (const [bit, name] of [[CAP_SYS_ADMIN, 'CAP_SYS_ADMIN'], [CAP_NET_ADMIN, 'CAP_NET_ADMIN']] as const) {
    if (((capEff >> bit) & 1n) === 0n) return { available: false, reason: `the service lacks ${name} (slirp4netns and nftables need it; run as root outside a restricted container)` };
  }
  try {
    if (!fs.statSync('/dev/net/tun').isCharacterDevice()) return { available: false, reason: '/dev/net/tun is not a character device' };
  } catch {
    return { available: false, reason: '/dev/net/tun missing (slirp4netns needs the tun device)' };
  }
  const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' };
  const version = spawnSync(resolveCommand('slirp4netns'), ['--version'], { encoding: 'utf8', timeout: 5000, env });
  if (version.status !== 0) return { available: false, reason: `slirp4netns --version failed: ${oneLine(version.stderr || String(version.error ?? version.status))}` };
  const probe = spawnSync(resolveCommand('unshare'), ['--net', '--', resolveCommand('nft'), '-f', '-'], {
    input: `table inet ${NFT_TABLE}_probe {\n  chain c {\n    type filter hook output priority filter;\n  }\n}\n`, encoding: 'utf8', timeout: 5000, env,
  });
  if (probe.status !== 0) return { available: false, reason: `nftables does not work in a new network namespace: ${oneLine(probe.stderr || String(probe.error ?? probe.status))}` };
  return { available: true, reason: null };
}

/**
 * slirp4netns, nft and the privileges they need are here, and nftables works in a new network
 * namespace (kernel support, permission). Checked once (two short synchronous runs), then cached.
 */
export function outboundAvailable(): { available: boolean; reason: string | null } {
  availability ??= checkAvailable();
  return availability;
}

function waitReady(child: ChildProcess, readyFd: Readable, timeoutMs: number, stderr: () => string): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err: Error | null) => {
      clearTimeout(timer);
      readyFd.off('data', onData);
      child.off('exit', onExit);
      child.off('error', onError);
      if (err) reject(err); else resolve();
    };
    const onData = (d: Buffer) => { if (d.includes('1')) done(null); };
    const onExit = (code: number | null, signal: NodeJS.Signals | null) =>
      done(new OutboundError(`slirp4netns exited before it was ready (${code ?? signal}): ${oneLine(stderr())}`));
    const onError = (err: Error) => done(new OutboundError(`slirp4netns could not start: ${err.message}`));
    const timer = setTimeout(() => done(new OutboundError(`slirp4netns not ready after ${timeoutMs} ms: ${oneLine(stderr())}`)), timeoutMs);
    readyFd.on('data', onData);
    child.on('exit', onExit);
    child.on('error', onError);
  });
}

/**
 * Attaches slirp4netns to the namespace at netnsPath (which must have no tap0 yet), after
 * installing and checking the rules that keep the host unreachable. Resolves once slirp4netns
 * reports ready; rejects with OutboundError (and leaves no process) otherwise.
 */
export async function startOutbound(netnsPath: string, opts: OutboundOptions): Promise<Outbound> {
  const started = performance.now();
  const hostAddresses = opts.hostAddresses ?? hostInterfaceAddresses();
  const ruleset = renderRuleset(opts.allowPrivate, hostAddresses);
  verifyRuleset(await installRules(netnsPath, ruleset), opts.allowPrivate, hostAddresses);
  const rulesMs = performance.now() - started;

  const child = spawn(resolveCommand('slirp4netns'), [
    '--exit-fd=3', '--ready-fd=4', '--netns-type=path', '--disable-host-loopback',
    '--enable-sandbox', '--enable-seccomp', '--configure', '--mtu=65520', netnsPath, 'tap0',
  ], { stdio: ['ignore', 'pipe', 'pipe', 'pipe', 'pipe'], env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } });
  const [, out, err, exitFd, readyFd] = child.stdio as [null, Readable, Readable, Readable, Readable];
  let log = '';
  const keep = (d: Buffer) => { log = (log + d.toString()).slice(-4096); };
  out.on('data', keep);
  err.on('data', keep);
  let exited = child.exitCode !== null || child.signalCode !== null;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', () => { exited = true; resolve(); });
    // A spawn that failed (no such file...) never exits: there is no process to wait for.
    child.once('error', () => { if (child.pid === undefined) { exited = true; resolve(); } });
  });
  exitFd.on('error', () => {});
  readyFd.on('error', () => {});

  let closing: Promise<void> | null = null;
  const close = () => {
    closing ??= (async () => {
      exitFd.destroy(); // slirp4netns sees the hang-up on its exit fd and leaves
      if (!exited) {
        const timer = setTimeout(() => child.kill('SIGKILL'), GRACE_MS);
        await exit;
        clearTimeout(timer);
      }
      readyFd.destroy();
      out.destroy();
      err.destroy();
    })();
    return closing;
  };

  try {
    await waitReady(child, readyFd, opts.readyTimeoutMs ?? 5000, () => log);
  } catch (e) {
    await close();
    throw e;
  }
  const readyMs = performance.now() - started - rulesMs;
  child.once('exit', (code, signal) => {
    if (closing === null) opts.logger.warn({ pid: child.pid, code, signal, output: oneLine(log) }, 'slirp4netns exited on its own: the session has no outbound network');
  });
  // Neither keeps the service alive: close() is explicit, and if the service dies the exit fd closes.
  child.unref();
  for (const s of [out, err, exitFd, readyFd]) (s as Readable & { unref?: () => void }).unref?.();
  opts.logger.info({ pid: child.pid, rulesMs: Math.round(rulesMs), readyMs: Math.round(readyMs), hostAddresses: hostAddresses.length, allowPrivate: opts.allowPrivate }, 'outbound network ready');
  return { pid: child.pid ?? -1, ruleset, close };
}
