// What decides whether a warm sandbox may serve a request, as plain functions: the key of
// everything that shapes a sandbox, the environment variables rule, the shadowing of imported
// modules by workspace entries; and the host-side helpers of the pool (available memory, leftover
// directories of a crashed run).
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Environment } from '../environments.js';
import type { ResourceLimits, VolumeMount } from '../types.js';

/** Everything that shapes a sandbox when it is built, so a warm one is only used where a cold one would be the same. */
export interface WarmTarget {
  environment: Environment | null;
  workspaceDir: string;
  volumes: VolumeMount[];
  limits: ResourceLimits;
  identity: { uid: number; gid: number } | null;
  netnsPath?: string | undefined;
  /** Variables over the environment's base ones the sandbox starts with (a session's network variables). */
  env?: Record<string, string> | undefined;
}

/** MemAvailable of /proc/meminfo in bytes; null where there is none. */
export function readMemAvailable(): number | null {
  try {
    const m = /^MemAvailable:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** Whether a variable is read by the interpreter at start-up (a script with it changed must start cold). */
export const STARTUP_VARIABLE = /^(PYTHON|LC_|LANG$|LANGUAGE$|MPLBACKEND$|OPENBLAS|OMP_|MKL_)/;

export function targetKey(t: WarmTarget): string {
  const e = t.environment;
  return JSON.stringify([
    e === null ? null : [e.name, e.kind, e.venvDir, e.rootDir, e.writableRoot, e.writableUsrDir ?? null, e.preload ?? []],
    t.workspaceDir,
    t.volumes.map((v) => [v.name, v.hostDir, v.mode]),
    t.limits,
    t.identity,
    t.netnsPath ?? null,
  ]);
}

export function sameEnv(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && a[k] === b[k]);
}

/**
 * The file name endings a module is found by on a sys.path directory when the launcher does not say
 * (it reports its interpreter's own: source, bytecode and extension-module endings, such as
 * .cpython-311-x86_64-linux-gnu.so).
 */
export const DEFAULT_MODULE_SUFFIXES: readonly string[] = ['.py', '.pyc', '.abi3.so', '.so'];

/**
 * Largest workspace directory (st_size) listed whole. A directory's size grows with its entries
 * on the usual filesystems (ext4: at least 12 bytes an entry, so at most ~1,400 entries here; tmpfs
 * 20; xfs and btrfs about the names' length), and listing a small one (about 10 µs) is cheaper than
 * asking about each candidate name.
 */
const LIST_MAX_DIR_BYTES = 16 * 1024;

/**
 * Whether a top-level workspace entry would shadow a module the warm launcher imported, in a cold
 * run (/workspace is on sys.path): an entry named like the module (a package, a namespace
 * directory, or any file of that name, to be safe) or the module's name followed by one of the
 * interpreter's module `suffixes`. Bounded whatever the workspace holds: a small directory is
 * listed, a larger one is asked about each candidate name (lstat), so a workspace of tens of
 * thousands of entries costs no more than the candidates.
 */
export function shadowsImported(workspaceDir: string, modules: readonly string[], suffixes: readonly string[] = DEFAULT_MODULE_SUFFIXES): boolean {
  const names = new Set(modules);
  const shadows = (entry: string) => names.has(entry) || suffixes.some((s) => entry.endsWith(s) && names.has(entry.slice(0, -s.length)));
  try {
    if (fs.statSync(workspaceDir).size <= LIST_MAX_DIR_BYTES) return fs.readdirSync(workspaceDir).some(shadows);
  } catch {
    return true; // cannot tell: run cold
  }
  // A name that cannot be a directory entry (empty, '.', '..', with a '/') matches none.
  const candidates = modules.flatMap((m) => ['', ...suffixes].map((s) => m + s)).filter((n) => n !== '' && n !== '.' && n !== '..' && !n.includes('/') && !n.includes('\0'));
  return someExists(workspaceDir, candidates);
}

/** Whether any of the names is an entry of dir (lstat: a dangling link counts too); an error other than "no such entry" counts as one. */
function someExists(dir: string, names: Iterable<string>): boolean {
  for (const name of names) {
    try {
      fs.lstatSync(path.join(dir, name));
      return true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') return true;
    }
  }
  return false;
}

/** Remove private /sandbox directories that a process no longer running left behind (a crash). */
export function clearWarmLeftovers(dir: string, logger?: Logger): void {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(/^(\d+)-\d+$/.exec(name)?.[1] ?? NaN);
    if (Number.isSafeInteger(pid) && (pid === process.pid || processAlive(pid))) continue;
    fs.rmSync(path.join(dir, name), { recursive: true, force: true });
    logger?.info({ dir: name }, 'removed a warm sandbox directory left by an earlier run');
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether a promise has settled, looked at without waiting for it (on the next turn). */
export async function isSettled(p: Promise<unknown>): Promise<boolean> {
  const pending = Symbol('pending');
  return (await Promise.race([p.then(() => true, () => true), Promise.resolve(pending)])) !== pending;
}
