// One parent cgroup for all sandboxes, one child per execution: memory (no swap), pids and CPU
// limits plus usage statistics. A session's processes nest one level deeper, in a group of the
// session (createGroup) whose memory and pids limits bound them together. cgroup v2 and v1 are both supported; without a usable hierarchy
// (not root, no delegation, read-only cgroupfs) every operation degrades to a no-op and `reason`
// says why, so a missing cgroup setup never takes the service down.
//
// Layout decisions live in cgroup-v1.ts (parent at the root of each v1 hierarchy) and
// cgroup-v2.ts (parent at the root, as a sibling of our own cgroup, or beside a leaf we move
// ourselves into). This file holds the public API and the file helpers both use.
// Every file operation here is synchronous on purpose (but see writeOptional's offThread): cgroupfs
// files are made by the kernel in memory on each access and never wait for a disk (about 10 µs an
// open/read/close here), while
// the same call through fs.promises costs a hop to libuv's thread pool and back plus its promise
// and FileHandle objects, several times the syscalls' own cost on the service's main thread. The
// functions keep their async signatures (errors still reject) so callers need not change.
import { accessSync, closeSync, openSync, readdirSync, readSync, rmdirSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createV1Manager, findV1Hierarchies } from './cgroup-v1.js';
import { createV2Manager, probeV2, readSelfCgroupV2 } from './cgroup-v2.js';

export interface CgroupLimits { memoryBytes: number; pids: number; cpuCores: number }
export interface CgroupStats { memoryPeakBytes: number | null; cpuMs: number | null; oomKilled: boolean }
export interface ExecutionCgroup {
  /** Files the exec helper writes its own pid into before it execs bwrap, so the sandbox is limited from its first instruction. */
  readonly procsFiles: readonly string[];
  /** Read usage after the process ended (peak memory, cpu time, whether the OOM killer fired). Never rejects. */
  stats(): Promise<CgroupStats>;
  /** Kill every process still in the cgroup. Never rejects (failures are logged). */
  killAll(): Promise<void>;
  /** killAll, then rmdir the cgroup directories (retry briefly while busy). Never rejects. */
  destroy(): Promise<void>;
}
export type CgroupMode = 'v2' | 'v1' | 'none';
export interface CgroupManager {
  readonly mode: CgroupMode;
  /** Why 'none', or what is degraded (e.g. no cpu controller); null when fully working. */
  readonly reason: string | null;
  /** null when mode is 'none'. Rejects with CgroupError on an invalid name or when the cgroup cannot be set up. */
  create(name: string, limits: CgroupLimits): Promise<ExecutionCgroup | null>;
  /**
   * A group directly under the parent whose memory (no swap) and pids limits bound every cgroup
   * made in it together (a session's processes); no CPU quota of its own. null when mode is
   * 'none'. Named like executions (<kind>-<pid>-<n>), so start-up cleanup treats it the same way.
   */
  createGroup(name: string, limits: CgroupLimits): Promise<CgroupGroup | null>;
  /** Remove leftover children and the parent if empty. Never rejects. */
  close(): Promise<void>;
}
/** A cgroup holding other cgroups, never processes of its own. */
export interface CgroupGroup {
  /** A cgroup nested in the group, with its own limits as create() sets them (and the group's above them). */
  create(name: string, limits: CgroupLimits): Promise<ExecutionCgroup>;
  /** Kill everything in the group and its cgroups, then remove them all. Never rejects. */
  destroy(): Promise<void>;
}
/** A manager whose hierarchy works: create() always yields a cgroup (or rejects). */
export interface ActiveCgroupManager extends CgroupManager {
  readonly mode: 'v2' | 'v1';
  create(name: string, limits: CgroupLimits): Promise<ExecutionCgroup>;
  createGroup(name: string, limits: CgroupLimits): Promise<CgroupGroup>;
}

/**
 * A manager for one session's sandboxes: each create() nests in a group made at the first one
 * (so a session that never starts a process costs no cgroup), with the group's limits. After
 * destroy() every create() rejects, so nothing can land in a group being removed.
 */
