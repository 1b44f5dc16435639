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

/** Whether a top-level workspace entry would shadow a module the warm launcher imported, in a cold run (/workspace is on sys.path). */
export function shadowsImported(workspaceDir: string, modules: string[]): boolean {
  const names = new Set(modules);
  let entries: string[];
  try {
    entries = fs.readdirSync(workspaceDir);
  } catch {
    return true; // cannot tell: run cold
  }
  return entries.some((n) => names.has(moduleNameOf(n)));
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

/** The top-level module a workspace entry would provide on sys.path (a package or namespace directory keeps its name). */
function moduleNameOf(entry: string): string {
  if (entry.endsWith('.py')) return entry.slice(0, -3);
  if (entry.endsWith('.pyc')) return entry.slice(0, -4);
  if (entry.endsWith('.so')) return entry.split('.', 1)[0] ?? entry;
  return entry;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
