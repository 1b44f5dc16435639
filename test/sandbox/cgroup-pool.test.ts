// Reused execution cgroups (cgroup-pool.ts) against this host's real cgroups (v1 here, as root):
// a cgroup given back is handed out again with the same limits, and nothing of execution N
// (memory peak, CPU time, an OOM kill, a leftover process, a late killAll by its old owner)
// reaches execution N+1 in the same directory.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createCgroupPool, type RecyclableCgroup } from '../../src/sandbox/cgroup-pool.js';
import { createV2Manager } from '../../src/sandbox/cgroup-v2.js';
import { createCgroupManager, detectCgroupMode, type CgroupLimits, type CgroupManager, type ExecutionCgroup } from '../../src/sandbox/cgroups.js';
import { execHelperArgs, spawnSandbox } from '../../src/sandbox/spawn.js';
import { createSandboxFixture, DEFAULT_LIMITS, EXEC_HELPER_PATH, IS_ROOT, TEST_UID } from '../helpers/sandbox.js';

const MiB = 1024 * 1024;
const REAL = IS_ROOT ? await detectCgroupMode() : { mode: 'none' as const, reason: 'not root' };
const PARENT = `bubble-sandbox-pool-test-${process.pid}`;
const LIMITS: CgroupLimits = { memoryBytes: 128 * MiB, pids: 64, cpuCores: 1 };
let counter = 0;
const nextName = () => `exec-${process.pid}-${++counter}`;

/** python3 in the cgroup, started the way the service starts bwrap: through the exec helper. */
function runIn(cg: ExecutionCgroup, script: string): Promise<{ code: number | null; stdout: string }> {
  const args = execHelperArgs({ limits: DEFAULT_LIMITS, cpuSeconds: 30, identity: null, netnsPath: undefined }, cg.procsFiles, ['/usr/bin/python3', '-c', script]);
  const child = spawn(EXEC_HELPER_PATH, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, stdout })));
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
};
const ALLOCATE = (mib: number) => `b = bytearray(${mib} * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\n`;
const SPIN = 'import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n';

