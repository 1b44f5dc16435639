// Network mode "outbound" against real slirp4netns and real nftables. Every destination lives in a
// namespace this test creates, or is an address the test puts on the host for the run:
//   - netns X, a fake internet: a veth pair host <-> X, host side 198.19.213.1/30 (so a "host
//     address"), X side 198.19.213.2/30 plus 10.254.213.2/32 (a private address, for allowPrivate),
//     with TCP and UDP listeners in X;
//   - listeners on the host's 127.0.0.1 and 0.0.0.0 (what a sandbox must never reach);
//   - session netns S*, each held by a descriptor, where slirp4netns and the rules go, and a
//     "sandbox" (python3 as an unprivileged uid, nsenter'ed into S*) connects from.
// Nothing is sent anywhere else: 169.254.169.254 is refused inside S by nft before any packet leaves.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  NFT_TABLE, OutboundError, outboundAvailable, parseCidr, renderRuleset, startOutbound, type Outbound,
} from '../../../src/sandbox/network/outbound.js';

const exec = promisify(execFile);
const PROJECT_ROOT = path.resolve(import.meta.dirname, '../../..');
const IS_ROOT = process.getuid?.() === 0;
const AVAILABLE = IS_ROOT ? outboundAvailable() : { available: false, reason: 'not root' };
const SANDBOX_UID = 65534;
const HOST_V = '198.19.213.1';
const X_V = '198.19.213.2';
const X_PRIVATE = '10.254.213.2';
const X_PORT = 9000;
const VETH_HOST = `bso${process.pid % 100000}h`;
const VETH_X = `bso${process.pid % 100000}x`;

interface HeldNetns { path: string; fd: number; holder: ChildProcess }
const held: HeldNetns[] = [];
const children: ChildProcess[] = [];
const outbounds: Outbound[] = [];
const servers: net.Server[] = [];
const slirpPids = new Set<number>();
const readyMs: number[] = [];
let vethMade = false;
let tmpDir = '';

const logger = {
  info: (obj: object) => { const ms = (obj as { readyMs?: number }).readyMs; if (typeof ms === 'number') readyMs.push(ms); },
  warn: () => {},
};

/** A fresh network namespace with lo up, held by a descriptor of this process (the holder stays until cleanup). */
async function holdNetns(): Promise<HeldNetns> {
  const holder = spawn('/usr/bin/unshare', ['--net', '--', '/bin/sh', '-c', 'ip link set lo up && echo ok && read x'], { stdio: ['pipe', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    holder.stdout?.once('data', () => resolve());
    holder.once('exit', (code) => reject(new Error(`unshare holder exited ${code}`)));
  });
  const fd = fs.openSync(`/proc/${holder.pid}/ns/net`, 'r');
  const h = { path: `/proc/${process.pid}/fd/${fd}`, fd, holder };
  held.push(h);
  return h;
}

const inNs = (ns: HeldNetns, cmd: string, args: string[]) => exec('/usr/bin/nsenter', [`--net=${ns.path}`, '--', cmd, ...args]);

interface Probe { target: string; ok: boolean; data?: string; error?: string; ms: number }
const PROBE = String.raw`
import errno, json, socket, sys, time
out = []
for t in json.loads(sys.argv[1]):
    kind = socket.SOCK_DGRAM if t.get("udp") else socket.SOCK_STREAM
    s = socket.socket(socket.AF_INET6 if ":" in t["host"] else socket.AF_INET, kind)
    s.settimeout(3)
    t0 = time.monotonic()
    r = {"target": ("udp " if t.get("udp") else "") + t["host"] + ":" + str(t["port"])}
    try:
        s.connect((t["host"], t["port"]))
        if t.get("udp"):
            s.send(b"ping")
        r.update(ok=True, data=s.recv(100).decode())
    except OSError as e:
        r.update(ok=False, error=errno.errorcode.get(e.errno, str(e)) if e.errno else "timeout")
    r["ms"] = round((time.monotonic() - t0) * 1000)
    s.close()
    out.append(r)
print(json.dumps(out))
`;

/** Connects from the session netns as an unprivileged uid (the sandbox side), one result per target. */
async function probeFrom(ns: HeldNetns, targets: { host: string; port: number; udp?: boolean }[]): Promise<Record<string, Probe>> {
  const { stdout } = await exec('/usr/bin/nsenter', [
    `--net=${ns.path}`, '--', '/usr/bin/setpriv', `--reuid=${SANDBOX_UID}`, `--regid=${SANDBOX_UID}`, '--clear-groups', '--no-new-privs', '--',
    '/usr/bin/python3', '-I', '-c', PROBE, JSON.stringify(targets),
  ], { timeout: 30_000 });
  return Object.fromEntries((JSON.parse(stdout) as Probe[]).map((p) => [p.target, p]));
}

function listen(host: string, greeting: string): Promise<number> {
  const server = net.createServer((s) => s.end(greeting));
  servers.push(server);
  return new Promise((resolve) => server.listen(0, host, () => resolve((server.address() as net.AddressInfo).port)));
}

async function start(ns: HeldNetns, allowPrivate: string[]): Promise<Outbound> {
  const ob = await startOutbound(ns.path, { allowPrivate, logger });
  outbounds.push(ob);
  slirpPids.add(ob.pid);
  return ob;
}

/** Gone, or a zombie waiting for its reaper: no longer running either way. */
function running(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}
async function waitNotRunning(pid: number, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (!running(pid)) return true;
    await delay(20);
  }
  return !running(pid);
}
const FAST_FAIL = ['EHOSTUNREACH', 'ECONNREFUSED', 'ENETUNREACH', 'EACCES', 'EPERM'];

