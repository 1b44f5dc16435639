// cgroup v1: one hierarchy per controller (cpu and cpuacct are sometimes co-mounted as
// `cpu,cpuacct`, with or without `cpu`/`cpuacct` symlinks). The parent sits at the root of each
// hierarchy as mounted here (in a container that is the container's own cgroup), so an execution
// is one directory per distinct hierarchy and the wrapper joins each of them.
import { existsSync, mkdirSync, rmdirSync } from 'node:fs';
import { mkdir, readdir, realpath, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { createCgroupPool, type RecyclableCgroup } from './cgroup-pool.js';
import type { ActiveCgroupManager, CgroupGroup, CgroupLimits, CgroupLogger, CgroupStats, ExecutionCgroup, GlobalLimits } from './cgroups.js';
import {
  belongsToAnotherOwner, CgroupError, CPU_PERIOD_US, cpuQuotaUs, errCode, errMessage, exists, groupHandle, killUntilEmpty, listChildDirs, registerManager,
  OpenStatFiles, parseIntOrNull, parseKeyed, procsFilesUnder, readText, readTextSync, removeCgroupDir, validateCgroupName, validateLimits, writeOptional,
  writeOptionalSync, writeText, writeTextSync,
} from './cgroups.js';

export interface V1Hierarchies { memory: string; pids: string; cpu: string | null; cpuacct: string | null }
type V1Probe = { ok: true; hierarchies: V1Hierarchies; reason: string | null } | { ok: false; reason: string };

// A file only that controller's hierarchy has; `tasks` tells v1 from a v2 mount for pids.
const MARKERS = { memory: 'memory.limit_in_bytes', pids: 'tasks', cpu: 'cpu.cfs_quota_us', cpuacct: 'cpuacct.usage' } as const;

async function findHierarchy(root: string, controller: keyof typeof MARKERS): Promise<string | null> {
  let names: string[];
  try {
    names = await readdir(root);
  } catch {
    return null;
  }
  const candidates = [controller, ...names.filter((n) => n !== controller && n.split(',').includes(controller))];
  for (const name of candidates) {
    const dir = path.join(root, name);
    if (await exists(path.join(dir, MARKERS[controller]))) return realpath(dir);
  }
  return null;
}

export async function findV1Hierarchies(root: string): Promise<V1Probe> {
  const [memory, pids, cpu, cpuacct] = await Promise.all([
    findHierarchy(root, 'memory'), findHierarchy(root, 'pids'), findHierarchy(root, 'cpu'), findHierarchy(root, 'cpuacct'),
  ]);
  if (!memory || !pids) return { ok: false, reason: `v1 ${!memory ? 'memory' : 'pids'} hierarchy not found` };
  const missing = [cpu ? null : 'cpu (CPU limit not enforced)', cpuacct ? null : 'cpuacct (no CPU time)'].filter(Boolean);
  const reason = missing.length ? `cgroup v1 without ${missing.join(', ')}` : null;
  return { ok: true, hierarchies: { memory, pids, cpu, cpuacct }, reason };
}

/** memsw must stay >= limit at every step, so open it up, set the limit, then pin memsw to it. */
async function setMemoryLimit(dir: string, bytes: number): Promise<void> {
  const memsw = path.join(dir, 'memory.memsw.limit_in_bytes');
  const hasMemsw = await exists(memsw);
  if (hasMemsw) await writeText(memsw, '-1');
  await writeText(path.join(dir, 'memory.limit_in_bytes'), String(bytes));
  if (hasMemsw) await writeText(memsw, String(bytes));
}
/** setMemoryLimit for an execution's cgroup, without the thread pool (cgroups.ts says why). */
function setMemoryLimitSync(dir: string, bytes: number): void {
  const memsw = path.join(dir, 'memory.memsw.limit_in_bytes');
  const hasMemsw = existsSync(memsw);
  if (hasMemsw) writeTextSync(memsw, '-1');
  writeTextSync(path.join(dir, 'memory.limit_in_bytes'), String(bytes));
  if (hasMemsw) writeTextSync(memsw, String(bytes));
}

/** A cgroup's CFS quota and period as written (quota -1: none), or null where unreadable. */
function readCfs(dir: string): { quota: number; period: number } | null {
  const q = Number(readTextSync(path.join(dir, 'cpu.cfs_quota_us'))?.trim());
  const p = Number(readTextSync(path.join(dir, 'cpu.cfs_period_us'))?.trim());
  return Number.isSafeInteger(q) && Number.isSafeInteger(p) ? { quota: q, period: p } : null;
}

/** A cgroup's CFS quota per CPU_PERIOD_US (rounded down), or null when it has none (-1). */
async function quotaPerPeriod(dir: string): Promise<number | null> {
  return quotaPerPeriodSync(dir);
}
function quotaPerPeriodSync(dir: string): number | null {
  const cfs = readCfs(dir);
  if (!cfs || cfs.quota < 0 || cfs.period <= 0) return null;
  return Math.floor((cfs.quota * CPU_PERIOD_US) / cfs.period);
}

/**
 * The CPU ceiling of all sandboxes. v1, unlike v2, refuses (EINVAL) a child quota above its
 * parent's and a parent quota below a child's, so: lift the parent, bring children above the new
 * ceiling down to it (executions of this or another bubble-sandbox process on the same parent: the
 * ceiling binds them anyway), then set it. A child created in between makes the last write fail:
 * try again.
 */
async function setCpuCeiling(parentDir: string, cores: number): Promise<void> {
  const quota = cpuQuotaUs(cores);
  const quotaFile = path.join(parentDir, 'cpu.cfs_quota_us');
  // Deepest first: a session group's processes sit one level down, and v1 checks the whole subtree.
  const lower = async (dir: string): Promise<void> => {
    for (const child of await listChildDirs(dir)) {
      const childDir = path.join(dir, child);
      await lower(childDir);
      const childQuota = await quotaPerPeriod(childDir);
      if (childQuota === null || childQuota <= quota) continue;
      // Gone meanwhile (ENOENT) is fine; a period first, so the quota means what it says.
      if (await writeOptional(path.join(childDir, 'cpu.cfs_period_us'), String(CPU_PERIOD_US))) {
        await writeOptional(path.join(childDir, 'cpu.cfs_quota_us'), String(quota));
      }
    }
  };
  for (let attempt = 1; ; attempt++) {
    await writeText(quotaFile, '-1');
    await writeText(path.join(parentDir, 'cpu.cfs_period_us'), String(CPU_PERIOD_US));
    await lower(parentDir);
    try {
      await writeText(quotaFile, String(quota));
      return;
    } catch (err) {
      if ((err as CgroupError).code !== 'EINVAL' || attempt >= 5) throw err;
    }
  }
}

/** The lowest quota from dir up to the parent (a group has none: -1 inherits), or null. */
function ceilingFrom(dir: string, parentDir: string): number | null {
  let ceiling: number | null = null;
  for (let d = dir; ; d = path.dirname(d)) {
    const q = quotaPerPeriodSync(d);
    if (q !== null) ceiling = ceiling === null ? q : Math.min(ceiling, q);
    if (d === parentDir || d === path.dirname(d)) return ceiling;
  }
}

interface V1Options {
  root: string;
  parentName: string;
  globalLimits: GlobalLimits;
  logger: CgroupLogger;
  hierarchies: V1Hierarchies;
  degraded: string | null;
  /** Idle execution cgroups kept for reuse, per pool (the manager's and each group's); 0 (default): none. */
  poolSize?: number;
}

export async function createV1Manager(opts: V1Options): Promise<ActiveCgroupManager> {
  const { hierarchies: h, parentName, logger } = opts;
  const roots = [...new Set([h.memory, h.pids, h.cpu, h.cpuacct].filter((d): d is string => d !== null))];
  const parents = roots.map((r) => path.join(r, parentName));
  const under = (hier: string | null, name: string) => (hier ? path.join(hier, parentName, name) : null);

  const created: string[] = [];
  try {
    for (const dir of parents) {
      try {
        await mkdir(dir);
        created.push(dir);
      } catch (err) {
        if (errCode(err) !== 'EEXIST') throw new CgroupError(`cannot create ${dir}: ${errMessage(err)}`);
      }
    }
    const memParent = path.join(h.memory, parentName);
    // Pre-5.x kernels default to flat accounting, which would make the global cap meaningless.
    if ((await readText(path.join(memParent, 'memory.use_hierarchy')))?.trim() === '0') {
      await writeOptional(path.join(memParent, 'memory.use_hierarchy'), '1').catch(() => false);
    }
    if (opts.globalLimits.memoryBytes !== undefined) await setMemoryLimit(memParent, opts.globalLimits.memoryBytes);
    if (opts.globalLimits.pids !== undefined) {
      await writeText(path.join(h.pids, parentName, 'pids.max'), String(opts.globalLimits.pids));
    }
    if (opts.globalLimits.cpuCores !== undefined && h.cpu) await setCpuCeiling(path.join(h.cpu, parentName), opts.globalLimits.cpuCores);
  } catch (err) {
    for (const dir of created) await rmdir(dir).catch(() => undefined);
    throw err;
  }

  // rel: a cgroup's path under the parent: its name, or <group>/<name> for one nested in a group.
  async function removeChild(rel: string): Promise<void> {
    const dirs = roots.map((r) => path.join(r, parentName, rel));
    // pids.max=0 is hierarchical: nothing in a group's cgroups can fork while we collect pids.
    await writeOptional(path.join(h.pids, parentName, rel, 'pids.max'), '0').catch(() => false);
    const procsFiles = (await Promise.all(dirs.map(procsFilesUnder))).flat();
    if (!(await killUntilEmpty(procsFiles))) {
      throw new CgroupError(`processes of ${rel} survived SIGKILL`);
    }
    for (const dir of dirs) await removeCgroupDir(dir);
  }

  async function removeAllChildren(): Promise<void> {
    const names = new Set((await Promise.all(parents.map(listChildDirs))).flat());
    for (const name of names) {
      if (belongsToAnotherOwner(name, parentKey)) continue;
      await removeChild(name).catch((err) => logger.warn({ cgroup: name, err: errMessage(err) }, 'cannot remove cgroup'));
    }
  }

  const parentKey = parents.join(':');
  const release = registerManager(parentKey);
  // A crashed previous run may have left executions and session groups behind; they are ours by name.
  await removeAllChildren();
  let closed = false;

  /**
   * Memory, pids and (not for a group) CPU limits of the cgroup at rel; again on each reuse.
   * `previous`: the limits this code last wrote there (a reused cgroup). The memory files are
   * then left alone when the limit is the same (only this function writes an execution's memory
   * files), and the CPU files are read and written only when they differ from what is due (another
   * process's setCpuCeiling may have lowered them). pids.max is always written: emptying the
   * cgroup set it to 0.
   */
  function applyLimits(rel: string, limits: CgroupLimits, group: boolean, previous: CgroupLimits | null = null): void {
    const mem = path.join(h.memory, parentName, rel);
    if (previous?.memoryBytes !== limits.memoryBytes) {
      setMemoryLimitSync(mem, limits.memoryBytes);
      writeOptionalSync(path.join(mem, 'memory.swappiness'), '0');
    }
    writeTextSync(path.join(h.pids, parentName, rel, 'pids.max'), String(limits.pids));
    const cpu = under(h.cpu, rel);
    if (cpu && !group) {
      // Never above an ancestor's quota (v1 refuses it); read, not remembered, because another
      // bubble-sandbox process sharing the parent may have set a lower ceiling since.
      const ceiling = ceilingFrom(path.dirname(cpu), path.join(h.cpu ?? '', parentName));
      const quota = ceiling === null ? cpuQuotaUs(limits.cpuCores) : Math.min(cpuQuotaUs(limits.cpuCores), ceiling);
      const now = previous ? readCfs(cpu) : null;
      if (now?.period !== CPU_PERIOD_US || now.quota !== quota) {
        writeTextSync(path.join(cpu, 'cpu.cfs_period_us'), String(CPU_PERIOD_US));
        writeTextSync(path.join(cpu, 'cpu.cfs_quota_us'), String(quota));
      }
    }
  }

  /** One directory per hierarchy at rel, with memory, pids and (not for a group) CPU limits. */
  async function makeCgroup(rel: string, limits: CgroupLimits, group: boolean): Promise<string[]> {
    if (closed) throw new CgroupError('cgroup manager is closed');
    const dirs: string[] = [];
    try {
      for (const r of roots) {
        const dir = path.join(r, parentName, rel);
        try {
          mkdirSync(dir);
        } catch (err) {
          throw new CgroupError(errCode(err) === 'EEXIST' ? `cgroup ${rel} already exists` : `cannot create ${dir}: ${errMessage(err)}`);
        }
        dirs.push(dir);
      }
      applyLimits(rel, limits, group);
    } catch (err) {
      for (const dir of dirs) {
        try {
          rmdirSync(dir);
        } catch {
          // best effort: start-up cleanup of the next run removes what is left
        }
      }
      throw err;
    }
    return dirs;
  }

  async function createExecution(rel: string, limits: CgroupLimits): Promise<RecyclableCgroup> {
    const dirs = await makeCgroup(rel, limits, false);
    const files = { memDir: path.join(h.memory, parentName, rel), pidsDir: path.join(h.pids, parentName, rel), cpuacctDir: under(h.cpuacct, rel) };
    // The limits last written there, so a reuse writes only what changed.
    let applied = limits;
    const reapply = (l: CgroupLimits) => {
      applyLimits(rel, l, false, applied);
      applied = l;
    };
    return v1Execution(rel, dirs, files, { removeChild, applyLimits: reapply }, logger);
  }
  const pool = createCgroupPool(opts.poolSize ?? 0, createExecution);

  return {
    mode: 'v1',
    reason: opts.degraded,
    async create(name: string, limits: CgroupLimits): Promise<ExecutionCgroup> {
      validateCgroupName(name);
      validateLimits(limits);
      return pool.create(name, limits);
    },
    async createGroup(groupName: string, groupLimits: CgroupLimits): Promise<CgroupGroup> {
      validateCgroupName(groupName);
      validateLimits(groupLimits);
      await makeCgroup(groupName, groupLimits, true);
      const groupPool = createCgroupPool(opts.poolSize ?? 0, (name, limits) => createExecution(path.join(groupName, name), limits));
      return groupHandle(
        groupName,
        (name, limits) => groupPool.create(name, limits),
        // Idle cgroups go with the group's directory.
        () => groupPool.close().then(() => removeChild(groupName)),
        (err) => logger.warn({ cgroup: groupName, err: errMessage(err) }, 'cannot remove cgroup'),
      );
    },
    async close(): Promise<void> {
      closed = true;
      await pool.close();
      try {
        await removeAllChildren();
      } catch (err) {
        logger.warn({ err: errMessage(err) }, 'cgroup cleanup failed');
      }
      release();
      // The parent stays: another bubble-sandbox process (the service beside a CLI run) may be
      // creating a child in it right now, and an empty cgroup costs nothing.
    },
  };
}

interface V1Ops {
  removeChild(rel: string): Promise<void>;
  /** Limits for the next execution, after the cgroup was emptied (pids.max is 0 then). Throws CgroupError. */
  applyLimits(limits: CgroupLimits): void;
}

function v1Execution(
  name: string, dirs: string[], { memDir, pidsDir, cpuacctDir }: { memDir: string; pidsDir: string; cpuacctDir: string | null },
  ops: V1Ops, logger: CgroupLogger,
): RecyclableCgroup {
  const procsFiles = dirs.map((d) => path.join(d, 'cgroup.procs'));
  // Counters v1 cannot reset (oom_kill) and cpuacct.usage should its reset fail: the value at the
  // last reuse, subtracted from what stats() reads.
  let oomKillBase = 0;
  let cpuNsBase = 0;
  let removed: Promise<void> | null = null;
  // pids.max is 0 since the last emptyOut (until applyLimits writes the next execution's): the
  // pool's killAll and the recycle right after it need not write it twice.
  let frozen = false;
  const emptyOut = async (): Promise<boolean> => {
    // pids.max=0 first: nothing can fork while we collect pids.
    if (!frozen) {
      try {
        frozen = writeOptionalSync(path.join(pidsDir, 'pids.max'), '0');
      } catch {
        // the kill loop below still runs; a fork race only makes it take longer
      }
    }
    return killUntilEmpty(procsFiles);
  };
  const killAll = async (): Promise<void> => {
    try {
      if (!(await emptyOut())) logger.warn({ cgroup: name }, 'processes survived SIGKILL');
    } catch (err) {
      // Already removed (the manager closed it at shutdown): nothing is left to kill.
      if (errCode(err) === 'ENODEV' || errCode(err) === 'ENOENT') return;
      logger.warn({ cgroup: name, err: errMessage(err) }, 'cgroup killAll failed');
    }
  };
  // Read after every call of a session's interpreter: kept open until the cgroup is removed.
  const statFiles = new OpenStatFiles({
    peak: path.join(memDir, 'memory.max_usage_in_bytes'),
    oom: path.join(memDir, 'memory.oom_control'),
    cpu: cpuacctDir === null ? null : path.join(cpuacctDir, 'cpuacct.usage'),
  });
  const readOomKills = () => parseKeyed(readTextSync(path.join(memDir, 'memory.oom_control'))).get('oom_kill') ?? 0;
  const readCpuNs = () => (cpuacctDir ? parseIntOrNull(readTextSync(path.join(cpuacctDir, 'cpuacct.usage'))) : null);
  return {
    procsFiles,
    async stats(): Promise<CgroupStats> {
      try {
        const files = statFiles.read();
        const peak = files.peak;
        const oomKills = parseKeyed(files.oom).get('oom_kill') ?? 0;
        const ns = files.cpu === null ? null : parseIntOrNull(files.cpu);
        // memory.failcnt counts hits of the limit (reclaim), not kills: only oom_kill means a kill.
        return {
          memoryPeakBytes: parseIntOrNull(peak),
          cpuMs: ns === null ? null : Math.round(Math.max(0, ns - cpuNsBase) / 1e6),
          oomKilled: oomKills > oomKillBase,
        };
      } catch (err) {
        statFiles.close();
        // Removed under a live handle (the manager's close, its group's removal): nothing to read,
        // as a cgroup that is gone answered before its files were kept open.
        if (errCode(err) !== 'ENODEV' && errCode(err) !== 'ENOENT') logger.warn({ cgroup: name, err: errMessage(err) }, 'cannot read cgroup stats');
        return { memoryPeakBytes: null, cpuMs: null, oomKilled: false };
      }
    },
    killAll,
    async recycle(limits: CgroupLimits): Promise<boolean> {
      try {
        if (!(await emptyOut())) return false;
        // Give back what the last execution left charged (page cache of workspace files), so the
        // next peak starts from nothing; then the high-water mark restarts at the current usage.
        // The one cgroup write that is not quick: the kernel reclaims every page still charged and
        // waits for each CPU to drain its page lists (milliseconds on a busy machine, measured
        // 11 ms a reuse with 4 clients at load 8). Through the thread pool, so it blocks a pool
        // thread instead of the service's main thread.
        await writeOptional(path.join(memDir, 'memory.force_empty'), '0', { offThread: true });
        writeTextSync(path.join(memDir, 'memory.max_usage_in_bytes'), '0');
        writeOptionalSync(path.join(memDir, 'memory.failcnt'), '0');
        // An empty cgroup's usage stays at the 0 just written: read it back only where the reset failed.
        const cpuReset = cpuacctDir !== null && writeOptionalSync(path.join(cpuacctDir, 'cpuacct.usage'), '0');
        oomKillBase = readOomKills();
        cpuNsBase = cpuReset ? 0 : (readCpuNs() ?? 0);
        ops.applyLimits(limits);
        frozen = false;
        return true;
      } catch (err) {
        logger.warn({ cgroup: name, err: errMessage(err) }, 'cgroup not reusable: removing it');
        return false;
      }
    },
    remove(): Promise<void> {
      statFiles.close();
      removed ??= killAll().then(() => ops.removeChild(name)).catch((err) => {
        logger.warn({ cgroup: name, err: errMessage(err) }, 'cannot remove cgroup');
      });
      return removed;
    },
  };
}
