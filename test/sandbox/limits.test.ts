// Resource limits and defence in depth through the real sandbox (cgroups, rlimits, seccomp),
// each test failing if its protection is removed.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createSandbox, type Sandbox } from '../../src/sandbox/sandbox.js';
import type { RunRequest, RunResult } from '../../src/sandbox/types.js';
import { hostProcessesOfUid } from '../helpers/host-processes.js';
import { makeWorkspace } from '../helpers/sandbox.js';

let sandbox: Sandbox;
const workspaces: string[] = [];

beforeAll(async () => {
  sandbox = await createSandbox(loadConfig({ BUBBLE_SANDBOX_LOG_LEVEL: 'silent' }));
});
afterAll(async () => {
  await sandbox.close();
  for (const ws of workspaces) fs.rmSync(path.dirname(ws), { recursive: true, force: true });
});

function run(partial: Partial<RunRequest> & Pick<RunRequest, 'program'>, slot = 1): Promise<RunResult> {
  const identity = sandbox.identityFor(slot);
  const ws = makeWorkspace(identity?.uid);
  workspaces.push(ws);
  return sandbox.runner.run({
    environment: null, workspaceDir: ws, volumes: [], timeoutMs: 20_000, maxOutputChars: 10_000,
    limits: sandbox.defaultLimits, identity, ...partial,
  });
}

const sh = (command: string) => ({ kind: 'command' as const, command });
const py = (source: string) => ({ kind: 'script' as const, source });

describe('cgroup limits', () => {
  test('cgroups are in use on this machine', () => {
    expect(sandbox.cgroupMode).not.toBe('none');
  });

  test('a 1 GiB allocation ends as oom, and the next execution works', async () => {
    const r = await run({ program: py("b = bytearray(1024 * 1024 * 1024)\nprint('survived')"), limits: { ...sandbox.defaultLimits, memoryBytes: 256 * 1024 * 1024 } });
    expect(r.status).toBe('oom');
    expect(r.stdout).not.toContain('survived');
    expect(r.resources.memory_peak_bytes).toBeGreaterThan(200 * 1024 * 1024);
    expect(r.resources.memory_peak_bytes).toBeLessThanOrEqual(256 * 1024 * 1024);
    const next = await run({ program: sh('echo alive') });
    expect(next).toMatchObject({ status: 'ok', stdout: 'alive\n' });
  }, 30_000);

  test('forks past the process limit fail inside the sandbox', async () => {
    const r = await run({
      program: py("import subprocess\nps = []\ntry:\n    for _ in range(100):\n        ps.append(subprocess.Popen(['sleep', '5']))\nexcept OSError as e:\n    print('refused', e.errno)\nprint(len(ps))"),
      limits: { ...sandbox.defaultLimits, pids: 32 },
      timeoutMs: 10_000,
    });
    const [refused, count] = r.stdout.trim().split('\n');
    expect(refused).toBe('refused 11');
    expect(Number(count)).toBeGreaterThan(5);
    expect(Number(count)).toBeLessThan(32);
  }, 30_000);

  test('a fork bomb is contained: at most the process limit exists at once, and nothing is left after', async () => {
    const identity = sandbox.identityFor(9);
    const countOnHost = () => (identity ? hostProcessesOfUid(identity.uid).length : 0);
    let peak = 0;
    const sampler = setInterval(() => {
      peak = Math.max(peak, countOnHost());
    }, 20);
    const r = await run({ program: sh("bash -c 'bomb() { bomb | bomb & }; bomb; sleep 2' 2>/dev/null; echo done"), limits: { ...sandbox.defaultLimits, pids: 32 }, timeoutMs: 8000 }, 9);
    clearInterval(sampler);
    expect(r.duration_ms).toBeLessThan(8000);
    if (identity) {
      expect(peak).toBeGreaterThan(10);
      expect(peak).toBeLessThanOrEqual(32 + 2);
      expect(hostProcessesOfUid(identity.uid)).toEqual([]);
    }
    const after = await run({ program: sh('echo fine') });
    expect(after.stdout).toBe('fine\n');
  }, 30_000);

  test('CPU is capped: a busy loop of 2 s wall time gets about one core', async () => {
    const r = await run({
      program: py('import time, threading\nend = time.time() + 2\ndef spin():\n    while time.time() < end: pass\nts = [threading.Thread(target=spin) for _ in range(2)]\n[t.start() for t in ts]\n[t.join() for t in ts]'),
      limits: { ...sandbox.defaultLimits, cpuCores: 0.5 },
    });
    expect(r.status).toBe('ok');
    expect(r.resources.cpu_ms).not.toBeNull();
    expect(r.resources.cpu_ms ?? Infinity).toBeLessThan(1600);
  }, 30_000);

  test('a CPU hog in one session leaves another session answering within a second', async () => {
    const hog = run({ program: sh('while :; do :; done & while :; do :; done & while :; do :; done & wait'), timeoutMs: 6000 }, 2);
    await new Promise((r) => setTimeout(r, 500));
    const started = Date.now();
    const echo = await run({ program: sh('echo quick') }, 3);
    expect(echo.stdout).toBe('quick\n');
    expect(Date.now() - started).toBeLessThan(1000);
    expect((await hog).status).toBe('timeout');
  }, 30_000);
});