describe('outbound rules (no privileges needed)', () => {
  test('CIDRs are parsed with host bits cleared; junk is refused', () => {
    expect(() => parseCidr('10.1.2.3/8')).not.toThrow();
    expect(renderRuleset(['10.1.2.3/8', 'fd12::1/64', '192.168.1.7'], ['203.0.113.9', 'fe80::1%eth0'])).toContain('elements = { 10.0.0.0/8, 192.168.1.7 }');
    expect(renderRuleset(['fd12::1/64'], [])).toContain('elements = { fd12::/64 }');
    for (const bad of ['', 'example.com', '10.0.0.0/33', '::/129', '10.0.0.0/x', '1.2.3']) expect(() => parseCidr(bad)).toThrow(OutboundError);
  });

  test('the ruleset refuses the host, slirp\'s network and the private classes, and lets DNS and allowPrivate through', () => {
    const rules = renderRuleset(['10.254.0.0/16'], ['203.0.113.9', '127.0.0.1', '2001:db8::5']);
    expect(rules).toMatch(/set never4 \{[^}]*elements = \{ 10\.0\.2\.0\/24, 127\.0\.0\.0\/8, 0\.0\.0\.0\/8, 224\.0\.0\.0\/4, 240\.0\.0\.0\/4, 203\.0\.113\.9, 127\.0\.0\.1 \}/);
    expect(rules).toMatch(/set never6 \{[^}]*elements = \{ ::, ::1, ::ffff:0:0\/96, 64:ff9b::\/96, 2001::\/32, 2002::\/16, ff00::\/8, 2001:db8::5 \}/);
    expect(rules).toMatch(/set refused4 \{[^}]*elements = \{ 10\.0\.0\.0\/8, 172\.16\.0\.0\/12, 192\.168\.0\.0\/16, 100\.64\.0\.0\/10, 169\.254\.0\.0\/16 \}/);
    expect(rules).toMatch(/set refused6 \{[^}]*elements = \{ fc00::\/7, fe80::\/10, fec0::\/10, 64:ff9b:1::\/48 \}/);
    // Order matters: lo, DNS, never (host, 10.0.2.0/24, loopback), then allowPrivate, then the classes.
    const chain = rules.slice(rules.indexOf('chain output'));
    const order = ['oifname "lo" accept', 'ip daddr 10.0.2.3 meta l4proto { tcp, udp } th dport 53 accept', 'ip daddr @never4 reject', 'ip daddr @allow4 accept', 'ip daddr @refused4 reject'];
    const at = order.map((r) => chain.indexOf(r));
    expect(at.every((i) => i > 0)).toBe(true);
    expect([...at].sort((a, b) => a - b)).toEqual(at);
  });
});

