// Real-kernel tests run against this host's cgroups (v1 here, as root) and clean up every cgroup
// they create. cgroup v2 file handling is tested against a fake tree, plus cgroup.kill against the
// real (controller-less) v2 hierarchy when a hybrid host mounts one.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createV1Manager, findV1Hierarchies } from '../../src/sandbox/cgroup-v1.js';
import { createV2Manager, openV2Execution, readSelfCgroupV2 } from '../../src/sandbox/cgroup-v2.js';
import {
  CgroupError, createCgroupManager, detectCgroupMode, validateCgroupName,
  type CgroupLimits, type CgroupManager, type ExecutionCgroup, readTextSync,
} from '../../src/sandbox/cgroups.js';

const MiB = 1024 * 1024;
const ROOT = '/sys/fs/cgroup';
const IS_ROOT = process.getuid?.() === 0;
const REAL = IS_ROOT ? await detectCgroupMode() : { mode: 'none' as const, reason: 'not root' };
const PARENT = `bubble-sandbox-test-${process.pid}`;
const measured: Record<string, number | null> = {};

function collectingLogger() {
  const warnings: { obj: object; msg: string | undefined }[] = [];
  return { warnings, logger: { warn: (obj: object, msg?: string) => void warnings.push({ obj, msg }) } };
}