describe.skipIf(REAL.mode === 'none' && !process.env.CI)(`reused execution cgroups (${REAL.mode})`, () => {
  let mgr: CgroupManager;
  beforeAll(async () => {
    mgr = await createCgroupManager({ parentName: PARENT, poolSize: 4 });
    expect(mgr.mode).not.toBe('none');
  });
  afterAll(async () => {
    await mgr.close();
    // The managers leave their (empty) parents, as the service's does; the test's own go here.
    for (const hier of fs.readdirSync('/sys/fs/cgroup')) {
      for (const p of [PARENT, `${PARENT}-b`, `${PARENT}-c`]) {
        try {
          fs.rmdirSync(path.join('/sys/fs/cgroup', hier, p));
        } catch {
          // not in this hierarchy
        }
      }
    }
  });
  const make = async (limits = LIMITS) => {
    const cg = await mgr.create(nextName(), limits);
    if (!cg) throw new Error('no cgroup');
    return cg;
  };

  test('the same cgroup comes back, with the memory peak and CPU time of the new execution only', async () => {
    const first = await make();
    expect((await runIn(first, ALLOCATE(80) + SPIN)).code).toBe(0);
    const s1 = await first.stats();
    expect(s1.memoryPeakBytes).toBeGreaterThan(80 * MiB);
    expect(s1.cpuMs).toBeGreaterThanOrEqual(350);
    await first.destroy();

    const second = await make();
    expect(second.procsFiles).toEqual(first.procsFiles); // reused, not made anew
    expect((await runIn(second, 'pass')).code).toBe(0);
    const s2 = await second.stats();
    expect(s2.memoryPeakBytes).toBeLessThan(40 * MiB);
    expect(s2.cpuMs).toBeLessThan(300);
    expect(s2.oomKilled).toBe(false);
    // killAll wrote pids.max=0; reuse writes the limit again.
    const pidsMax = second.procsFiles.map((f) => path.join(path.dirname(f), 'pids.max')).find((f) => fs.existsSync(f));
    expect(fs.readFileSync(pidsMax ?? '', 'utf8').trim()).toBe(String(LIMITS.pids));
    await second.destroy();
  });

  test.skipIf(REAL.mode !== 'v1')('a reuse writes only limits that are not in place: a CPU quota changed by someone else is put back, the rest stays right', async () => {
    const first = await make();
    const dirOf = (cg: ExecutionCgroup, hier: string) => {
      const f = cg.procsFiles.find((p) => fs.existsSync(path.join(path.dirname(p), hier)));
      return path.dirname(f ?? '');
    };
    const cpuDir = dirOf(first, 'cpu.cfs_quota_us');
    const memDir = dirOf(first, 'memory.limit_in_bytes');
    // What another bubble-sandbox process's lower CPU ceiling does to an existing execution.
    fs.writeFileSync(path.join(cpuDir, 'cpu.cfs_quota_us'), '20000');
    await first.destroy();
    const second = await make();
    expect(second.procsFiles).toEqual(first.procsFiles);
    expect(fs.readFileSync(path.join(cpuDir, 'cpu.cfs_quota_us'), 'utf8').trim()).toBe(String(LIMITS.cpuCores * 100_000));
    expect(fs.readFileSync(path.join(cpuDir, 'cpu.cfs_period_us'), 'utf8').trim()).toBe('100000');
    expect(Number(fs.readFileSync(path.join(memDir, 'memory.limit_in_bytes'), 'utf8'))).toBe(LIMITS.memoryBytes);
    if (fs.existsSync(path.join(memDir, 'memory.memsw.limit_in_bytes'))) {
      expect(Number(fs.readFileSync(path.join(memDir, 'memory.memsw.limit_in_bytes'), 'utf8'))).toBe(LIMITS.memoryBytes);
    }
    expect(fs.readFileSync(path.join(memDir, 'memory.swappiness'), 'utf8').trim()).toBe('0');
    await second.destroy();
  });

  test('an OOM kill is reported for its own execution only, and again for a later one', async () => {
    const a = await make();
    expect((await runIn(a, ALLOCATE(400))).code).not.toBe(0);
    expect((await a.stats()).oomKilled).toBe(true);
    await a.destroy();
    const b = await make();
    expect(b.procsFiles).toEqual(a.procsFiles);
    expect((await runIn(b, 'pass')).code).toBe(0);
    expect((await b.stats()).oomKilled).toBe(false);
    await b.destroy();
    const c = await make();
    expect(c.procsFiles).toEqual(a.procsFiles);
    expect((await runIn(c, ALLOCATE(400))).code).not.toBe(0);
    expect((await c.stats()).oomKilled).toBe(true);
    await c.destroy();
  });

  test('a process left behind by execution N is killed before N+1 gets the cgroup, and N\'s late killAll spares N+1', async () => {
    const n = await make();
    const r = await runIn(n, 'import subprocess\np = subprocess.Popen(["/bin/sleep", "60"], start_new_session=True)\nprint(p.pid)');
    const leftover = Number(r.stdout.trim());
    expect(alive(leftover)).toBe(true);
    await n.destroy();
    expect(alive(leftover)).toBe(false);

    const next = await make();
    expect(next.procsFiles).toEqual(n.procsFiles);
    const pidsNow = next.procsFiles.flatMap((f) => fs.readFileSync(f, 'utf8').split('\n').filter(Boolean));
    expect(pidsNow).toEqual([]);
    const r2 = await runIn(next, 'import subprocess\np = subprocess.Popen(["/bin/sleep", "60"], start_new_session=True)\nprint(p.pid)');
    const mine = Number(r2.stdout.trim());
    await n.killAll(); // the old owner's handle is inert
    expect(alive(mine)).toBe(true);
    expect(await n.stats()).toEqual({ memoryPeakBytes: null, cpuMs: null, oomKilled: false });
    await next.destroy();
    expect(alive(mine)).toBe(false);
  });

  test('a sandbox disposed while it starts is gone before its cgroup is given back (its helper can no longer join it)', async () => {
    const fx = createSandboxFixture({ cgroups: mgr });
    try {
      for (let i = 0; i < 5; i++) {
        const sb = await spawnSandbox(fx.runner.spawnDeps, {
          environment: null, workspaceDir: fx.workspace, volumes: [], command: ['/bin/sleep', '30'], env: {},
          limits: DEFAULT_LIMITS, identity: IS_ROOT ? { uid: TEST_UID, gid: TEST_UID } : null, cpuSeconds: 30, cgroupName: nextName(),
        });
        await sb.dispose(); // at once: the helper may not have joined the cgroup yet
        expect(sb.child.exitCode !== null || sb.child.signalCode !== null).toBe(true);
      }
      const next = await make({ ...LIMITS, memoryBytes: DEFAULT_LIMITS.memoryBytes, pids: DEFAULT_LIMITS.pids, cpuCores: DEFAULT_LIMITS.cpuCores });
      await new Promise((r) => setTimeout(r, 200)); // a straggler would have joined by now
      expect(next.procsFiles.flatMap((f) => fs.readFileSync(f, 'utf8').split('\n').filter(Boolean))).toEqual([]);
      await next.destroy();
    } finally {
      fx.dispose();
    }
  });

  test('other limits get another cgroup; close removes the idle ones', async () => {
    const a = await make();
    const other = await make({ ...LIMITS, pids: 32 });
    expect(other.procsFiles).not.toEqual(a.procsFiles);
    await a.destroy();
    await other.destroy();
    const dirs = [...a.procsFiles, ...other.procsFiles].map((f) => path.dirname(f));
    expect(dirs.every((d) => fs.existsSync(d))).toBe(true); // idle, kept
    const second = await createCgroupManager({ parentName: `${PARENT}-b`, poolSize: 4 });
    const x = await second.create(nextName(), LIMITS);
    await x?.destroy();
    await second.close();
    expect(x?.procsFiles.every((f) => !fs.existsSync(path.dirname(f)))).toBe(true);
  });

  test.skipIf(REAL.mode !== 'v1')('statistics files stay open between reads, give each read current values, and are closed when the cgroup is removed', async () => {
    const plain = await createCgroupManager({ parentName: `${PARENT}-c` });
    const cg = await plain.create(nextName(), LIMITS);
    if (!cg) throw new Error('no cgroup');
    const dirs = cg.procsFiles.map((f) => path.dirname(f));
    const openStatFiles = () => fs.readdirSync('/proc/self/fd').flatMap((fd) => {
      try {
        const target = fs.readlinkSync(`/proc/self/fd/${fd}`);
        return dirs.some((d) => target.startsWith(`${d}/`)) ? [`${fd} ${path.basename(target)}`] : [];
      } catch {
        return []; // closed meanwhile (the readdir's own descriptor)
      }
    }).sort();
    try {
      const s0 = await cg.stats();
      const kept = openStatFiles();
      expect(kept.map((k) => k.split(' ')[1])).toEqual(expect.arrayContaining(['memory.max_usage_in_bytes', 'memory.oom_control']));
      expect((await runIn(cg, ALLOCATE(60) + SPIN)).code).toBe(0);
      const s1 = await cg.stats();
      expect(openStatFiles()).toEqual(kept); // read again through the same descriptors (numbers and files), none opened
      expect(s1.memoryPeakBytes).toBeGreaterThan(60 * MiB);
      expect(s1.memoryPeakBytes).toBeGreaterThan(s0.memoryPeakBytes ?? 0);
      if (s0.cpuMs !== null) expect(s1.cpuMs).toBeGreaterThanOrEqual(s0.cpuMs + 350);
      expect((await runIn(cg, SPIN)).code).toBe(0);
      const s2 = await cg.stats();
      if (s1.cpuMs !== null) expect(s2.cpuMs).toBeGreaterThanOrEqual(s1.cpuMs + 350);
      expect(s2.oomKilled).toBe(false);
    } finally {
      await cg.destroy();
      await plain.close();
    }
    expect(openStatFiles()).toEqual([]);
  });

  test('poolSize 0 removes the cgroup at destroy, as before pooling', async () => {
    const plain = await createCgroupManager({ parentName: `${PARENT}-c` });
    const cg = await plain.create(nextName(), LIMITS);
    await cg?.destroy();
    expect(cg?.procsFiles.every((f) => !fs.existsSync(path.dirname(f)))).toBe(true);
    await plain.close();
  });
});