export interface GroupedCgroups extends CgroupManager {
  destroy(): Promise<void>;
}
export function groupedCgroups(mgr: CgroupManager, groupName: string, groupLimits: CgroupLimits): GroupedCgroups {
  let group: Promise<CgroupGroup | null> | null = null;
  let destroyed = false;
  const ended = () => new CgroupError(`cgroup group ${groupName} is removed`);
  return {
    mode: mgr.mode,
    reason: mgr.reason,
    async create(name: string, limits: CgroupLimits) {
      if (destroyed) throw ended();
      const pending = (group ??= mgr.createGroup(groupName, groupLimits));
      let g: CgroupGroup | null;
      try {
        g = await pending;
      } catch (err) {
        if (group === pending) group = null; // the next start tries again
        throw err;
      }
      if (destroyed) throw ended();
      return g ? g.create(name, limits) : mgr.create(name, limits);
    },
    createGroup: () => Promise.reject(new CgroupError('groups do not nest')),
    close: () => Promise.resolve(),
    async destroy() {
      destroyed = true;
      const g = await group?.catch(() => null);
      await g?.destroy();
    },
  };
}
export interface CgroupLogger { warn(obj: object, msg?: string): void }
export interface CgroupManagerOptions {
  parentName?: string;
  root?: string;
  globalLimits?: GlobalLimits;
  logger?: CgroupLogger;
  /**
   * Execution cgroups kept idle for reuse (cgroup-pool.ts), in the manager and in each session
   * group: destroy() then empties, resets and keeps one instead of removing it. 0 (default): none.
   */
  poolSize?: number;
}
/** Caps on the parent: the sum of every sandbox's memory, processes and CPU (cores, a CFS quota). */
export interface GlobalLimits { memoryBytes?: number; pids?: number; cpuCores?: number }

export class CgroupError extends Error {
  override name = 'CgroupError';
  /** errno code of the underlying failure (EBUSY, EACCES...), when there was one. */
  readonly code: string | undefined;
  constructor(message: string, code?: string) {
    super(message);
    this.code = code;
  }
}

export const DEFAULT_CGROUP_ROOT = '/sys/fs/cgroup';
export const CPU_PERIOD_US = 100_000;
const NAME_RE = /^[A-Za-z0-9_.-]{1,100}$/;

/** A single path component: no separators, no `.`/`..`, so it can never leave the parent. */
export function validateCgroupName(name: string, what = 'cgroup name'): string {
  if (typeof name !== 'string' || !NAME_RE.test(name) || name === '.' || name === '..') {
    throw new CgroupError(`invalid ${what} ${JSON.stringify(name)}: expected [A-Za-z0-9_.-]{1,100}, not . or ..`);
  }
  return name;
}

export function validateLimits(l: CgroupLimits): void {
  if (!Number.isSafeInteger(l.memoryBytes) || l.memoryBytes < 1024 * 1024) throw new CgroupError(`invalid memoryBytes ${l.memoryBytes}`);
  if (!Number.isSafeInteger(l.pids) || l.pids < 1) throw new CgroupError(`invalid pids ${l.pids}`);
  if (!Number.isFinite(l.cpuCores) || l.cpuCores <= 0) throw new CgroupError(`invalid cpuCores ${l.cpuCores}`);
}

/**
 * The handle of a group both hierarchies made: nested cgroups come from `createChild` until the
 * group is destroyed, and `removeGroup` runs once however often destroy() is called.
 */
export function groupHandle(
  groupName: string,
  createChild: (name: string, limits: CgroupLimits) => Promise<ExecutionCgroup>,
  removeGroup: () => Promise<void>,
  onRemoveError: (err: unknown) => void,
): CgroupGroup {
  let destroyed: Promise<void> | null = null;
  return {
    async create(name: string, limits: CgroupLimits): Promise<ExecutionCgroup> {
      validateCgroupName(name);
      validateLimits(limits);
      if (destroyed) throw new CgroupError(`cgroup group ${groupName} is removed`);
      return createChild(name, limits);
    },
    destroy(): Promise<void> {
      destroyed ??= removeGroup().catch(onRemoveError);
      return destroyed;
    },
  };
}

