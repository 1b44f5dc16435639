// SANDBOXES_CPU_CORES: the parent cgroup of all sandboxes caps their CPU together, so busy
// sandboxes (or a run_code interpreter's threads left spinning after the call) cannot take the
// cores the service needs to answer. Through real sandboxes on this host's cgroups, each test on a
// parent of its own (the shared one's ceiling would throttle tests running beside this file).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { findV1Hierarchies } from '../../src/sandbox/cgroup-v1.js';
import { readSelfCgroupV2 } from '../../src/sandbox/cgroup-v2.js';
import { createCgroupManager, detectCgroupMode } from '../../src/sandbox/cgroups.js';
import { createSandbox, type Sandbox } from '../../src/sandbox/sandbox.js';
import type { RunResult } from '../../src/sandbox/types.js';
import { sleep } from '../helpers/host-env.js';
import { makeWorkspace } from '../helpers/sandbox.js';

const ROOT = '/sys/fs/cgroup';
const IS_ROOT = process.getuid?.() === 0;
const REAL = IS_ROOT ? await detectCgroupMode() : { mode: 'none' as const, reason: 'not root' };
const MiB = 1024 * 1024;
const measured: Record<string, number> = {};
const cleanups: (() => Promise<void> | void)[] = [];

afterAll(async () => {
  // Each one runs even when an earlier one failed (a failed test may leave a child behind).
  for (const c of cleanups.reverse()) {
    try {
      await c();
    } catch (err) {
      console.warn('[cpu ceiling cleanup]', err);
    }
  }
  console.info('[cpu ceiling measured]', JSON.stringify(measured));
});

/** The parent's directory in v2, or in the v1 hierarchy of `controller`. */
async function parentDir(parentName: string, controller: 'cpu' | 'cpuacct'): Promise<string> {
  if (REAL.mode === 'v1') {
    const h = await findV1Hierarchies(ROOT);
    const dir = h.ok ? h.hierarchies[controller] : null;
    if (!dir) throw new Error(`no v1 ${controller} hierarchy`);
    return path.join(dir, parentName);
  }
  // The layouts of cgroup-v2.ts: at the root, beside our own cgroup, or inside it.
  const own = path.join(ROOT, await readSelfCgroupV2());
  const dir = [path.join(ROOT, parentName), path.join(path.dirname(own), parentName), path.join(own, parentName)].find((d) => fs.existsSync(d));
  if (!dir) throw new Error(`parent cgroup ${parentName} not found`);
  return dir;
}

/** CPU time the parent's subtree used so far, in seconds. */
async function parentCpuSeconds(parentName: string): Promise<() => number> {
  const dir = await parentDir(parentName, 'cpuacct');
  if (REAL.mode === 'v1') return () => Number(fs.readFileSync(path.join(dir, 'cpuacct.usage'), 'utf8')) / 1e9;
  return () => Number(/^usage_usec (\d+)$/m.exec(fs.readFileSync(path.join(dir, 'cpu.stat'), 'utf8'))?.[1]) / 1e6;
}

/** A CPU quota file as written: v1 `cpu.cfs_quota_us`, v2 `cpu.max`. */
function quotaOf(dir: string): string {
  return fs.readFileSync(path.join(dir, REAL.mode === 'v1' ? 'cpu.cfs_quota_us' : 'cpu.max'), 'utf8').trim();
}
const expectedQuota = (us: number) => (REAL.mode === 'v1' ? String(us) : `${us} 100000`);

/** Managers keep the (shared) parent at close; these private ones go. */
async function removeParent(parentName: string): Promise<void> {
  const dirs = new Set([await parentDir(parentName, 'cpu')]);
  if (REAL.mode === 'v1') for (const h of fs.readdirSync(ROOT)) dirs.add(path.join(ROOT, h, parentName));
  for (const d of dirs) if (fs.existsSync(d)) fs.rmdirSync(d);
}

async function sandboxWithCeiling(parentName: string, sandboxesCpuCores: string): Promise<Sandbox> {
  const config = loadConfig({ BUBBLE_SANDBOX_LOG_LEVEL: 'silent', BUBBLE_SANDBOX_SANDBOXES_CPU_CORES: sandboxesCpuCores, BUBBLE_SANDBOX_CPU_CORES: '1' });
  const sandbox = await createSandbox(config, undefined, { cgroupParentName: parentName });
  cleanups.push(() => removeParent(parentName), () => sandbox.close());
  // Ten times the usual weight: on a busy host (other tests) the spinners still ask for more than
  // their quotas, so the quotas, not the other load, decide what they get.
  const dir = await parentDir(parentName, 'cpu');
  if (REAL.mode === 'v1') fs.writeFileSync(path.join(dir, 'cpu.shares'), '10240');
  else fs.writeFileSync(path.join(dir, 'cpu.weight'), '1000');
  return sandbox;
}

/** nr_throttled of a cgroup's cpu.stat: periods in which its quota stopped it. */
function throttledPeriods(dir: string): number {
  return Number(/^nr_throttled (\d+)$/m.exec(fs.readFileSync(path.join(dir, 'cpu.stat'), 'utf8'))?.[1] ?? NaN);
}

interface SpinMeasure { cores: number; parentThrottled: number; executionsThrottled: number }

/**
 * Start `count` sandboxes that spin on one core each, and measure over `windowMs`, once they all
 * run, the CPU their parent used (in cores) and the periods in which a quota stopped them: the
 * parent's (the ceiling) and the executions' own (CPU_CORES). Other load on the host can only
 * lower the CPU used, so the throttle counts tell which quota acted.
 */
