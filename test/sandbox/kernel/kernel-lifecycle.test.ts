// When a kernel is interrupted, killed, lost, replaced or closed, checked against the host's
// process table.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Environment } from '../../../src/sandbox/environments.js';
import { KernelClosedError, KernelStartError, type KernelRunOptions, type PythonKernel } from '../../../src/sandbox/kernel/kernel.js';
import { KernelPool } from '../../../src/sandbox/kernel/kernel-pool.js';
import { hostProcessesInCgroup, isRunning } from '../../helpers/host-processes.js';
import { sleep } from '../../helpers/host-env.js';
import { makeWorkspace } from '../../helpers/sandbox.js';
import { createKernelFixture, type KernelFixture } from './helpers.js';

let f: KernelFixture;
let bare: Environment;
const opts: KernelRunOptions = { timeoutMs: 10_000, maxOutputChars: 100_000 };

beforeAll(async () => {
  f = await createKernelFixture();
  bare = await f.environment('bare');
});
afterAll(async () => {
  await f.dispose();
});

/** The kernel's own cgroup path, to find its processes later (v1: any hierarchy line; v2: the one line). */
function cgroupOf(pid: number): string {
  const line = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => l.includes('/kernel-'));
  const cg = line?.split(':')[2];
  if (!cg?.includes('/kernel-')) throw new Error(`unexpected cgroup ${String(line)}`);
  return cg;
}

async function started(k: PythonKernel): Promise<{ pid: number; cgroup: string }> {
  await k.start();
  const pid = k.pid;
  if (pid === null) throw new Error('kernel not running');
  return { pid, cgroup: cgroupOf(pid) };
}

function expectGone(s: { pid: number; cgroup: string }): void {
  expect(isRunning(s.pid)).toBe(false);
  expect(hostProcessesInCgroup(s.cgroup)).toEqual([]);
}

describe('timeouts', () => {
  test('a Python loop is interrupted; the interpreter and its state survive', async () => {
    const k = f.kernel({ environment: bare });
    await k.run('state = "kept"', opts);
    const t = performance.now();
    const r = await k.run('while True:\n    pass', { ...opts, timeoutMs: 1000, graceMs: 2000 });
    expect(performance.now() - t).toBeLessThan(1000 + 2000);
    expect(r).toMatchObject({ status: 'timeout', timed_out: true, exit_code: null, signal: 'SIGINT', timeout_seconds: 1, result: null });
    expect(r.error).toMatchObject({ type: 'KeyboardInterrupt', line: 1 });
    expect(r.error?.hint).toContain('state are kept');
    expect(r.stderr).toContain('KeyboardInterrupt');
    const next = await k.run('state', opts);
    expect(next).toMatchObject({ status: 'ok', result: "'kept'", kernel_restarted: false });
  });

  test('a blocking call that ignores SIGINT is killed with every process of the kernel; the next call starts fresh', async () => {
    const k = f.kernel({ environment: bare });
    const s = await started(k);
    await k.run("state = 'old'\nimport subprocess\nchild = subprocess.Popen(['sleep', '300'])", opts);
    const t = performance.now();
    let ended = 0;
    const r = await k.run("print('before')\nimport signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(100)", { ...opts, timeoutMs: 1000, graceMs: 1000, onCellEnd: () => ended++ });
    expect(performance.now() - t).toBeLessThan(1000 + 1000 + 3000);
    expect(ended).toBe(0); // no answer: the changes are looked at once the kernel is dead
    expect(r).toMatchObject({ status: 'timeout', timed_out: true, exit_code: null, signal: 'SIGKILL', stdout: 'before\n', error: null });
    expect(k.pid).toBeNull();
    expectGone(s);
    const next = await k.run("'state' in globals()", opts);
    expect(next).toMatchObject({ status: 'ok', result: 'False', kernel_restarted: true });
    expect((await k.run('1', opts)).kernel_restarted).toBe(false);
  });

  test('an abort (client gone) interrupts the cell, status killed, state kept', async () => {
    const k = f.kernel({ environment: bare });
    await k.run('n = 1', opts);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 300);
    const r = await k.run('import time\ntime.sleep(30)', { ...opts, signal: ac.signal });
    expect(r).toMatchObject({ status: 'killed', timed_out: false, signal: 'SIGINT' });
    expect(r.duration_ms).toBeLessThan(3000);
    expect(await k.run('n', opts)).toMatchObject({ result: '1', kernel_restarted: false });
  });

  test('calls are served one at a time, in order', async () => {
    const k = f.kernel({ environment: bare });
    const a = k.run("import time\ntime.sleep(0.5)\norder = ['a']", opts);
    const b = k.run("order.append('b')\norder", opts);
    expect((await a).status).toBe('ok');
    expect((await b).result).toBe("['a', 'b']");
  });
});

