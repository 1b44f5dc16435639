// The per-session network namespace through real bwrap: shared by a session's sandboxes, closed
// to other sessions and to the host, no power over it inside, the helper's port relay and
// egress pipe, and nothing left behind by close() or by a SIGKILLed owner.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { EgressDecision } from '../../../src/sandbox/network/egress-proxy.js';
import { createSessionNetwork, PortConnectError, type SessionNetwork, type SessionNetworkOptions } from '../../../src/sandbox/network/session-network.js';
import { PythonKernel } from '../../../src/sandbox/kernel/kernel.js';
import { outboundAvailable } from '../../../src/sandbox/network/outbound.js';
import { spawnSandbox, type SpawnedSandbox } from '../../../src/sandbox/spawn.js';
import { PROJECT_ROOT, makeTempDir, sleep } from '../../helpers/host-env.js';
import { bwrapUsable, createSandboxFixture, DEFAULT_LIMITS, IS_ROOT, TEST_UID, type SandboxFixture } from '../../helpers/sandbox.js';

const PROBE = fs.readFileSync(path.join(import.meta.dirname, 'fixtures', 'net-probe.py'), 'utf8');
const HOLDER = path.join(import.meta.dirname, 'fixtures', 'hold-session-network.ts');
const SERVER_PORT = 18765;
const identity = { uid: TEST_UID, gid: TEST_UID };
const logger = pino({ level: 'silent' });