function validateGlobalLimits(g: GlobalLimits): void {
  if (g.cpuCores !== undefined && (!Number.isFinite(g.cpuCores) || g.cpuCores <= 0)) throw new CgroupError(`invalid global cpuCores ${g.cpuCores}`);
}

/** CFS quota for a fractional number of cores; the kernel rejects quotas under 1 ms. */
export function cpuQuotaUs(cores: number): number {
  return Math.max(1000, Math.round(cores * CPU_PERIOD_US));
}

export function errCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}
export function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function exists(file: string): Promise<boolean> {
  try {
    accessSync(file);
    return true;
  } catch {
    return false;
  }
}

export async function readText(file: string): Promise<string | null> {
  return readTextSync(file);
}

/** One buffer for every read: cgroup files are small, and reading in a loop handles the rare large one (cgroup.procs). */
const readBuffer = Buffer.allocUnsafe(16 * 1024);

/**
 * A cgroup file's text, null when it does not exist: open, read until end of file, close (no
 * fstat, no per-call buffer). cgroupfs answers from memory (about 10 µs a file here), while a
 * round trip through libuv's pool cost 0.3 ms per set of reads, a tenth of a run_code call.
 */
export function readTextSync(file: string): string | null {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    if (errCode(err) === 'ENOENT') return null;
    throw err;
  }
  try {
    const chunks: Buffer[] = [];
    for (;;) {
      const n = readSync(fd, readBuffer, 0, readBuffer.length, null);
      if (n === 0) return Buffer.concat(chunks).toString('utf8');
      chunks.push(Buffer.from(readBuffer.subarray(0, n)));
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * The text of a cgroup file kept open, read from its start with pread: cgroupfs generates the
 * contents afresh for every read at offset 0, so an open descriptor gives current values without
 * an open and a close per read (three files a run_code call: about 0.1 ms here, see
 * OpenStatFiles).
 */
export function readOpenTextSync(fd: number): string {
  const chunks: Buffer[] = [];
  for (let pos = 0; ; ) {
    const n = readSync(fd, readBuffer, 0, readBuffer.length, pos);
    if (n === 0) return Buffer.concat(chunks).toString('utf8');
    chunks.push(Buffer.from(readBuffer.subarray(0, n)));
    pos += n;
  }
}

/**
 * Statistics files of one cgroup, opened at the first read and kept open until close(): a kernel's
 * cgroup is read after each of its calls for as long as the session lives. Opened again after
 * close() (a recycled cgroup that is read again).
 */
export class OpenStatFiles<K extends string> {
  private fds: Map<K, number | null> | null = null;

  constructor(private readonly files: Record<K, string | null>) {}

  /** Each file's text; null for a file that is not there (or not asked for). Throws what open or read throw. */
  read(): Record<K, string | null> {
    const fds = this.fds ?? this.open();
    const out = {} as Record<K, string | null>;
    for (const [k, fd] of fds) out[k] = fd === null ? null : readOpenTextSync(fd);
    return out;
  }

  close(): void {
    const fds = this.fds;
    this.fds = null;
    for (const fd of fds?.values() ?? []) {
      if (fd === null) continue;
      try {
        closeSync(fd);
      } catch {
        // already closed: nothing to give back
      }
    }
  }

  private open(): Map<K, number | null> {
    const fds = new Map<K, number | null>();
    try {
      for (const [k, file] of Object.entries(this.files) as [K, string | null][]) {
        let fd: number | null = null;
        if (file !== null) {
          try {
            fd = openSync(file, 'r');
          } catch (err) {
            if (errCode(err) !== 'ENOENT') throw err;
          }
        }
        fds.set(k, fd);
      }
    } catch (err) {
      for (const fd of fds.values()) if (fd !== null) closeSync(fd);
      throw err;
    }
    this.fds = fds;
    return fds;
  }
}

/** Write a cgroup interface file; CgroupError (with the errno code: EBUSY, EINVAL, ESRCH...) when the kernel refuses. */
export function writeTextSync(file: string, value: string): void {
  try {
    writeFileSync(file, value);
  } catch (err) {
    throw new CgroupError(`cannot write ${JSON.stringify(value)} to ${file}: ${errMessage(err)}`, errCode(err));
  }
}

export async function writeText(file: string, value: string): Promise<void> {
  writeTextSync(file, value);
}

/** For interface files a kernel may lack: cgroupfs answers EACCES to creating a missing file. */
export function writeOptionalSync(file: string, value: string): boolean {
  try {
    writeFileSync(file, value);
    return true;
  } catch (err) {
    const code = errCode(err);
    if (code === 'ENOENT' || code === 'EACCES') return false;
    throw new CgroupError(`cannot write ${JSON.stringify(value)} to ${file}: ${errMessage(err)}`, code);
  }
}

/** offThread: through libuv's thread pool, for the writes the kernel may take long over (memory.force_empty). */
export async function writeOptional(file: string, value: string, opts: { offThread?: boolean } = {}): Promise<boolean> {
  if (!opts.offThread) return writeOptionalSync(file, value);
  try {
    await writeFile(file, value);
    return true;
  } catch (err) {
    const code = errCode(err);
    if (code === 'ENOENT' || code === 'EACCES') return false;
    throw new CgroupError(`cannot write ${JSON.stringify(value)} to ${file}: ${errMessage(err)}`, code);
  }
}

/** `key value` lines (memory.events, cpu.stat, memory.oom_control, pids.events). */
export function parseKeyed(text: string | null): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of (text ?? '').split('\n')) {
    const [key, value] = line.trim().split(/\s+/);
    if (key && value !== undefined && /^\d+$/.test(value)) out.set(key, Number(value));
  }
  return out;
}