// cgroup v2 is not mounted with controllers on this host: its reuse is checked against a fake
// tree (regular files stand in for the interface files), for the file handling only.
describe('reused execution cgroups on a fake cgroup v2 tree', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bs-pool-v2-'));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const put = (file: string, text: string) => {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, text);
  };
  const events = (oomKills: number) => `low 0\nhigh 0\nmax 0\noom 0\noom_kill ${oomKills}\noom_group_kill 0\n`;

  test('counters are read against the baseline taken at reuse, memory.peak through the descriptor that reset it; no resettable memory.peak: no reuse', async () => {
    const root = path.join(tmp, 'v2');
    put(path.join(root, 'cgroup.controllers'), 'cpu memory pids\n');
    put(path.join(root, 'cgroup.subtree_control'), '');
    put(path.join(root, 'p', 'cgroup.controllers'), 'cpu memory pids\n');
    put(path.join(root, 'p', 'cgroup.subtree_control'), '');
    const mgr = await createV2Manager({ root, selfCgroup: '/', parentName: 'p', globalLimits: {}, logger: { warn: () => undefined }, poolSize: 2 });
    const first = await mgr.create('e1', LIMITS);
    const dir = path.join(root, 'p', 'e1');
    put(path.join(dir, 'memory.peak'), `${90 * MiB}\n`);
    put(path.join(dir, 'memory.events'), events(1));
    put(path.join(dir, 'cpu.stat'), 'usage_usec 5000000\n');
    expect(await first.stats()).toEqual({ memoryPeakBytes: 90 * MiB, cpuMs: 5000, oomKilled: true });
    await first.destroy();

    const second = await mgr.create('e2', LIMITS); // waits for the reset after destroy()
    expect(second.procsFiles).toEqual(first.procsFiles);
    expect(fs.readFileSync(path.join(dir, 'memory.peak'), 'utf8')).toMatch(/^reset\n/); // written to reset it
    expect(fs.readFileSync(path.join(dir, 'pids.max'), 'utf8')).toBe(String(LIMITS.pids)); // limits written again
    put(path.join(dir, 'memory.peak'), `${3 * MiB}\n`);
    put(path.join(dir, 'cpu.stat'), 'usage_usec 5250000\n');
    expect(await second.stats()).toEqual({ memoryPeakBytes: 3 * MiB, cpuMs: 250, oomKilled: false });
    put(path.join(dir, 'memory.events'), events(2));
    expect((await second.stats()).oomKilled).toBe(true);

    fs.rmSync(path.join(dir, 'memory.peak')); // a kernel without memory.peak (or before 6.12: read-only)
    await second.destroy();
    const third = await mgr.create('e3', LIMITS);
    expect(third.procsFiles).toEqual([path.join(root, 'p', 'e3', 'cgroup.procs')]);
    await mgr.close();
  });
});