describe.skipIf(!AVAILABLE.available && process.env.CI !== 'true')('outbound through slirp4netns (real, as root)', () => {
  let hostLo = 0;
  let hostAny = 0;
  let x: HeldNetns;

  beforeAll(async () => {
    expect(AVAILABLE, 'outbound must be available in CI').toEqual({ available: true, reason: null });
    tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'outbound-test-'));
    hostLo = await listen('127.0.0.1', 'hello-host-lo\n');
    hostAny = await listen('0.0.0.0', 'hello-host-any\n');
    x = await holdNetns();
    await exec('/usr/sbin/ip', ['link', 'add', VETH_HOST, 'type', 'veth', 'peer', 'name', VETH_X, 'netns', String(x.holder.pid)]);
    vethMade = true;
    await exec('/usr/sbin/ip', ['addr', 'add', `${HOST_V}/30`, 'dev', VETH_HOST]);
    await exec('/usr/sbin/ip', ['link', 'set', VETH_HOST, 'up']);
    await inNs(x, '/usr/sbin/ip', ['addr', 'add', `${X_V}/30`, 'dev', VETH_X]);
    await inNs(x, '/usr/sbin/ip', ['addr', 'add', `${X_PRIVATE}/32`, 'dev', VETH_X]);
    await inNs(x, '/usr/sbin/ip', ['link', 'set', VETH_X, 'up']);
    await exec('/usr/sbin/ip', ['route', 'add', `${X_PRIVATE}/32`, 'via', X_V, 'dev', VETH_HOST]);
    // TCP greets, UDP echoes, on every address of X.
    const server = spawn('/usr/bin/nsenter', [`--net=${x.path}`, '--', '/usr/bin/python3', '-I', '-c', String.raw`
import socket, threading
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("0.0.0.0", ${X_PORT})); t.listen(16)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", ${X_PORT}))
def udp():
    while True:
        d, a = u.recvfrom(100); u.sendto(b"pong-" + d, a)
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
while True:
    c, a = t.accept(); c.sendall(b"hello-X from " + a[0].encode()); c.close()
`], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(server);
    await new Promise<void>((resolve, reject) => {
      server.stdout?.once('data', () => resolve());
      server.once('exit', (code) => reject(new Error(`X listener exited ${code}`)));
    });
  });

  afterAll(async () => {
    await Promise.allSettled(outbounds.map((o) => o.close()));
    for (const pid of slirpPids) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    for (const c of children) c.kill('SIGKILL');
    for (const s of servers) s.close();
    if (vethMade) await exec('/usr/sbin/ip', ['link', 'del', VETH_HOST]).catch(() => {}); // takes the peer and the route along
    for (const h of held) { h.holder.stdin?.end(); h.holder.kill('SIGKILL'); try { fs.closeSync(h.fd); } catch { /* closed */ } }
    if (tmpDir) fs.rmSync(tmpDir, { recursive: true, force: true });
    if (readyMs.length > 0) console.log(`slirp4netns ready after the rules: ${readyMs.join(', ')} ms`);
  });

  test('outbound reaches the fake internet over TCP and UDP; the host, its addresses, slirp\'s host alias and the metadata address are refused; allowPrivate opens a private address', async () => {
    const s = await holdNetns();
    // allowPrivate opens the private address, never the host's own (198.19.213.1 stays refused though listed).
    await start(s, ['10.254.213.0/24', '198.19.213.0/30']);
    const listing = (await inNs(s, '/usr/sbin/nft', ['list', 'table', 'inet', NFT_TABLE])).stdout;
    expect(listing).toMatch(new RegExp(`set never4 \\{[^}]*${HOST_V.replace(/\./g, '\\.')}`));
    const r = await probeFrom(s, [
      { host: X_V, port: X_PORT },
      { host: X_V, port: X_PORT, udp: true },
      { host: X_PRIVATE, port: X_PORT },
      { host: HOST_V, port: hostAny },
      { host: HOST_V, port: hostLo },
      { host: '10.0.2.2', port: hostLo },
      { host: '10.0.2.2', port: hostAny },
      { host: HOST_V, port: hostAny, udp: true },
      { host: '169.254.169.254', port: 80 },
      { host: '127.0.0.1', port: hostLo },
    ]);
    expect(r[`${X_V}:${X_PORT}`]).toMatchObject({ ok: true, data: 'hello-X from 198.19.213.1' }); // slirp connects from the host
    expect(r[`udp ${X_V}:${X_PORT}`]).toMatchObject({ ok: true, data: 'pong-ping' });
    expect(r[`${X_PRIVATE}:${X_PORT}`]).toMatchObject({ ok: true });
    for (const t of [`${HOST_V}:${hostAny}`, `${HOST_V}:${hostLo}`, `10.0.2.2:${hostLo}`, `10.0.2.2:${hostAny}`, `udp ${HOST_V}:${hostAny}`, '169.254.169.254:80']) {
      expect(r[t]?.ok, t).toBe(false);
      expect(FAST_FAIL, `${t}: ${r[t]?.error}`).toContain(r[t]?.error);
      expect(r[t]?.ms, t).toBeLessThan(1000);
    }
    // 127.0.0.1 in the sandbox is its own loopback: nothing listens there.
    expect(r[`127.0.0.1:${hostLo}`]).toMatchObject({ ok: false, error: 'ECONNREFUSED' });
    console.log('probe results', JSON.stringify(Object.values(r)));
  });

  test('without allowPrivate the private address is refused; dropping the rules reopens the host (the gap they close)', async () => {
    const s = await holdNetns();
    await start(s, []);
    const before = await probeFrom(s, [{ host: X_PRIVATE, port: X_PORT }, { host: X_V, port: X_PORT }, { host: HOST_V, port: hostAny }]);
    expect(before[`${X_PRIVATE}:${X_PORT}`]).toMatchObject({ ok: false, error: 'EHOSTUNREACH' });
    expect(before[`${X_V}:${X_PORT}`]).toMatchObject({ ok: true });
    expect(before[`${HOST_V}:${hostAny}`]).toMatchObject({ ok: false, error: 'EHOSTUNREACH' });
    // Control: the same probe without the table reaches the host's 0.0.0.0 service through slirp.
    await inNs(s, '/usr/sbin/nft', ['delete', 'table', 'inet', NFT_TABLE]);
    const after = await probeFrom(s, [{ host: HOST_V, port: hostAny }, { host: X_PRIVATE, port: X_PORT }]);
    expect(after[`${HOST_V}:${hostAny}`]).toMatchObject({ ok: true, data: 'hello-host-any\n' });
    expect(after[`${X_PRIVATE}:${X_PORT}`]).toMatchObject({ ok: true });
  });

  test('the sandbox cannot change the rules', async () => {
    const s = await holdNetns();
    await start(s, []);
    const tryFlush = await exec('/usr/bin/nsenter', [`--net=${s.path}`, '--', '/usr/bin/setpriv', `--reuid=${SANDBOX_UID}`, `--regid=${SANDBOX_UID}`, '--clear-groups', '--no-new-privs', '--',
      '/usr/sbin/nft', 'flush', 'ruleset']).then(() => 'flushed', (e: { stderr?: string }) => e.stderr ?? 'failed');
    expect(tryFlush).toMatch(/Operation not permitted/);
    expect((await inNs(s, '/usr/sbin/nft', ['list', 'table', 'inet', NFT_TABLE])).stdout).toContain('chain output');
  });

  test('close() ends slirp4netns (tap0 goes with it) and is idempotent', async () => {
    const s = await holdNetns();
    const ob = await start(s, []);
    expect(running(ob.pid)).toBe(true);
    expect((await inNs(s, '/usr/sbin/ip', ['-br', 'link'])).stdout).toContain('tap0');
    const t0 = performance.now();
    await Promise.all([ob.close(), ob.close()]);
    const closeMs = performance.now() - t0;
    await ob.close();
    expect(running(ob.pid)).toBe(false);
    expect(closeMs).toBeLessThan(900); // the exit fd did it, not the SIGKILL after the grace period
    expect((await inNs(s, '/usr/sbin/ip', ['-br', 'link'])).stdout).not.toContain('tap0');
    console.log(`close took ${closeMs.toFixed(1)} ms`);
  });

  test('a SIGKILLed owner leaves no slirp4netns behind', async () => {
    const s = await holdNetns();
    const script = path.join(tmpDir, 'owner.mjs');
    fs.writeFileSync(script, [
      `import { startOutbound } from ${JSON.stringify(path.join(PROJECT_ROOT, 'src/sandbox/network/outbound.ts'))};`,
      `const ob = await startOutbound(${JSON.stringify(s.path)}, { allowPrivate: [], logger: { info() {}, warn() {} } });`,
      'console.log(String(ob.pid));',
      'setInterval(() => {}, 1000);',
    ].join('\n'));
    const owner = spawn(process.execPath, ['--import', 'tsx', script], { cwd: PROJECT_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(owner);
    const pid = await new Promise<number>((resolve, reject) => {
      owner.stdout?.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
      owner.once('exit', (code) => reject(new Error(`owner exited ${code}`)));
    });
    slirpPids.add(pid);
    expect(running(pid)).toBe(true);
    owner.kill('SIGKILL');
    expect(await waitNotRunning(pid, 3000)).toBe(true);
  });

  test('failures reject with the reason and leave no process', async () => {
    await expect(startOutbound('/nonexistent/netns', { allowPrivate: [], logger })).rejects.toThrow(/nft could not install the outbound rules in \/nonexistent\/netns/);
    const s = await holdNetns();
    await expect(startOutbound(s.path, { allowPrivate: ['not-a-cidr'], logger })).rejects.toThrow(OutboundError);
    const ob = await start(s, []);
    // A second slirp4netns on the same namespace cannot create tap0 again.
    const err = await startOutbound(s.path, { allowPrivate: [], logger }).then(() => null, (e: Error) => e);
    expect(err).toBeInstanceOf(OutboundError);
    expect(err?.message).toMatch(/slirp4netns exited before it was ready/);
    const { stdout } = await exec('/usr/bin/pgrep', ['-x', 'slirp4netns']).catch(() => ({ stdout: '' }));
    const ours = stdout.split('\n').filter(Boolean).map(Number).filter((p) => { try { return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(s.path); } catch { return false; } });
    expect(ours).toEqual([ob.pid]);
  });

  test('outboundAvailable names the missing capability when the service lacks it', async () => {
    const { stdout } = await exec('/usr/bin/setpriv', ['--bounding-set=-net_admin', '--inh-caps=-net_admin', '--',
      process.execPath, '--import', 'tsx', '-e',
      `import(${JSON.stringify(path.join(PROJECT_ROOT, 'src/sandbox/network/outbound.ts'))}).then((m) => console.log(JSON.stringify(m.outboundAvailable())))`,
    ], { cwd: PROJECT_ROOT });
    const answer = JSON.parse(stdout) as { available: boolean; reason: string };
    expect(answer.available).toBe(false);
    expect(answer.reason).toMatch(/CAP_NET_ADMIN/);
  });
});
