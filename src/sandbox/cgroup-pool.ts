// Execution cgroups kept for reuse instead of made and removed per execution. A manager (and
// each session group) has a pool: destroy() of an execution cgroup kills everything left in it,
// waits until it is empty, resets its counters (or takes baselines where a counter cannot be
// reset), writes its limits again and keeps it idle for the next create() with the same limits.
// destroy() resolves once nothing is left running in the cgroup (as before); the reset and the
// limits are written after that, off the caller's path, and only then is the cgroup handed out.
// The caller's interface does not change: create(name, limits) → ExecutionCgroup whose destroy()
// now means "give back". A handle given back is inert (killAll does nothing, stats reads nothing),
// so a late call by its old owner never touches the next execution in the same directory.
import type { CgroupLimits, CgroupStats, ExecutionCgroup } from './cgroups.js';

/** A cgroup the hierarchy code can make fit for another execution. */
export interface RecyclableCgroup {
  readonly procsFiles: readonly string[];
  stats(): Promise<CgroupStats>;
  killAll(): Promise<void>;
  /**
   * Kill every process, wait until none is left, reset the usage counters (or take baselines),
   * write `limits` again. Resolves false when any of it failed: the cgroup must not be reused.
   * Never rejects.
   */
  recycle(limits: CgroupLimits): Promise<boolean>;
  /** Kill what is left and remove the directories. Never rejects. */
  remove(): Promise<void>;
}

export interface CgroupPool {
  create(name: string, limits: CgroupLimits): Promise<ExecutionCgroup>;
  /** Idle cgroups now held (for tests and metrics). */
  idle(): number;
  /** From now on destroy() removes; the idle cgroups are removed here. */
  close(): Promise<void>;
}

const NO_STATS: CgroupStats = { memoryPeakBytes: null, cpuMs: null, oomKilled: false };
const keyOf = (l: CgroupLimits) => `${l.memoryBytes}/${l.pids}/${l.cpuCores}`;

/**
 * `make` creates a fresh cgroup; `size` is how many idle cgroups the pool keeps over all limit
 * sets (0: no reuse, every destroy() removes, as before pooling).
 */
export function createCgroupPool(size: number, make: (name: string, limits: CgroupLimits) => Promise<RecyclableCgroup>): CgroupPool {
  const idle = new Map<string, RecyclableCgroup[]>();
  let idleCount = 0;
  let closed = false;
  /** Cgroups being emptied and reset, by limits: a create() with the same limits waits for one rather than making another. */
  const recycling = new Map<string, Set<Promise<void>>>();
  const recyclingCount = () => [...recycling.values()].reduce((n, s) => n + s.size, 0);

  const take = (limits: CgroupLimits): RecyclableCgroup | null => {
    const list = idle.get(keyOf(limits));
    const cg = list?.pop() ?? null;
    if (cg) idleCount -= 1;
    return cg;
  };

  const giveBack = async (cg: RecyclableCgroup, limits: CgroupLimits): Promise<void> => {
    if (closed || size === 0 || idleCount >= size || !(await cg.recycle(limits)) || closed) {
      await cg.remove();
      return;
    }
    const key = keyOf(limits);
    idle.set(key, [...(idle.get(key) ?? []), cg]);
    idleCount += 1;
  };

  const handle = (cg: RecyclableCgroup, limits: CgroupLimits): ExecutionCgroup => {
    let released = false;
    let destroyed: Promise<void> | null = null;
    // The owner's killAll calls still running: one that loops while the last processes die would
    // read the procs files again after the cgroup was handed out, and kill the next execution's
    // processes. destroy() gives the cgroup back only once they are done.
    const killing = new Set<Promise<void>>();
    return {
      procsFiles: cg.procsFiles,
      stats: () => (released ? Promise.resolve(NO_STATS) : cg.stats()),
      killAll(): Promise<void> {
        if (released) return Promise.resolve();
        const k: Promise<void> = cg.killAll().finally(() => killing.delete(k));
        killing.add(k);
        return k;
      },
      destroy(): Promise<void> {
        released = true;
        destroyed ??= (async () => {
          await Promise.all([...killing].map((k) => k.catch(() => undefined)));
          // Not to be kept: removed before destroy() resolves, as without a pool.
          if (closed || size === 0 || idleCount + recyclingCount() >= size) return cg.remove();
          await cg.killAll();
          const key = keyOf(limits);
          const set = recycling.get(key) ?? new Set<Promise<void>>();
          recycling.set(key, set);
          const p: Promise<void> = giveBack(cg, limits).finally(() => set.delete(p));
          set.add(p);
        })();
        return destroyed;
      },
    };
  };

  return {
    async create(name: string, limits: CgroupLimits): Promise<ExecutionCgroup> {
      const pending = recycling.get(keyOf(limits));
      if (!closed && !idle.get(keyOf(limits))?.length && pending?.size) await Promise.race(pending);
      const reused = closed ? null : take(limits);
      return handle(reused ?? (await make(name, limits)), limits);
    },
    idle: () => idleCount,
    async close(): Promise<void> {
      closed = true;
      await Promise.all([...recycling.values()].flatMap((s) => [...s]));
      const all = [...idle.values()].flat();
      idle.clear();
      idleCount = 0;
      for (const cg of all) await cg.remove();
    },
  };
}