async function spin(sandbox: Sandbox, parentName: string, count: number, cpuCores = 1, windowMs = 1500): Promise<SpinMeasure> {
  const identity = sandbox.identityFor(7);
  const ws = makeWorkspace(identity?.uid);
  cleanups.push(() => fs.rmSync(path.dirname(ws), { recursive: true, force: true }));
  const runs: Promise<RunResult>[] = [];
  for (let i = 0; i < count; i++) {
    runs.push(sandbox.runner.run({
      environment: null, workspaceDir: ws, volumes: [], timeoutMs: windowMs + 1500, maxOutputChars: 1000,
      program: { kind: 'command', command: 'while :; do :; done' },
      limits: { ...sandbox.defaultLimits, cpuCores }, identity,
    }));
  }
  const usage = await parentCpuSeconds(parentName);
  const cpuParent = await parentDir(parentName, 'cpu');
  await sleep(700); // every sandbox started and spinning
  const [u0, p0, t0] = [usage(), throttledPeriods(cpuParent), performance.now()];
  await sleep(windowMs);
  const cores = (usage() - u0) / ((performance.now() - t0) / 1000);
  const parentThrottled = throttledPeriods(cpuParent) - p0;
  const executions = fs.readdirSync(cpuParent, { withFileTypes: true }).filter((e) => e.isDirectory());
  expect(executions).toHaveLength(count);
  const executionsThrottled = executions.reduce((sum, e) => sum + throttledPeriods(path.join(cpuParent, e.name)), 0);
  for (const r of await Promise.all(runs)) expect(r.status).toBe('timeout'); // they spun to the end
  return { cores: Math.round(cores * 100) / 100, parentThrottled, executionsThrottled };
}

describe.skipIf(REAL.mode === 'none' && !process.env.CI)(`CPU ceiling of all sandboxes (${REAL.mode})`, () => {
  test('the parent cgroup carries SANDBOXES_CPU_CORES as its quota', async () => {
    const parentName = `bubble-sandbox-ceiling-file-${process.pid}`;
    await sandboxWithCeiling(parentName, '0.75');
    expect(quotaOf(await parentDir(parentName, 'cpu'))).toBe(expectedQuota(75_000));
  });

  test('three sandboxes spinning one core each get at most SANDBOXES_CPU_CORES=0.5 together', async () => {
    const parentName = `bubble-sandbox-ceiling-${process.pid}`;
    const m = await spin(await sandboxWithCeiling(parentName, '0.5'), parentName, 3);
    measured.threeSpinnersCeiling05 = m.cores;
    expect(m.cores).toBeGreaterThan(0.05);
    expect(m.cores).toBeLessThan(0.5 * 1.25);
    expect(m.parentThrottled).toBeGreaterThan(0); // the ceiling, not other load, held them
  }, 30_000);

  // The control: under a ceiling above the host's cores the same sandboxes are not held by it,
  // and the same measurement sees them use more than the test above allows.
  test('without a tight ceiling the parent never stops the same three sandboxes', async () => {
    const parentName = `bubble-sandbox-ceiling-off-${process.pid}`;
    const m = await spin(await sandboxWithCeiling(parentName, String(os.availableParallelism() + 2)), parentName, 3);
    measured.threeSpinnersNoCeiling = m.cores;
    expect(m.parentThrottled).toBe(0);
    expect(m.cores).toBeGreaterThan(0.5 * 1.25); // what the test above forbids
  }, 30_000);

  test('CPU_CORES still caps each execution under a looser ceiling', async () => {
    const parentName = `bubble-sandbox-ceiling-exec-${process.pid}`;
    const m = await spin(await sandboxWithCeiling(parentName, '1.5'), parentName, 2, 0.25);
    measured.twoSpinnersQuarterCoreEach = m.cores;
    expect(m.cores).toBeGreaterThan(0.05);
    expect(m.cores).toBeLessThan(0.5 * 1.25);
    expect(m.executionsThrottled).toBeGreaterThan(0);
    expect(m.parentThrottled).toBe(0);
  }, 30_000);

  test('an execution asking for more than the ceiling is created and held to it; a lower ceiling later lowers it too', async () => {
    const parentName = `bubble-sandbox-ceiling-clamp-${process.pid}`;
    const mgr = await createCgroupManager({ parentName, globalLimits: { cpuCores: 0.5 } });
    cleanups.push(() => removeParent(parentName), () => mgr.close());
    // Named as another live process's execution (our parent's), so the second manager leaves it be.
    const cg = await mgr.create(`exec-${process.ppid}-1`, { memoryBytes: 64 * MiB, pids: 8, cpuCores: 2 });
    if (!cg) throw new Error('no cgroup');
    cleanups.push(() => cg.destroy()); // mgr.close leaves it: it is named as another process's
    const cpuDir = path.join(await parentDir(parentName, 'cpu'), `exec-${process.ppid}-1`);
    // v1 refuses a child above its parent; v2 takes the lower of the two by itself.
    expect(quotaOf(cpuDir)).toBe(expectedQuota(REAL.mode === 'v1' ? 50_000 : 200_000));
    // Another instance on the same parent with a lower ceiling: v1 refuses a parent below a live
    // child, so the child comes down with it instead of the start failing.
    const other = await createCgroupManager({ parentName, globalLimits: { cpuCores: 0.25 } });
    cleanups.push(() => other.close());
    expect(other.mode).toBe(REAL.mode);
    expect(quotaOf(await parentDir(parentName, 'cpu'))).toBe(expectedQuota(25_000));
    if (REAL.mode === 'v1') expect(quotaOf(cpuDir)).toBe('25000');
  });
});