export function parseIntOrNull(text: string | null): number | null {
  const t = text?.trim();
  return t && /^\d+$/.test(t) ? Number(t) : null;
}

export function readPidsSync(procsFile: string): number[] {
  const text = readTextSync(procsFile);
  return (text ?? '').split('\n').filter((s) => /^\d+$/.test(s)).map(Number);
}

export async function readPids(procsFile: string): Promise<number[]> {
  return readPidsSync(procsFile);
}

/** SIGKILL every pid listed until all files are empty; v1's OOM killer and fork races need the loop. */
export async function killUntilEmpty(procsFiles: readonly string[], timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = new Set(procsFiles.flatMap(readPidsSync));
    if (pids.size === 0) return true;
    if (Date.now() > deadline) return false;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch (err) {
        if (errCode(err) !== 'ESRCH') throw err;
      }
    }
    await sleep(10);
  }
}

/** The cgroup.procs files of dir and of every cgroup below it. */
export async function procsFilesUnder(dir: string): Promise<string[]> {
  const below = await Promise.all((await listChildDirs(dir)).map((c) => procsFilesUnder(path.join(dir, c))));
  return [path.join(dir, 'cgroup.procs'), ...below.flat()];
}

/** rmdir a cgroup and any nested children, retrying while the kernel still reports it busy. */
export async function removeCgroupDir(dir: string, timeoutMs = 2000): Promise<void> {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch (err) {
    if (errCode(err) === 'ENOENT') return;
    throw err;
  }
  for (const e of entries) if (e.isDirectory()) await removeCgroupDir(path.join(dir, e.name), timeoutMs);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      rmdirSync(dir);
      return;
    } catch (err) {
      const code = errCode(err);
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY' || Date.now() > deadline) throw new CgroupError(`cannot remove ${dir}: ${errMessage(err)}`);
      await sleep(20);
    }
  }
}