/** Pids of live processes whose command line mentions `needle` (the helper names its run dir). */
function processesMentioning(needle: string): number[] {
  const found: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      const state = /^State:\s+(\S)/m.exec(fs.readFileSync(`/proc/${entry}/status`, 'utf8'))?.[1];
      if (cmdline.includes(needle) && state !== 'Z') found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

describe.skipIf(!IS_ROOT || !bwrapUsable())('session network namespace', () => {
  let fx: SandboxFixture;
  let tmp: string;
  const networks: SessionNetwork[] = [];
  const servers: SpawnedSandbox[] = [];
  const decisions: EgressDecision[] = [];

  async function makeNetwork(key: string, mode: SessionNetworkOptions['mode'] = 'none'): Promise<SessionNetwork> {
    const network = await createSessionNetwork({
      key, mode, identity, runDir: path.join(tmp, 'run', key),
      policy: () => ({ allow: [], deny: [] }), allowPrivate: [], logger,
      onEgressDecision: (d) => decisions.push(d),
    });
    networks.push(network);
    return network;
  }

  /** The probe in a one-shot sandbox (through the runner), in `network` or in a private netns when null. */
  async function probe(network: SessionNetwork | null, ...args: string[]): Promise<string> {
    const result = await fx.run({
      program: { kind: 'argv', argv: ['/usr/bin/python3', '/workspace/net-probe.py', ...args] },
      ...(network ? { netnsPath: network.netnsPath, env: { ...network.env } } : {}),
    });
    expect(result.stderr).toBe('');
    return result.stdout.trim();
  }

  /** A server kept alive by its own sandbox for the rest of the file (an execution's processes die with it). */
  async function startServer(network: SessionNetwork, text: string): Promise<void> {
    const sandbox = await spawnSandbox(fx.runner.spawnDeps, {
      environment: null, workspaceDir: fx.workspace, volumes: [],
      command: ['/usr/bin/python3', '/workspace/net-probe.py', 'serve', String(SERVER_PORT), text],
      env: { PATH: '/usr/bin:/bin' }, limits: DEFAULT_LIMITS, identity, cpuSeconds: 60,
      cgroupName: fx.runner.nextCgroupName('netns-test'), netnsPath: network.netnsPath,
    });
    servers.push(sandbox);
    sandbox.stdin.end();
    await new Promise<void>((resolve, reject) => {
      sandbox.stdout.once('data', () => resolve());
      void sandbox.exited.then((s) => reject(new Error(`server exited: ${JSON.stringify(s)}`)));
    });
  }

  beforeAll(() => {
    fx = createSandboxFixture();
    fs.writeFileSync(path.join(fx.workspace, 'net-probe.py'), PROBE, { mode: 0o644 });
    tmp = makeTempDir('bs-netns-');
  });

  afterAll(async () => {
    for (const s of servers) {
      s.kill();
      await s.exited;
      await s.dispose();
    }
    for (const n of networks) await n.close();
    fx.dispose();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('a server started by one sandbox is reached by another of the same session, not from another session or a private netns', async () => {
    const a = await makeNetwork('share-a');
    const b = await makeNetwork('share-b');
    await startServer(a, 'hello-from-a');
    expect(await probe(a, 'connect', String(SERVER_PORT))).toBe('answer:hello-from-a');
    expect(await probe(b, 'connect', String(SERVER_PORT))).toBe('error:ConnectionRefusedError');
    expect(await probe(null, 'connect', String(SERVER_PORT))).toBe('error:ConnectionRefusedError');
    expect(a.env).toEqual({});
  });

  test('an interpreter joins the session netns too: a server it keeps running is reached by an execution', async () => {
    const n = await makeNetwork('kernel');
    const kernel = new PythonKernel({
      runner: fx.runner, environment: null, workspaceDir: fx.workspace, volumes: [], limits: DEFAULT_LIMITS, identity,
      netnsPath: n.netnsPath,
    });
    try {
      const started = await kernel.run(
        "import subprocess\nsrv = subprocess.Popen(['/usr/bin/python3', '/workspace/net-probe.py', 'serve', '18766', 'from-kernel'], stdout=subprocess.PIPE)\nsrv.stdout.readline().decode().strip()",
        { timeoutMs: 10_000, maxOutputChars: 10_000 },
      );
      expect(started.result).toBe("'listening'");
      expect(await probe(n, 'connect', '18766')).toBe('answer:from-kernel');
      expect(await probe(null, 'connect', '18766')).toBe('error:ConnectionRefusedError');
    } finally {
      await kernel.close();
    }
  });

  test('a helper asked for allowlist without the service\'s IPC channel refuses to start, with the reason', () => {
    // startNetnsHelper always gives it one; this is the helper's own guard (no channel, no way to the proxy).
    const helper = path.join(PROJECT_ROOT, 'src', 'sandbox', 'network', 'netns-helper.py');
    const sock = path.join(tmp, 'no-channel.sock');
    const r = spawnSync('/usr/bin/python3', ['-I', '-B', helper, String(TEST_UID), String(TEST_UID), String(process.pid), sock, '3128', '60', '256'], { encoding: 'utf8', env: {} });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/allowlist needs the service's IPC channel/);
    expect(fs.existsSync(sock)).toBe(false);
  });

  test.skipIf(!outboundAvailable().available && !process.env.CI)('outbound: the namespace gets slirp\'s tap0, and close() stops slirp4netns', async () => {
    const n = await makeNetwork('outbound', 'outbound');
    expect(n.env).toEqual({});
    const report = JSON.parse(await probe(n, 'privileges')) as Record<string, unknown>;
    expect(report.interfaces).toEqual(['lo', 'tap0']);
    expect(report.ip_link_add).toMatch(/^failed:.*Operation not permitted/);
    const slirps = processesMentioning(n.netnsPath).filter((pid) => fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('slirp4netns'));
    expect(slirps).toHaveLength(1);
    await n.close();
    expect(fs.existsSync(`/proc/${slirps[0]}`)).toBe(false);
  });

  test('connectPort reaches a server inside the namespace through the helper; a closed port is ECONNREFUSED', async () => {
    const n = await makeNetwork('ports');
    await startServer(n, 'hello-through-helper');
    const sock = await n.connectPort!(SERVER_PORT);
    const chunks: Buffer[] = [];
    for await (const c of sock) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe('hello-through-helper');

    const refused = await n.connectPort!(SERVER_PORT + 1).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(PortConnectError);
    expect((refused as PortConnectError).code).toBe('ECONNREFUSED');
    await expect(n.connectPort!(70_000)).rejects.toThrow(RangeError);
  });

  test('mode none starts its helper at the first connectPort, starts it again after it died, and close() during a start leaves none', async () => {
    const runDir = path.join(tmp, 'run', 'lazy');
    const n = await makeNetwork('lazy');
    const helpers = () => processesMentioning(path.join(runDir, 'ports.sock'));
    expect(helpers()).toEqual([]);
    expect(fs.readdirSync(runDir)).toEqual([]);
    const refused = await n.connectPort!(SERVER_PORT + 2).catch((e: unknown) => e);
    expect((refused as PortConnectError).code).toBe('ECONNREFUSED');
    const [first, ...more] = helpers();
    expect(first).toBeDefined();
    expect(more).toEqual([]);
    process.kill(first!, 'SIGKILL');
    for (let i = 0; i < 40 && fs.existsSync(`/proc/${first}`) && helpers().includes(first!); i++) await sleep(50);
    expect(n.failure).toBeNull(); // the namespace itself still works
    const again = await n.connectPort!(SERVER_PORT + 2).catch((e: unknown) => e);
    expect((again as PortConnectError).code).toBe('ECONNREFUSED');
    expect(helpers()).toHaveLength(1);
    expect(helpers()).not.toContain(first);

    const closing = makeNetwork('lazy-close');
    const c = await closing;
    const pending = c.connectPort!(SERVER_PORT).catch((e: unknown) => e);
    await c.close();
    expect(await pending).toBeInstanceOf(Error);
    expect(processesMentioning(path.join(tmp, 'run', 'lazy-close', 'ports.sock'))).toEqual([]);
  });

  test.each(['none', 'allowlist'] as const)('a host listener on 127.0.0.1 is unreachable from the namespace (%s)', async (mode) => {
    const host = net.createServer((c) => c.end('host-secret'));
    await new Promise<void>((resolve) => host.listen(0, '127.0.0.1', resolve));
    const port = (host.address() as net.AddressInfo).port;
    try {
      // Control: the listener answers on the host.
      const direct = await new Promise<string>((resolve, reject) => {
        net.connect(port, '127.0.0.1').on('data', (d) => resolve(d.toString())).on('error', reject);
      });
      expect(direct).toBe('host-secret');
      const n = await makeNetwork(`host-${mode}`, mode);
      expect(await probe(n, 'connect', String(port))).toBe('error:ConnectionRefusedError');
    } finally {
      host.close();
    }
  });

  test.each(['none', 'allowlist'] as const)('inside (%s): only lo, no raw sockets, no changing links or addresses', async (mode) => {
    const n = await makeNetwork(`caps-${mode}`, mode);
    const report = JSON.parse(await probe(n, 'privileges')) as Record<string, unknown>;
    expect(report.interfaces).toEqual(['lo']);
    expect(report.raw_socket).toBe('error:Operation not permitted');
    expect(report.packet_socket).toBe('error:Operation not permitted');
    for (const key of ['ip_link_add', 'ip_lo_down', 'ip_addr_add']) expect(report[key]).toMatch(/^failed:.*Operation not permitted/);
  });

  test('allowlist: 127.0.0.1:3128 in the namespace leads to the session\'s egress proxy, and the proxy variables are set', async () => {
    const n = await makeNetwork('allow', 'allowlist');
    for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY']) {
      expect(n.env[name]).toBe('http://127.0.0.1:3128');
      expect(n.env[name.toLowerCase()]).toBe('http://127.0.0.1:3128');
    }
    const env = await probe(n, 'urlopen', 'http://blocked.example.invalid/some/path');
    expect(env).toBe('status:403');
    expect(decisions).toContainEqual(expect.objectContaining({ decision: 'denied', host: 'blocked.example.invalid', port: 80 }));

    expect(await probe(n, 'proxy-connect', '127.0.0.1:22')).toMatch(/^status:HTTP\/1\.[01] 403/);
    expect(decisions).toContainEqual(expect.objectContaining({ decision: 'denied', host: '127.0.0.1', port: 22 }));
    // Mode none has no such listener.
    const none = await makeNetwork('allow-none');
    expect(await probe(none, 'connect', '3128')).toBe('error:ConnectionRefusedError');
  });

  test('close() leaves no helper, no run dir, no namespace descriptor; a second close() is harmless', async () => {
    const n = await makeNetwork('close', 'allowlist');
    const runDir = path.join(tmp, 'run', 'close');
    const fdPath = n.netnsPath.replace(`/proc/${process.pid}/`, '/proc/self/');
    const nsLink = fs.readlinkSync(fdPath);
    expect(nsLink).toMatch(/^net:\[\d+\]$/);
    const helpers = processesMentioning(path.join(runDir, 'ports.sock'));
    expect(helpers).toHaveLength(1);
    // The helper kept only its sockets: the session's uid, no capabilities, no_new_privs, dies with us.
    const status = fs.readFileSync(`/proc/${helpers[0]}/status`, 'utf8');
    expect(status).toMatch(new RegExp(`^Uid:\\s+${TEST_UID}\\s+${TEST_UID}\\s+${TEST_UID}\\s+${TEST_UID}$`, 'm'));
    expect(status).toMatch(/^Groups:\s*$/m);
    expect(status).toMatch(/^CapEff:\s+0+$/m);
    expect(status).toMatch(/^CapPrm:\s+0+$/m);
    expect(status).toMatch(/^NoNewPrivs:\s+1$/m);
    // The proxy listens on no path: the helper reaches it only over its IPC channel.
    expect(fs.readdirSync(runDir).sort()).toEqual(['ports.sock']);
    expect(fs.statSync(path.join(runDir, 'ports.sock')).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.join(runDir, 'ports.sock')).uid).toBe(0);

    await n.close();
    await n.close();
    expect(processesMentioning(path.join(runDir, 'ports.sock'))).toEqual([]);
    expect(fs.existsSync(`/proc/${helpers[0]}`)).toBe(false);
    expect(fs.existsSync(runDir)).toBe(false);
    let after: string | null = null;
    try {
      after = fs.readlinkSync(fdPath);
    } catch {
      // closed and not reused
    }
    expect(after).not.toBe(nsLink);
  });

  test('a SIGKILLed owner leaves no helper behind (parent-death signal)', async () => {
    const runDir = path.join(tmp, 'run', 'killed');
    const holder = spawn(process.execPath, ['--import', 'tsx', HOLDER, runDir, String(TEST_UID), 'allowlist'], { cwd: PROJECT_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    const closed = new Promise<void>((resolve) => holder.once('close', () => resolve()));
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.once('data', () => resolve());
        holder.once('exit', (code) => reject(new Error(`holder exited ${code}`)));
      });
      const helpers = processesMentioning(path.join(runDir, 'ports.sock'));
      expect(helpers).toHaveLength(1);
      holder.kill('SIGKILL');
      await closed;
      for (let i = 0; i < 40 && processesMentioning(path.join(runDir, 'ports.sock')).length > 0; i++) await sleep(50);
      expect(processesMentioning(path.join(runDir, 'ports.sock'))).toEqual([]);
    } finally {
      holder.kill('SIGKILL');
      await closed;
    }
  });
});
