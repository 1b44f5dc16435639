// cgroup v2. Controllers reach a cgroup only through its parent's cgroup.subtree_control, and a
// non-root cgroup with controllers enabled there may hold no processes itself ("no internal
// processes"). Where the parent goes, first layout that works wins:
//   - our cgroup is the (namespace) root: <root>/<parent>. The real root is exempt from the rule;
//     a container's namespace root is not, so on EBUSY every process of it moves to a leaf
//     <root>/<parent>-service first (what docker-in-docker and kind do).
//   - otherwise, sibling: <dirname(our cgroup)>/<parent>, which works for root under systemd
//     (slices hold no processes);
//   - otherwise, leaf layout inside our own (delegated) cgroup: our processes move to
//     <own>/<parent>-service and the parent becomes <own>/<parent>, as systemd's delegation
//     docs recommend.
// Anything else fails with every attempt in the reason and the manager degrades to 'none'.
import { mkdir, open, writeFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { createCgroupPool, type RecyclableCgroup } from './cgroup-pool.js';
import type { ActiveCgroupManager, CgroupGroup, CgroupLimits, CgroupLogger, CgroupStats, ExecutionCgroup, GlobalLimits } from './cgroups.js';
import {
  belongsToAnotherOwner, CgroupError, CPU_PERIOD_US, cpuQuotaUs, errCode, errMessage, groupHandle, killUntilEmpty, listChildDirs, parseIntOrNull,
  parseKeyed, procsFilesUnder, readPids, readText, registerManager, removeCgroupDir, sleep, validateCgroupName, validateLimits, writeOptional, writeText,
} from './cgroups.js';

const REQUIRED = ['memory', 'pids'];
const WANTED = ['memory', 'pids', 'cpu'];
const words = (text: string | null) => (text ?? '').split(/\s+/).filter(Boolean).map((w) => w.replace(/^\+/, ''));

export async function probeV2(root: string): Promise<{ ok: boolean; reason: string | null } | null> {
  const text = await readText(path.join(root, 'cgroup.controllers'));
  if (text === null) return null;
  const missing = REQUIRED.filter((c) => !words(text).includes(c));
  if (missing.length) return { ok: false, reason: `cgroup v2 at ${root} lacks the ${missing.join(', ')} controller (not enabled or not delegated)` };
  return { ok: true, reason: words(text).includes('cpu') ? null : 'cgroup v2 without the cpu controller: CPU limit not enforced' };
}

/** Our cgroup v2 path from /proc/self/cgroup ("0::/path"); '/' when there is none. */
export async function readSelfCgroupV2(file = '/proc/self/cgroup'): Promise<string> {
  const line = (await readText(file).catch(() => null))?.split('\n').find((l) => l.startsWith('0::'));
  return line?.slice(3) || '/';
}

/** Enable memory/pids(/cpu) for dir's children; returns the controllers children will have. */
async function enableControllers(dir: string): Promise<string[]> {
  const availableText = await readText(path.join(dir, 'cgroup.controllers'));
  if (availableText === null) throw new CgroupError(`${dir} is not a cgroup v2 directory`);
  const available = words(availableText);
  const missing = REQUIRED.filter((c) => !available.includes(c));
  if (missing.length) throw new CgroupError(`${missing.join(', ')} not available in ${dir} (not delegated)`);
  const want = WANTED.filter((c) => available.includes(c));
  const control = path.join(dir, 'cgroup.subtree_control');
  const enabled = words(await readText(control));
  const toEnable = want.filter((c) => !enabled.includes(c));
  if (toEnable.length === 0) return want;
  await writeText(control, toEnable.map((c) => `+${c}`).join(' '));
  const after = words(await readText(control));
  if (toEnable.some((c) => !after.includes(c))) throw new CgroupError(`${control} did not keep ${toEnable.join(' ')}`);
  return want;
}

async function moveProcessesToLeaf(base: string, leaf: string, logger: CgroupLogger): Promise<void> {
  await mkdir(leaf).catch((err: unknown) => {
    if (errCode(err) !== 'EEXIST') throw err;
  });
  const pids = await readPids(path.join(base, 'cgroup.procs'));
  for (const pid of pids) {
    await writeFile(path.join(leaf, 'cgroup.procs'), String(pid)).catch((err: unknown) => {
      if (errCode(err) !== 'ESRCH') throw new CgroupError(`cannot move pid ${pid} to ${leaf}: ${errMessage(err)}`);
    });
  }
  logger.warn({ from: base, to: leaf, processes: pids.length }, 'moved service processes into a leaf cgroup (cgroup v2 no-internal-processes rule)');
}

interface Layout { layout: 'root' | 'sibling' | 'leaf'; parentDir: string; controllers: string[] }

async function setupParent(root: string, self: string, parentName: string, logger: CgroupLogger): Promise<Layout> {
  // A path outside our cgroup namespace shows up as "/../x": never resolve it against root.
  const usableSelf = self !== '/' && !self.split('/').includes('..');
  const own = path.join(root, self);
  const attempts: { layout: Layout['layout']; base: string; leafOnBusy: boolean }[] = usableSelf
    ? [{ layout: 'sibling', base: path.dirname(own), leafOnBusy: false }, { layout: 'leaf', base: own, leafOnBusy: true }]
    : [{ layout: 'root', base: root, leafOnBusy: true }];
  const failures: string[] = [];
  for (const { layout, base, leafOnBusy } of attempts) {
    try {
      let controllers: string[];
      try {
        controllers = await enableControllers(base);
      } catch (err) {
        if (!leafOnBusy || (err as CgroupError).code !== 'EBUSY') throw err;
        await moveProcessesToLeaf(base, path.join(base, `${parentName}-service`), logger);
        controllers = await enableControllers(base);
      }
      const parentDir = path.join(base, parentName);
      await mkdir(parentDir).catch((err: unknown) => {
        if (errCode(err) !== 'EEXIST') throw new CgroupError(`cannot create ${parentDir}: ${errMessage(err)}`);
      });
      await enableControllers(parentDir);
      return { layout, parentDir, controllers };
    } catch (err) {
      failures.push(`${layout} layout at ${base}: ${errMessage(err)}`);
    }
  }
  throw new CgroupError(`no usable cgroup v2 layout (${failures.join('; ')})`);
}

/** cgroup.kill takes the whole subtree at once, forks included; fall back to a kill loop without it. */
async function killV2(dir: string): Promise<void> {
  const procs = path.join(dir, 'cgroup.procs');
  if (await writeOptional(path.join(dir, 'cgroup.kill'), '1')) {
    const deadline = Date.now() + 2000;
    while (Date.now() < deadline) {
      const events = await readText(path.join(dir, 'cgroup.events'));
      if (events !== null ? parseKeyed(events).get('populated') === 0 : (await readPids(procs)).length === 0) return;
      await sleep(10);
    }
  }
  await writeOptional(path.join(dir, 'pids.max'), '0');
  if (!(await killUntilEmpty(await procsFilesUnder(dir)))) throw new CgroupError(`processes in ${dir} survived SIGKILL`);
}

export function openV2Execution(dir: string, logger: CgroupLogger): ExecutionCgroup {
  const cg = v2Execution(dir, logger, null);
  return { procsFiles: cg.procsFiles, stats: () => cg.stats(), killAll: () => cg.killAll(), destroy: () => cg.remove() };
}

/**
 * What a reused cgroup's counters stood at when it was handed out again. v2 cannot reset
 * cpu.stat or memory.events, so those are subtracted; memory.peak (Linux 6.12+) restarts for the
 * descriptor that writes to it, so that descriptor is kept and read.
 */
interface V2Baseline { usageUsec: number; oomKills: number; peak: FileHandle }

async function readPeak(dir: string, base: V2Baseline | null): Promise<string | null> {
  if (!base) return readText(path.join(dir, 'memory.peak')); // memory.peak needs Linux 5.19
  const buf = Buffer.alloc(64);
  const { bytesRead } = await base.peak.read(buf, 0, buf.length, 0);
  return buf.subarray(0, bytesRead).toString('utf8');
}

/** applyLimits null: never reused (recycle says no). */
function v2Execution(dir: string, logger: CgroupLogger, applyLimits: ((limits: CgroupLimits) => Promise<void>) | null): RecyclableCgroup {
  let removed: Promise<void> | null = null;
  let base: V2Baseline | null = null;
  const killAll = async (): Promise<void> => {
    await killV2(dir).catch((err) => {
      // Already removed (the manager closed it at shutdown): nothing is left to kill.
      if (errCode(err) !== 'ENODEV' && errCode(err) !== 'ENOENT') logger.warn({ cgroup: dir, err: errMessage(err) }, 'cgroup killAll failed');
    });
  };
  const counters = async () => {
    const [events, cpu] = await Promise.all(['memory.events', 'cpu.stat'].map((f) => readText(path.join(dir, f))));
    const ev = parseKeyed(events ?? null);
    return { usageUsec: parseKeyed(cpu ?? null).get('usage_usec'), oomKills: (ev.get('oom_kill') ?? 0) + (ev.get('oom_group_kill') ?? 0) };
  };
  const dropBaseline = async () => {
    const old = base;
    base = null;
    await old?.peak.close().catch(() => undefined);
  };
  return {
    procsFiles: [path.join(dir, 'cgroup.procs')],
    async stats(): Promise<CgroupStats> {
      try {
        const [peak, c] = await Promise.all([readPeak(dir, base), counters()]);
        return {
          memoryPeakBytes: parseIntOrNull(peak),
          cpuMs: c.usageUsec === undefined ? null : Math.round(Math.max(0, c.usageUsec - (base?.usageUsec ?? 0)) / 1000),
          oomKilled: c.oomKills > (base?.oomKills ?? 0),
        };
      } catch (err) {
        logger.warn({ cgroup: dir, err: errMessage(err) }, 'cannot read cgroup stats');
        return { memoryPeakBytes: null, cpuMs: null, oomKilled: false };
      }
    },
    killAll,
    async recycle(limits: CgroupLimits): Promise<boolean> {
      if (!applyLimits) return false;
      let peak: FileHandle | null = null;
      try {
        await killV2(dir);
        // Page cache the last execution left charged goes, so the next peak starts from nothing
        // (EAGAIN when not all of it could be reclaimed: fine).
        await writeOptional(path.join(dir, 'memory.reclaim'), String(limits.memoryBytes)).catch(() => false);
        // Before 6.12 memory.peak is read-only (or missing): the open fails and the cgroup goes.
        peak = await open(path.join(dir, 'memory.peak'), 'r+');
        await peak.write('reset\n');
        const c = await counters();
        await dropBaseline();
        base = { usageUsec: c.usageUsec ?? 0, oomKills: c.oomKills, peak };
        peak = null;
        await applyLimits(limits);
        return true;
      } catch (err) {
        await peak?.close().catch(() => undefined);
        logger.warn({ cgroup: dir, err: errMessage(err) }, 'cgroup not reusable: removing it');
        return false;
      }
    },
    remove(): Promise<void> {
      removed ??= killAll().then(() => removeCgroupDir(dir)).catch((err) => {
        logger.warn({ cgroup: dir, err: errMessage(err) }, 'cannot remove cgroup');
      }).finally(dropBaseline);
      return removed;
    },
  };
}

export interface V2Options {
  root: string;
  /** Our own cgroup path as /proc/self/cgroup shows it ("/" in a container with its own namespace). */
  selfCgroup: string;
  parentName: string;
  globalLimits: GlobalLimits;
  logger: CgroupLogger;
  /** Idle execution cgroups kept for reuse, per pool (the manager's and each group's); 0 (default): none. */
  poolSize?: number;
}

export async function createV2Manager(opts: V2Options): Promise<ActiveCgroupManager & { readonly parentDir: string; readonly layout: string }> {
  const { parentName, logger } = opts;
  const { layout, parentDir, controllers } = await setupParent(opts.root, opts.selfCgroup, parentName, logger);
  if (opts.globalLimits.memoryBytes !== undefined) await writeText(path.join(parentDir, 'memory.max'), String(opts.globalLimits.memoryBytes));
  if (opts.globalLimits.pids !== undefined) await writeText(path.join(parentDir, 'pids.max'), String(opts.globalLimits.pids));
  // v2 lets a child's cpu.max exceed its parent's and applies the lower of the two.
  const cpu = controllers.includes('cpu');
  if (cpu && opts.globalLimits.cpuCores !== undefined) {
    await writeText(path.join(parentDir, 'cpu.max'), `${cpuQuotaUs(opts.globalLimits.cpuCores)} ${CPU_PERIOD_US}`);
  }

  const removeChild = async (name: string) => {
    const dir = path.join(parentDir, name);
    await killV2(dir);
    await removeCgroupDir(dir);
  };
  const removeAllChildren = async () => {
    for (const name of await listChildDirs(parentDir)) {
      if (belongsToAnotherOwner(name, parentDir)) continue;
      await removeChild(name).catch((err) => logger.warn({ cgroup: name, err: errMessage(err) }, 'cannot remove cgroup'));
    }
  };
  const release = registerManager(parentDir);
  await removeAllChildren(); // leftovers of a crashed previous run
  let warnedSwap = false;
  let closed = false;

  const makeDir = async (base: string, name: string): Promise<string> => {
    if (closed) throw new CgroupError('cgroup manager is closed');
    const dir = path.join(base, name);
    await mkdir(dir).catch((err: unknown) => {
      throw new CgroupError(errCode(err) === 'EEXIST' ? `cgroup ${name} already exists` : `cannot create ${dir}: ${errMessage(err)}`);
    });
    return dir;
  };
  /** An execution's limits; again on each reuse (killV2 may have set pids.max to 0). */
  const applyLimits = async (dir: string, limits: CgroupLimits) => {
    await writeText(path.join(dir, 'memory.max'), String(limits.memoryBytes));
    if (!(await writeOptional(path.join(dir, 'memory.swap.max'), '0')) && !warnedSwap) {
      warnedSwap = true;
      logger.warn({ cgroup: dir }, 'memory.swap.max missing: swap usage is not limited');
    }
    await writeOptional(path.join(dir, 'memory.oom.group'), '1'); // one OOM kill takes the whole sandbox
    await writeText(path.join(dir, 'pids.max'), String(limits.pids));
    if (cpu) await writeText(path.join(dir, 'cpu.max'), `${cpuQuotaUs(limits.cpuCores)} ${CPU_PERIOD_US}`);
  };
  const createExecution = async (base: string, name: string, limits: CgroupLimits): Promise<RecyclableCgroup> => {
    const dir = await makeDir(base, name);
    try {
      await applyLimits(dir, limits);
    } catch (err) {
      await removeCgroupDir(dir).catch(() => undefined);
      throw err;
    }
    return v2Execution(dir, logger, (l) => applyLimits(dir, l));
  };
  const pool = createCgroupPool(opts.poolSize ?? 0, (name, limits) => createExecution(parentDir, name, limits));

  return {
    mode: 'v2',
    reason: cpu ? null : 'cgroup v2 without the cpu controller: CPU limit not enforced',
    parentDir,
    layout,
    async create(name: string, limits: CgroupLimits): Promise<ExecutionCgroup> {
      validateCgroupName(name);
      validateLimits(limits);
      return pool.create(name, limits);
    },
    async createGroup(groupName: string, groupLimits: CgroupLimits): Promise<CgroupGroup> {
      validateCgroupName(groupName);
      validateLimits(groupLimits);
      const groupDir = await makeDir(parentDir, groupName);
      try {
        await writeText(path.join(groupDir, 'memory.max'), String(groupLimits.memoryBytes));
        await writeOptional(path.join(groupDir, 'memory.swap.max'), '0');
        await writeText(path.join(groupDir, 'pids.max'), String(groupLimits.pids));
        // The group holds no process itself, so its children may have controllers.
        await enableControllers(groupDir);
      } catch (err) {
        await removeCgroupDir(groupDir).catch(() => undefined);
        throw err;
      }
      const groupPool = createCgroupPool(opts.poolSize ?? 0, (name, limits) => createExecution(groupDir, name, limits));
      return groupHandle(
        groupName,
        (name, limits) => groupPool.create(name, limits),
        () => groupPool.close().then(() => removeChild(groupName)),
        (err) => logger.warn({ cgroup: groupDir, err: errMessage(err) }, 'cannot remove cgroup'),
      );
    },
    async close(): Promise<void> {
      closed = true;
      await pool.close();
      await removeAllChildren().catch((err) => logger.warn({ err: errMessage(err) }, 'cgroup cleanup failed'));
      release();
      // The parent stays: another bubble-sandbox process (the service beside a CLI run) may be
      // creating a child in it right now, and an empty cgroup costs nothing.
    },
  };
}