export async function listChildDirs(dir: string): Promise<string[]> {
  try {
    return readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch (err) {
    if (errCode(err) === 'ENOENT') return [];
    throw err;
  }
}

export async function detectCgroupMode(root: string = DEFAULT_CGROUP_ROOT): Promise<{ mode: CgroupMode; reason: string | null }> {
  try {
    const v2 = await probeV2(root);
    if (v2) return v2.ok ? { mode: 'v2', reason: v2.reason } : { mode: 'none', reason: v2.reason };
    const v1 = await findV1Hierarchies(root);
    if (v1.ok) return { mode: 'v1', reason: v1.reason };
    return { mode: 'none', reason: `no cgroup v2 controllers and no v1 memory/pids hierarchies under ${root}: ${v1.reason}` };
  } catch (err) {
    return { mode: 'none', reason: `cannot inspect ${root}: ${errMessage(err)}` };
  }
}

export function noneManager(reason: string): CgroupManager {
  return {
    mode: 'none',
    reason,
    // async so that a bad name rejects instead of throwing synchronously, as in the other modes
    async create(name: string, limits: CgroupLimits) {
      await Promise.resolve();
      validateCgroupName(name);
      validateLimits(limits);
      return null;
    },
    async createGroup(name: string, limits: CgroupLimits) {
      await Promise.resolve();
      validateCgroupName(name);
      validateLimits(limits);
      return null;
    },
    close: () => Promise.resolve(),
  };
}

export async function createCgroupManager(opts: CgroupManagerOptions = {}): Promise<CgroupManager> {
  const root = opts.root ?? DEFAULT_CGROUP_ROOT;
  const logger = opts.logger ?? { warn: () => undefined };
  const fail = (reason: string): CgroupManager => {
    logger.warn({ root, reason }, 'cgroup limits disabled');
    return noneManager(reason);
  };
  let parentName: string;
  try {
    parentName = validateCgroupName(opts.parentName ?? 'bubble-sandbox', 'parent cgroup name');
    validateGlobalLimits(opts.globalLimits ?? {});
  } catch (err) {
    return fail(errMessage(err));
  }
  const detected = await detectCgroupMode(root);
  if (detected.mode === 'none') return fail(detected.reason ?? 'no usable cgroup hierarchy');
  const common = { root, parentName, globalLimits: opts.globalLimits ?? {}, logger, poolSize: opts.poolSize ?? 0 };
  try {
    let mgr: CgroupManager;
    if (detected.mode === 'v2') {
      mgr = await createV2Manager({ ...common, selfCgroup: await readSelfCgroupV2() });
    } else {
      const hier = await findV1Hierarchies(root);
      if (!hier.ok) return fail(hier.reason);
      mgr = await createV1Manager({ ...common, hierarchies: hier.hierarchies, degraded: hier.reason });
    }
    if (mgr.reason !== null) logger.warn({ root, mode: mgr.mode, reason: mgr.reason }, 'cgroup limits degraded');
    return mgr;
  } catch (err) {
    return fail(`cgroup ${detected.mode} setup failed: ${errMessage(err)}`);
  }
}

/** Cgroup managers open in this process, per parent cgroup (several test apps, or a CLI run beside its own sandbox, share one). */
const openManagers = new Map<string, number>();

/** Count a manager as open on parentKey until the returned release is called (once). */
export function registerManager(parentKey: string): () => void {
  openManagers.set(parentKey, (openManagers.get(parentKey) ?? 0) + 1);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    const n = (openManagers.get(parentKey) ?? 1) - 1;
    if (n <= 0) openManagers.delete(parentKey);
    else openManagers.set(parentKey, n);
  };
}

/**
 * Execution cgroups are named <kind>-<pid>-<n> by the runner (exec-, kernel-). Several processes share the parent
 * (the service, and a CLI run or `check` beside it): a child of another live process is not
 * ours to remove, whether at start-up cleanup or at close. Nor is one of this process while
 * another manager of this process is open on the same parent: it may be that manager's live
 * sandbox (a crash leaves none behind, since the next start has another pid).
 */
export function belongsToAnotherOwner(name: string, parentKey: string): boolean {
  const m = /^[a-z]+-(\d+)-/.exec(name);
  if (!m) return false;
  const pid = Number(m[1]);
  if (pid === process.pid) return (openManagers.get(parentKey) ?? 0) > 1;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errCode(err) === 'EPERM';
  }
}