interface Run { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

/** The runner's wrapper pattern: join every cgroup first, then exec the real program. */
function runIn(cg: ExecutionCgroup, script: string) {
  const child = spawn('/bin/sh', ['-c', `for f in "$@"; do echo $$ > "$f" || exit 97; done\n${script}`, 'wrapper', ...cg.procsFiles], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  // 'close' waits for every holder of the pipes, orphaned background children included.
  const done = new Promise<Run>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  return { child, done, exited, output: () => stdout };
}

function pidsIn(cg: ExecutionCgroup): number[] {
  const all = cg.procsFiles.flatMap((f) => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8').split('\n').filter(Boolean).map(Number) : []));
  return [...new Set(all)];
}

const pidsDirOf = (cg: ExecutionCgroup) => cg.procsFiles.map((f) => path.dirname(f)).find((d) => fs.existsSync(path.join(d, 'pids.max')));
/** nr_throttled from the cgroup's cpu.stat (v1 cpu hierarchy or v2), null when there is none. */
function throttledPeriods(cg: ExecutionCgroup): number | null {
  for (const f of cg.procsFiles) {
    const stat = path.join(path.dirname(f), 'cpu.stat');
    const m = fs.existsSync(stat) ? /^nr_throttled (\d+)$/m.exec(fs.readFileSync(stat, 'utf8')) : null;
    if (m) return Number(m[1]);
  }
  return null;
}
const readTrim = (file: string) => fs.readFileSync(file, 'utf8').trim();

async function make(mgr: CgroupManager, name: string, limits: CgroupLimits): Promise<ExecutionCgroup> {
  const cg = await mgr.create(name, limits);
  if (!cg) throw new Error(`manager in mode ${mgr.mode} returned no cgroup`);
  return cg;
}

async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
}

// In CI (root on Debian) cgroups exist: a missing hierarchy there is a failure, not a skip.
describe.skipIf(REAL.mode === 'none' && !process.env.CI)(`real cgroups (${REAL.mode})`, () => {
  let mgr: CgroupManager;
  const limits = { memoryBytes: 256 * MiB, pids: 64, cpuCores: 1 };

  beforeAll(async () => {
    mgr = await createCgroupManager({ parentName: PARENT, globalLimits: { memoryBytes: 2048 * MiB, pids: 1000, cpuCores: 4 } });
    expect(mgr.mode).toBe(REAL.mode);
  });
  afterAll(async () => {
    await mgr.close();
    console.info('[cgroups measured]', JSON.stringify(measured));
  });

  test('detectCgroupMode reports v1 on this host and ignores the controller-less v2 mount', async () => {
    if (!fs.existsSync(path.join(ROOT, 'cgroup.controllers')) && fs.existsSync(path.join(ROOT, 'memory', 'memory.limit_in_bytes'))) {
      expect(REAL).toEqual({ mode: 'v1', reason: null });
    }
    if (fs.existsSync(path.join(ROOT, 'unified', 'cgroup.controllers'))) {
      const unified = await detectCgroupMode(path.join(ROOT, 'unified'));
      expect(unified.mode).toBe('none');
      expect(unified.reason).toMatch(/memory/);
    }
  });

  test.runIf(REAL.mode === 'v1')('v1: global caps on the parent and per-execution limit files', async () => {
    expect(readTrim(path.join(ROOT, 'memory', PARENT, 'memory.limit_in_bytes'))).toBe(String(2048 * MiB));
    expect(readTrim(path.join(ROOT, 'pids', PARENT, 'pids.max'))).toBe('1000');
    expect(readTrim(path.join(ROOT, 'cpu', PARENT, 'cpu.cfs_period_us'))).toBe('100000');
    expect(readTrim(path.join(ROOT, 'cpu', PARENT, 'cpu.cfs_quota_us'))).toBe('400000'); // all sandboxes: 4 cores
    const cg = await make(mgr, 'files', { memoryBytes: 64 * MiB, pids: 20, cpuCores: 0.5 });
    const dirs = cg.procsFiles.map((f) => path.dirname(f));
    expect(new Set(dirs.map((d) => path.dirname(path.dirname(d)))).size).toBe(dirs.length); // one per hierarchy
    const mem = path.join(ROOT, 'memory', PARENT, 'files');
    expect(dirs).toContain(fs.realpathSync(mem));
    expect(readTrim(path.join(mem, 'memory.limit_in_bytes'))).toBe(String(64 * MiB));
    if (fs.existsSync(path.join(mem, 'memory.memsw.limit_in_bytes'))) {
      expect(readTrim(path.join(mem, 'memory.memsw.limit_in_bytes'))).toBe(String(64 * MiB));
    }
    expect(readTrim(path.join(ROOT, 'pids', PARENT, 'files', 'pids.max'))).toBe('20');
    expect(readTrim(path.join(ROOT, 'cpu', PARENT, 'files', 'cpu.cfs_period_us'))).toBe('100000');
    expect(readTrim(path.join(ROOT, 'cpu', PARENT, 'files', 'cpu.cfs_quota_us'))).toBe('50000');
    await cg.destroy();
    for (const d of dirs) expect(fs.existsSync(d)).toBe(false);
  });

  test('memory: a 256 MiB allocation under 64 MiB is OOM-killed; under 512 MiB it succeeds', async () => {
    const alloc = 'exec /usr/bin/python3 -c "b = bytearray(256*1024*1024); print(len(b))"';
    const small = await make(mgr, 'oom-small', { ...limits, memoryBytes: 64 * MiB });
    const r = await runIn(small, alloc).done;
    expect(r.signal === 'SIGKILL' || r.code === 137, JSON.stringify(r)).toBe(true);
    const s = await small.stats();
    measured.oomPeakBytes = s.memoryPeakBytes;
    expect(s.oomKilled).toBe(true);
    expect(s.memoryPeakBytes).toBeGreaterThanOrEqual(32 * MiB);
    expect(s.memoryPeakBytes).toBeLessThanOrEqual(68 * MiB);
    await small.destroy();

    const big = await make(mgr, 'oom-big', { ...limits, memoryBytes: 512 * MiB });
    const ok = await runIn(big, alloc).done;
    expect(ok).toMatchObject({ code: 0, stdout: `${256 * MiB}\n` });
    const sb = await big.stats();
    measured.controlPeakBytes = sb.memoryPeakBytes;
    expect(sb.oomKilled).toBe(false);
    expect(sb.memoryPeakBytes).toBeGreaterThanOrEqual(256 * MiB);
    await big.destroy();
  });

  test('pids: a fork loop stops at the limit; killAll empties the cgroup, destroy removes it', async () => {
    const cg = await make(mgr, 'pids', { ...limits, pids: 16 });
    const run = runIn(cg, 'for i in $(seq 100); do sleep 5 & done; wait');
    let maxSeen = 0;
    let exited = false;
    void run.exited.then(() => (exited = true));
    while (!exited) {
      maxSeen = Math.max(maxSeen, pidsIn(cg).length);
      await new Promise((r) => setTimeout(r, 5));
    }
    // Once more after the shell's exit: on a loaded host it can fork its way to the limit and give
    // up between two looks, and its orphaned sleeps are still in the cgroup then.
    maxSeen = Math.max(maxSeen, pidsIn(cg).length);
    measured.pidsMaxSeen = maxSeen;
    expect(maxSeen).toBeGreaterThan(8);
    expect(maxSeen).toBeLessThanOrEqual(16);
    const pidsDir = pidsDirOf(cg);
    if (pidsDir && fs.existsSync(path.join(pidsDir, 'pids.peak'))) expect(Number(readTrim(path.join(pidsDir, 'pids.peak')))).toBeLessThanOrEqual(16);
    if (pidsDir) expect(readTrim(path.join(pidsDir, 'pids.events'))).toMatch(/max [1-9]/);
    expect(pidsIn(cg).length).toBeGreaterThan(0); // the shell gave up; its orphaned sleeps are still there
    await cg.killAll();
    expect(pidsIn(cg)).toEqual([]);
    const r = await run.done; // the sleeps held stderr open until killAll
    expect(r.stderr).toMatch(/Cannot fork|Resource temporarily unavailable/);
    console.info('[cgroups fork failure]', JSON.stringify(r.stderr.trim()), 'exit', r.code);
    await cg.destroy();
    for (const f of cg.procsFiles) expect(fs.existsSync(path.dirname(f))).toBe(false);
  });

  // Other load on the host only lowers CPU time, so the control spins until it has used 1.8 s of
  // CPU instead of for 2 s of wall time, and the throttle counter proves the quota (not load) acted.
  test('cpu: half a core gets about half the CPU time of a 2 s busy loop', async () => {
    const half = await make(mgr, 'cpu-half', { ...limits, cpuCores: 0.5 });
    const spin2s = 'import time\nt = time.monotonic()\nwhile time.monotonic() - t < 2: pass';
    expect((await runIn(half, `exec /usr/bin/python3 -c "${spin2s}"`).done).code).toBe(0);
    const h = await half.stats();
    const halfThrottled = throttledPeriods(half);
    await half.destroy();
    const two = await make(mgr, 'cpu-two', { ...limits, cpuCores: 2 });
    const spinCpu = 'import time\nt = time.monotonic()\nwhile time.process_time() < 1.8 and time.monotonic() - t < 15: pass\nprint(round(time.monotonic() - t, 2))';
    const control = await runIn(two, `exec /usr/bin/python3 -c "${spinCpu}"`).done;
    expect(control.code).toBe(0);
    const t = await two.stats();
    const twoThrottled = throttledPeriods(two);
    await two.destroy();
    Object.assign(measured, { cpuMsHalfCore2sWall: h.cpuMs, cpuMsTwoCores: t.cpuMs, twoCoresWallS: Number(control.stdout), halfThrottled, twoThrottled });
    expect(h.cpuMs).toBeGreaterThan(300);
    expect(h.cpuMs).toBeLessThan(1600);
    expect(t.cpuMs).toBeGreaterThan(1700);
    if (halfThrottled !== null) expect(halfThrottled).toBeGreaterThan(0);
    if (twoThrottled !== null) expect(twoThrottled).toBe(0);
  }, 60_000);

  test('killAll kills background children, including ones that left the session', async () => {
    const cg = await make(mgr, 'bg', limits);
    const run = runIn(cg, 'sleep 100 & sleep 100 & setsid sleep 100 & echo ready; wait');
    await waitFor(() => run.output().includes('ready') && pidsIn(cg).length >= 4);
    await cg.killAll();
    expect(pidsIn(cg)).toEqual([]);
    expect((await run.done).signal).toBe('SIGKILL');
    await cg.destroy();
  });

  test('names: traversal and odd names are rejected, duplicates too', async () => {
    for (const bad of ['../x', '..', '.', 'a/b', '', 'x'.repeat(101), 'a b', 'a\0b', '/abs']) {
      await expect(mgr.create(bad, limits)).rejects.toThrow(/^invalid cgroup name/);
    }
    expect(fs.existsSync(path.join(ROOT, 'memory', 'x'))).toBe(false);
    expect(validateCgroupName('exec-12.3_a')).toBe('exec-12.3_a');
    const evil = await createCgroupManager({ parentName: '../evil' });
    expect(evil.mode).toBe('none');
    expect(evil.reason).toMatch(/invalid parent cgroup name/);
    const a = await make(mgr, 'dup', limits);
    await expect(mgr.create('dup', limits)).rejects.toThrow(/already exists/);
    await a.destroy();
  });

  test('startup removes stale executions of a crashed run and kills their processes', async () => {
    const stale = await make(mgr, 'stale', limits);
    const run = runIn(stale, 'exec sleep 100');
    await waitFor(() => pidsIn(stale).length === 1);
    const again = await createCgroupManager({ parentName: PARENT }); // what a restart does
    expect((await run.done).signal).toBe('SIGKILL');
    for (const f of stale.procsFiles) expect(fs.existsSync(path.dirname(f))).toBe(false);
    expect(again.mode).toBe(REAL.mode);
  });

  test('close removes its children but keeps the shared parent (another process may be using it)', async () => {
    await make(mgr, 'left-over', limits);
    await mgr.close();
    const parents = fs.readdirSync(ROOT).map((h) => path.join(ROOT, h, PARENT)).filter((p) => fs.existsSync(p));
    expect(parents.length).toBeGreaterThan(0);
    for (const p of parents) expect(fs.existsSync(path.join(p, 'left-over'))).toBe(false);
    await expect(mgr.create('after-close', limits)).rejects.toThrow(/closed/);
    for (const p of parents) fs.rmdirSync(p);
  });
});

describe('fake trees', () => {
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cgroups-test-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const put = (file: string, text: string) => {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, text);
  };

  test('a directory that is no cgroup fs gives mode none with a reason; create returns null', async () => {
    const empty = fs.mkdtempSync(path.join(tmp, 'empty-'));
    const { warnings, logger } = collectingLogger();
    expect((await detectCgroupMode(empty)).mode).toBe('none');
    const mgr = await createCgroupManager({ root: empty, logger });
    expect(mgr.mode).toBe('none');
    expect(mgr.reason).toMatch(/no cgroup v2 controllers/);
    expect(warnings).toHaveLength(1);
    expect(await mgr.create('x', { memoryBytes: 64 * MiB, pids: 8, cpuCores: 1 })).toBeNull();
    await expect(mgr.create('../x', { memoryBytes: 64 * MiB, pids: 8, cpuCores: 1 })).rejects.toThrow(CgroupError);
    expect((await createCgroupManager({ root: path.join(tmp, 'missing') })).mode).toBe('none');
    await mgr.close();
  });

  test('v1: co-mounted cpu,cpuacct is found with or without symlinks and joined once', async () => {
    const root = path.join(tmp, 'v1');
    put(path.join(root, 'memory', 'memory.limit_in_bytes'), '9223372036854771712\n');
    put(path.join(root, 'pids', 'tasks'), '');
    put(path.join(root, 'cpu,cpuacct', 'cpu.cfs_quota_us'), '-1\n');
    put(path.join(root, 'cpu,cpuacct', 'cpuacct.usage'), '0\n');
    const plain = await findV1Hierarchies(root);
    expect(plain.ok && plain.hierarchies.cpu === plain.hierarchies.cpuacct).toBe(true);
    fs.symlinkSync('cpu,cpuacct', path.join(root, 'cpu'));
    fs.symlinkSync('cpu,cpuacct', path.join(root, 'cpuacct'));
    const probe = await findV1Hierarchies(root);
    if (!probe.ok) throw new Error(probe.reason);
    expect(probe.hierarchies.cpu).toBe(fs.realpathSync(path.join(root, 'cpu,cpuacct')));
    expect(probe.hierarchies.cpuacct).toBe(probe.hierarchies.cpu);
    const { logger } = collectingLogger();
    const mgr = await createV1Manager({ root, parentName: 'p', globalLimits: {}, logger, hierarchies: probe.hierarchies, degraded: null });
    const cg = await mgr.create('e1', { memoryBytes: 64 * MiB, pids: 8, cpuCores: 1.5 });
    expect(cg.procsFiles).toHaveLength(3);
    const cpuDir = path.join(fs.realpathSync(root), 'cpu,cpuacct', 'p', 'e1');
    expect(readTrim(path.join(cpuDir, 'cpu.cfs_quota_us'))).toBe('150000');
    put(path.join(cpuDir, 'cpuacct.usage'), '2500000000\n');
    put(path.join(root, 'memory', 'p', 'e1', 'memory.oom_control'), 'oom_kill_disable 0\nunder_oom 0\noom_kill 0\n');
    put(path.join(root, 'memory', 'p', 'e1', 'memory.failcnt'), '12\n'); // limit hits, not a kill
    put(path.join(root, 'memory', 'p', 'e1', 'memory.max_usage_in_bytes'), '1000\n');
    expect(await cg.stats()).toEqual({ memoryPeakBytes: 1000, cpuMs: 2500, oomKilled: false });
    expect(await findV1Hierarchies(path.join(tmp, 'empty-none'))).toMatchObject({ ok: false });
  });

  test('v1: the CPU ceiling on the parent; live executions above it come down to it, new ones are created at most at it', async () => {
    const root = path.join(tmp, 'v1-ceiling');
    put(path.join(root, 'memory', 'memory.limit_in_bytes'), '9223372036854771712\n');
    put(path.join(root, 'pids', 'tasks'), '');
    put(path.join(root, 'cpu', 'cpu.cfs_quota_us'), '-1\n');
    const live = `exec-${process.ppid}-1`; // another live process's execution: left running
    put(path.join(root, 'cpu', 'p', live, 'cpu.cfs_period_us'), '100000\n');
    put(path.join(root, 'cpu', 'p', live, 'cpu.cfs_quota_us'), '150000\n');
    put(path.join(root, 'cpu', 'p', 'cpu.cfs_period_us'), '100000\n');
    put(path.join(root, 'cpu', 'p', 'cpu.cfs_quota_us'), '-1\n');
    const probe = await findV1Hierarchies(root);
    if (!probe.ok) throw new Error(probe.reason);
    const mgr = await createV1Manager({ root, parentName: 'p', globalLimits: { cpuCores: 0.75 }, logger: collectingLogger().logger, hierarchies: probe.hierarchies, degraded: null });
    expect(readTrim(path.join(root, 'cpu', 'p', 'cpu.cfs_quota_us'))).toBe('75000');
    expect(readTrim(path.join(root, 'cpu', 'p', live, 'cpu.cfs_quota_us'))).toBe('75000');
    await mgr.create('wide', { memoryBytes: 64 * MiB, pids: 8, cpuCores: 2 });
    expect(readTrim(path.join(root, 'cpu', 'p', 'wide', 'cpu.cfs_quota_us'))).toBe('75000');
    await mgr.create('narrow', { memoryBytes: 64 * MiB, pids: 8, cpuCores: 0.5 });
    expect(readTrim(path.join(root, 'cpu', 'p', 'narrow', 'cpu.cfs_quota_us'))).toBe('50000');
    // Another process set a lower ceiling since: a new execution follows the parent as it is now.
    put(path.join(root, 'cpu', 'p', 'cpu.cfs_quota_us'), '30000\n');
    await mgr.create('later', { memoryBytes: 64 * MiB, pids: 8, cpuCores: 1 });
    expect(readTrim(path.join(root, 'cpu', 'p', 'later', 'cpu.cfs_quota_us'))).toBe('30000');
    await expect(createCgroupManager({ root, globalLimits: { cpuCores: 0 } })).resolves.toMatchObject({ mode: 'none', reason: 'invalid global cpuCores 0' });
  });

  test('v2: controllers enabled, global and per-execution limits written, stats parsed', async () => {
    const root = path.join(tmp, 'v2');
    put(path.join(root, 'cgroup.controllers'), 'cpuset cpu io memory hugetlb pids rdma misc\n');
    put(path.join(root, 'cgroup.subtree_control'), '');
    put(path.join(root, 'p', 'cgroup.controllers'), 'cpu memory pids\n'); // what the kernel shows once enabled
    put(path.join(root, 'p', 'cgroup.subtree_control'), '');
    fs.mkdirSync(path.join(root, 'p', 'stale-1'));
    expect(await detectCgroupMode(root)).toEqual({ mode: 'v2', reason: null });
    const { warnings, logger } = collectingLogger();
    const mgr = await createV2Manager({ root, selfCgroup: '/', parentName: 'p', globalLimits: { memoryBytes: 1024 * MiB, pids: 500, cpuCores: 1.5 }, logger });
    expect(mgr).toMatchObject({ mode: 'v2', reason: null, layout: 'root', parentDir: path.join(root, 'p') });
    expect(readTrim(path.join(root, 'cgroup.subtree_control'))).toBe('+memory +pids +cpu');
    expect(readTrim(path.join(root, 'p', 'cgroup.subtree_control'))).toBe('+memory +pids +cpu');
    expect(readTrim(path.join(root, 'p', 'memory.max'))).toBe(String(1024 * MiB));
    expect(readTrim(path.join(root, 'p', 'pids.max'))).toBe('500');
    expect(readTrim(path.join(root, 'p', 'cpu.max'))).toBe('150000 100000');
    expect(readTrim(path.join(root, 'p', 'stale-1', 'cgroup.kill'))).toBe('1'); // startup cleanup killed it
    expect(warnings.some((w) => JSON.stringify(w.obj).includes('stale-1'))).toBe(true); // fake dirs cannot be rmdir'd

    const cg = await mgr.create('e1', { memoryBytes: 64 * MiB, pids: 32, cpuCores: 0.5 });
    const dir = path.join(root, 'p', 'e1');
    expect(cg.procsFiles).toEqual([path.join(dir, 'cgroup.procs')]);
    const written = Object.fromEntries(['memory.max', 'memory.swap.max', 'memory.oom.group', 'pids.max', 'cpu.max'].map((f) => [f, readTrim(path.join(dir, f))]));
    expect(written).toEqual({ 'memory.max': String(64 * MiB), 'memory.swap.max': '0', 'memory.oom.group': '1', 'pids.max': '32', 'cpu.max': '50000 100000' });
    const tiny = await mgr.create('e2', { memoryBytes: 64 * MiB, pids: 32, cpuCores: 0.001 });
    expect(readTrim(path.join(root, 'p', 'e2', 'cpu.max'))).toBe('1000 100000');
    expect(tiny.procsFiles).toHaveLength(1);

    put(path.join(dir, 'memory.peak'), '12345678\n');
    put(path.join(dir, 'memory.events'), 'low 0\nhigh 0\nmax 17\noom 2\noom_kill 1\noom_group_kill 0\n');
    put(path.join(dir, 'cpu.stat'), 'usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\nnr_periods 10\n');
    expect(await cg.stats()).toEqual({ memoryPeakBytes: 12345678, cpuMs: 1235, oomKilled: true });
    fs.rmSync(path.join(dir, 'memory.peak'));
    put(path.join(dir, 'memory.events'), 'low 0\nhigh 0\nmax 17\noom 2\noom_kill 0\noom_group_kill 0\n');
    expect(await cg.stats()).toEqual({ memoryPeakBytes: null, cpuMs: 1235, oomKilled: false });
    await cg.killAll();
    expect(readTrim(path.join(dir, 'cgroup.kill'))).toBe('1');
    await expect(mgr.create('../../etc', { memoryBytes: 64 * MiB, pids: 8, cpuCores: 1 })).rejects.toThrow(CgroupError);
  });

  test('v2 layouts: sibling of our cgroup, else a leaf layout inside it, else a reason', async () => {
    const root = path.join(tmp, 'v2-layouts');
    put(path.join(root, 'cgroup.controllers'), 'cpu memory pids\n');
    put(path.join(root, 'system.slice', 'cgroup.controllers'), 'cpu memory pids\n');
    put(path.join(root, 'system.slice', 'cgroup.subtree_control'), 'memory pids\n');
    put(path.join(root, 'system.slice', 'p', 'cgroup.controllers'), 'cpu memory pids\n');
    const { logger } = collectingLogger();
    const sib = await createV2Manager({ root, selfCgroup: '/system.slice/app.service', parentName: 'p', globalLimits: {}, logger });
    expect(sib).toMatchObject({ layout: 'sibling', parentDir: path.join(root, 'system.slice', 'p') });
    expect(readTrim(path.join(root, 'system.slice', 'cgroup.subtree_control'))).toBe('+cpu');

    put(path.join(root, 'kubepods', 'cgroup.controllers'), 'pids\n'); // memory not delegated to the parent
    put(path.join(root, 'kubepods', 'pod1', 'cgroup.controllers'), 'memory pids\n');
    put(path.join(root, 'kubepods', 'pod1', 'p', 'cgroup.controllers'), 'memory pids\n');
    const leaf = await createV2Manager({ root, selfCgroup: '/kubepods/pod1', parentName: 'p', globalLimits: {}, logger });
    expect(leaf).toMatchObject({ layout: 'leaf', parentDir: path.join(root, 'kubepods', 'pod1', 'p'), reason: expect.stringMatching(/cpu/) as unknown });
    const noCpu = await leaf.create('e', { memoryBytes: 64 * MiB, pids: 8, cpuCores: 1 });
    expect(fs.existsSync(path.join(root, 'kubepods', 'pod1', 'p', 'e', 'cpu.max'))).toBe(false);
    expect(noCpu.procsFiles).toHaveLength(1);

    await expect(createV2Manager({ root, selfCgroup: '/nowhere/x', parentName: 'p', globalLimits: {}, logger }))
      .rejects.toThrow(/sibling layout at .*; leaf layout at/);
    // Outside our cgroup namespace ("/../x"): never resolved against root, only the root layout is tried.
    await expect(createV2Manager({ root: path.join(tmp, 'nothing'), selfCgroup: '/../x', parentName: 'p', globalLimits: {}, logger }))
      .rejects.toThrow(/^no usable cgroup v2 layout \(root layout at/);

    put(path.join(tmp, 'self-cgroup'), '12:pids:/a\n0::/system.slice/x.service\n');
    expect(await readSelfCgroupV2(path.join(tmp, 'self-cgroup'))).toBe('/system.slice/x.service');
    expect(await readSelfCgroupV2(path.join(tmp, 'missing'))).toBe('/');
  });
});

// The hybrid v2 mount of this host has no controllers but does have cgroup.kill: the v2 kill path
// runs against the real kernel here.
const UNIFIED = path.join(ROOT, 'unified');
describe.runIf(IS_ROOT && fs.existsSync(path.join(UNIFIED, 'cgroup.procs')))('real cgroup v2 kill (hybrid mount)', () => {
  test('cgroup.kill takes every process; destroy removes the directory', async () => {
    const dir = path.join(UNIFIED, `${PARENT}-kill`);
    fs.mkdirSync(dir);
    const cg = openV2Execution(dir, collectingLogger().logger);
    try {
      const run = runIn(cg, 'sleep 100 & setsid sleep 100 & echo ready; wait');
      await waitFor(() => run.output().includes('ready') && pidsIn(cg).length >= 3);
      await cg.killAll();
      expect(pidsIn(cg)).toEqual([]);
      expect((await run.done).signal).toBe('SIGKILL');
      const s = await cg.stats();
      expect(s.oomKilled).toBe(false);
      expect(typeof s.cpuMs).toBe('number');
    } finally {
      await cg.destroy();
    }
    expect(fs.existsSync(dir)).toBe(false);
  });
});

describe('synchronous cgroup file reads', () => {
  test('a file larger than the shared read buffer (a long cgroup.procs) is read whole; a missing one is null', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cg-read-'));
    try {
      const text = Array.from({ length: 9000 }, (_, i) => String(100000 + i)).join('\n') + '\n';
      fs.writeFileSync(path.join(dir, 'cgroup.procs'), text);
      expect(text.length).toBeGreaterThan(3 * 16 * 1024);
      expect(readTextSync(path.join(dir, 'cgroup.procs'))).toBe(text);
      expect(readTextSync(path.join(dir, 'missing'))).toBeNull();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