describe('the pool and its owners\' calls (a cgroup whose kill the test controls)', () => {
  test('a killAll still running when the cgroup is given back finishes before the cgroup is handed out again', async () => {
    const events: string[] = [];
    let finishKill: () => void = () => undefined;
    const fake: RecyclableCgroup = {
      procsFiles: ['/fake/cgroup.procs'],
      stats: () => Promise.resolve({ memoryPeakBytes: null, cpuMs: null, oomKilled: false }),
      // The owner's first killAll: its processes take a while to die, so it is still looping.
      killAll: () => {
        events.push('kill');
        return events.length === 1 ? new Promise<void>((r) => (finishKill = () => { events.push('first kill done'); r(); })) : Promise.resolve();
      },
      recycle: () => {
        events.push('recycle');
        return Promise.resolve(true);
      },
      remove: () => Promise.resolve(),
    };
    const pool = createCgroupPool(2, () => Promise.resolve(fake));
    const first = await pool.create('exec-1', LIMITS);
    const running = first.killAll(); // e.g. a timeout's kill, its processes still dying
    const given = first.destroy();
    const next = pool.create('exec-2', LIMITS);
    await new Promise((r) => setTimeout(r, 50));
    expect(events).not.toContain('recycle');
    finishKill();
    await Promise.all([running, given]);
    const second = await next;
    expect(second.procsFiles).toEqual(fake.procsFiles);
    expect(events.indexOf('first kill done')).toBeLessThan(events.indexOf('recycle'));
    await pool.close();
  });
});