describe('lost kernels', () => {
  test('out of memory: status oom, nothing left, the next call works on a fresh kernel', async () => {
    const k = f.kernel({ environment: bare, limits: { ...f.sandbox.defaultLimits, memoryBytes: 64 * 1024 * 1024 } });
    const s = await started(k);
    await k.run('before = 1', opts);
    const r = await k.run('b = bytearray(512 * 1024 * 1024)\nprint("survived")', opts);
    expect(r).toMatchObject({ status: 'oom', exit_code: null, result: null });
    expect(r.stdout).not.toContain('survived');
    expectGone(s);
    const next = await k.run("'before' in globals()", opts);
    expect(next).toMatchObject({ status: 'ok', result: 'False', kernel_restarted: true });
  }, 30_000);

  test('the interpreter exiting during a call reports its exit code; the next call says it restarted', async () => {
    const k = f.kernel({ environment: bare });
    const r = await k.run("import os\nprint('bye', flush=True)\nos._exit(3)", opts);
    expect(r).toMatchObject({ status: 'error', exit_code: 3, stdout: 'bye\n' });
    expect((await k.run('1', opts)).kernel_restarted).toBe(true);
  });

  test('dying between calls is noticed by the next call', async () => {
    const k = f.kernel({ environment: bare });
    const s = await started(k);
    await k.run('import os, threading, time\nthreading.Thread(target=lambda: (time.sleep(0.2), os._exit(1))).start()', opts);
    await sleep(700);
    expectGone(s);
    expect(await k.run('1', opts)).toMatchObject({ result: '1', kernel_restarted: true });
  });

  test('an idle interpreter is stopped; the next call starts a fresh one and says so', async () => {
    const k = f.kernel({ environment: bare, idleMs: 500 });
    await k.run('x = 1', opts);
    await sleep(200);
    await k.run('x += 1', opts); // activity pushes the idle stop back
    const s = { pid: k.pid ?? -1, cgroup: cgroupOf(k.pid ?? -1) };
    await sleep(300);
    expect(k.pid).toBe(s.pid);
    await sleep(600);
    expect(k.pid).toBeNull();
    expectGone(s);
    expect(await k.run("'x' in globals()", opts)).toMatchObject({ result: 'False', kernel_restarted: true });
  });
});

describe('start', () => {
  test('the request env and volumes reach the interpreter (the control pipe is found after volume descriptors)', async () => {
    const volume = makeWorkspace(f.sandbox.identityFor(1)?.uid);
    fs.writeFileSync(path.join(volume, 'in.txt'), 'from-volume');
    try {
      const k = f.kernel({
        environment: bare, env: { MY_VAR: 'hello' },
        volumes: [{ name: 'data', hostDir: volume, mode: 'ro' }, { name: 'more', hostDir: volume, mode: 'rw' }],
      });
      const r = await k.run("import os\n(os.environ['MY_VAR'], open('/volumes/data/in.txt').read(), os.environ['PATH'].split(':')[0])", opts);
      expect(r).toMatchObject({ status: 'ok', result: "('hello', 'from-volume', '/opt/venv/bin')" });
    } finally {
      fs.rmSync(path.dirname(volume), { recursive: true, force: true });
    }
  });

  test('an interpreter that cannot start rejects with KernelStartError and leaves nothing behind', async () => {
    const broken = { ...bare, name: 'broken', venvDir: '/nonexistent-venv' };
    const k = f.kernel({ environment: broken });
    // On this host's cgroup v1 layout; elsewhere both lists are empty.
    const parent = `/sys/fs/cgroup/memory/bs-kernel-test-${process.pid}`;
    const kernelCgroups = () => (fs.existsSync(parent) ? fs.readdirSync(parent).filter((n) => n.startsWith('kernel-')) : []);
    const cgroupsBefore = kernelCgroups();
    const err: unknown = await k.run('1', opts).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KernelStartError);
    expect((err as Error).message).toMatch(/the kernel exited .*nonexistent-venv/);
    expect(k.pid).toBeNull();
    // Earlier tests' kernels may still be going away; no new one may stay.
    expect(kernelCgroups().filter((n) => !cgroupsBefore.includes(n))).toEqual([]);
  });
});

describe('restart and close', () => {
  test('restart() gives fresh state and is not reported as a restart', async () => {
    const k = f.kernel({ environment: bare });
    const s = await started(k);
    await k.run('v = 1', opts);
    await k.restart();
    expectGone(s);
    expect(await k.run("'v' in globals()", opts)).toMatchObject({ result: 'False', kernel_restarted: false });
  });

  test('restart() during a call ends that call as killed', async () => {
    const k = f.kernel({ environment: bare });
    await k.start();
    const running = k.run('import time\ntime.sleep(30)', opts);
    await sleep(300);
    await k.restart();
    expect(await running).toMatchObject({ status: 'killed', signal: 'SIGKILL' });
    expect((await k.run('1', opts)).kernel_restarted).toBe(false);
  });

  test('close() leaves no process, even with a call running and children started; later calls reject', async () => {
    const k = f.kernel({ environment: bare });
    const s = await started(k);
    await k.run("import subprocess\nsubprocess.Popen(['sleep', '300'])\nsubprocess.Popen(['setsid', 'sleep', '300'])", opts);
    expect(hostProcessesInCgroup(s.cgroup).length).toBeGreaterThan(2);
    const running = k.run('import time\ntime.sleep(30)', opts);
    await sleep(200);
    await k.close();
    expect((await running).status).toBe('killed');
    expectGone(s);
    await expect(k.run('1', opts)).rejects.toBeInstanceOf(KernelClosedError);
  });

  test('a pool closes every kernel it holds', async () => {
    const pool = new KernelPool();
    const a = pool.get('a', () => f.kernel({ environment: bare }));
    const b = pool.get('b', () => f.kernel({ environment: bare }));
    const [sa, sb] = await Promise.all([started(a), started(b)]);
    await pool.stop('a');
    expectGone(sa);
    expect(isRunning(sb.pid)).toBe(true);
    await pool.closeAll();
    expectGone(sb);
  });
});