describe('rlimits and tmpfs', () => {
  test('a file larger than the file-size limit cannot be written', async () => {
    const r = await run({ program: sh('dd if=/dev/zero of=big bs=1024 count=4096 2>&1; ls -l big'), limits: { ...sandbox.defaultLimits, fileSizeBytes: 1024 * 1024 } });
    expect(r.stdout).toMatch(/File size limit exceeded|file size/i);
    expect(r.stdout).toMatch(/ 1048576 /);
  });

  test('core dumps are off and the open-file limit applies', async () => {
    const r = await run({ program: sh('ulimit -c; ulimit -n'), limits: { ...sandbox.defaultLimits, openFiles: 77 } });
    expect(r.stdout).toBe('0\n77\n');
  });
});

describe('seccomp', () => {
  test('the filter is active and refuses ptrace, keyctl, unshare, mount, bpf, io_uring and AF_VSOCK', async () => {
    const r = await run({
      program: py(`
import ctypes, errno, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def call(name, nr, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(nr, *args)
    print(name, rc, errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno()))
print('Seccomp', [l.split()[1] for l in open('/proc/self/status') if l.startswith('Seccomp:')][0])
call('ptrace', 101, 0, 0, 0, 0)
call('keyctl', 250, 0, 0, 0, 0)
call('unshare', 272, 0x10000000)
call('mount', 165, b'none', b'/tmp', b'tmpfs', 0, 0)
call('bpf', 321, 0, 0, 0)
call('io_uring_setup', 425, 1, 0)
try:
    socket.socket(40, socket.SOCK_STREAM); print('vsock ok')
except OSError as e:
    print('vsock', errno.errorcode[e.errno])
`),
    });
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe('Seccomp 2');
    for (const name of ['ptrace', 'keyctl', 'unshare', 'mount', 'bpf', 'io_uring_setup']) {
      expect(lines).toContain(`${name} -1 EPERM`);
    }
    expect(lines).toContain('vsock EAFNOSUPPORT');
  });

  test('numpy, pandas, subprocess, multiprocessing, threads, sqlite and asyncio keep working', async () => {
    const r = await run({
      program: py(`
import asyncio, multiprocessing, sqlite3, subprocess, threading
import numpy as np, pandas as pd
print(int(np.arange(10).sum()), int(pd.DataFrame({'a': [1, 2]}).a.sum()))
print(subprocess.run(['echo', 'sub'], capture_output=True, text=True).stdout.strip())
with multiprocessing.Pool(2) as p: print(sum(p.map(abs, [-1, -2])))
t = threading.Thread(target=lambda: None); t.start(); t.join(); print('thread')
print(sqlite3.connect(':memory:').execute('select 40 + 2').fetchone()[0])
print(asyncio.run(asyncio.sleep(0, result='async')))
`),
      limits: sandbox.defaultLimits,
    });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim().split('\n')).toEqual(['45 3', 'sub', '3', 'thread', '42', 'async']);
  }, 30_000);
});

describe('identity per session', () => {
  test('two slots run under different host uids', async () => {
    const a = sandbox.identityFor(5);
    const b = sandbox.identityFor(6);
    if (a === null || b === null) return expect(process.getuid?.()).not.toBe(0);
    expect(a.uid).not.toBe(b.uid);
    expect(a.uid).not.toBe(0);
    const [ra, rb] = await Promise.all([run({ program: sh('touch mine') }, 5), run({ program: sh('touch mine') }, 6)]);
    expect(ra.status).toBe('ok');
    expect(rb.status).toBe('ok');
    const owners = workspaces.slice(-2).map((ws) => fs.statSync(path.join(ws, 'mine')).uid).sort();
    expect(owners).toEqual([a.uid, b.uid].sort());
  });
});
