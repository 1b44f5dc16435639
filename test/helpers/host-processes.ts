// The host's process table as tests see it from outside the sandbox: which programs run, under
// which uid, below which parent. Several tests exist to prove that nothing is left behind.
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

export interface HostProcess {
  pid: number;
  ppid: number;
  /** Real uid (first field of `Uid:` in /proc/<pid>/status). */
  uid: number;
  /** One letter: R, S, D, Z (zombie: exited, only its pid entry waits to be reaped)... */
  state: string;
  /** Start time in clock ticks: tells a process from a later one that reuses its pid. */
  start: string;
  /** /proc/<pid>/cmdline as the kernel gives it: every argument followed by a NUL. */
  cmdline: string;
  argv: string[];
  /** The arguments joined by spaces. */
  command: string;
}

/** One process, or null when it is gone (or went while it was being read). */
export function readHostProcess(pid: number): HostProcess | null {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    const uid = /^Uid:\s+(\d+)/m.exec(status)?.[1];
    const ppid = /^PPid:\s+(\d+)/m.exec(status)?.[1];
    const state = /^State:\s+(\S)/m.exec(status)?.[1] ?? '?';
    // Fields after the command name "(...)": state is field 3, starttime field 22.
    const start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
    if (uid === undefined || ppid === undefined || start === undefined) return null;
    const argv = cmdline.split('\0').filter((a, i, all) => !(a === '' && i === all.length - 1));
    return { pid, ppid: Number(ppid), uid: Number(uid), state, start, cmdline, argv, command: argv.join(' ') };
  } catch {
    return null;
  }
}

/**
 * Every process on the host but this one (the test runner is never what a test looks for) and
 * zombies (they run nothing and hold nothing but a pid; init reaps them on its own schedule).
 */
export function listHostProcesses(): HostProcess[] {
  return fs.readdirSync('/proc').filter((e) => /^\d+$/.test(e)).map(Number)
    .filter((pid) => pid !== process.pid)
    .flatMap((pid) => readHostProcess(pid) ?? [])
    .filter((p) => p.state !== 'Z');
}

/**
 * Processes whose command line contains `needle`. A needle with a NUL in it is matched against
 * the raw cmdline, so `sleep\0 7.5` finds only where those are argument boundaries; any other
 * needle against the arguments joined by spaces, so `sleep 7.5` also finds `sh -c 'sleep 7.5'`.
 */
export function hostProcessesMatching(needle: string): HostProcess[] {
  const field = needle.includes('\0') ? 'cmdline' : 'command';
  return listHostProcesses().filter((p) => p[field].includes(needle));
}

export function hostProcessesOfUid(uid: number): HostProcess[] {
  return listHostProcesses().filter((p) => p.uid === uid);
}

/** Processes whose cgroup path (any line of /proc/<pid>/cgroup) contains `needle`. */
export function hostProcessesInCgroup(needle: string): HostProcess[] {
  return listHostProcesses().filter((p) => {
    try {
      return fs.readFileSync(`/proc/${p.pid}/cgroup`, 'utf8').includes(needle);
    } catch {
      return false;
    }
  });
}

/** Processes with `root` as parent, grandparent... (up to 64 generations). */
export function descendantsOf(root: number): HostProcess[] {
  const all = listHostProcesses();
  const byPid = new Map(all.map((p) => [p.pid, p]));
  return all.filter((p) => {
    for (let cur: HostProcess | undefined = p, hops = 0; cur && hops < 64; cur = byPid.get(cur.ppid), hops++) {
      if (cur.ppid === root) return true;
    }
    return false;
  });
}

/** Whether `pid` is a process that has not exited (a zombie has). */
export function isRunning(pid: number): boolean {
  const p = readHostProcess(pid);
  return p !== null && p.state !== 'Z';
}

/** Those of `procs` that are still running: same pid, same start time, not a zombie. */
export function stillRunning(procs: HostProcess[]): HostProcess[] {
  return procs.filter((p) => {
    const now = readHostProcess(p.pid);
    return now !== null && now.start === p.start && now.state !== 'Z';
  });
}

/**
 * Calls `probe` until `done` accepts its value or `timeoutMs` has passed, `intervalMs` apart;
 * returns the last value either way, for the test to assert on (and show when it fails).
 */
export async function waitUntil<T>(probe: () => T, done: (value: T) => boolean, timeoutMs: number, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (done(value) || Date.now() > deadline) return value;
    await delay(intervalMs);
  }
}

/** Waits until no process matches `needle` (see hostProcessesMatching); returns what is left at the deadline. */
export function waitForNoProcess(needle: string, timeoutMs: number): Promise<HostProcess[]> {
  return waitUntil(() => hostProcessesMatching(needle), (left) => left.length === 0, timeoutMs);
}

/** Waits until the program `sleep <arg>` itself runs on the host; returns its pid. */
export async function waitForSleep(arg: string, timeoutMs = 15_000): Promise<number> {
  const isSleep = (p: HostProcess) => path.basename(p.argv[0] ?? '') === 'sleep' && p.argv[1] === arg;
  const hit = await waitUntil(() => hostProcessesMatching(`sleep ${arg}`).find(isSleep), (p) => p !== undefined, timeoutMs);
  if (hit === undefined) throw new Error(`no 'sleep ${arg}' process appeared within ${timeoutMs} ms`);
  return hit.pid;
}

/** The children of `parent`, from its threads' /proc children lists: far quicker than a whole listing. */
export function childrenOf(parent: number): HostProcess[] {
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${parent}/task`);
  } catch {
    return [];
  }
  const pids = tids.flatMap((tid) => {
    try {
      return fs.readFileSync(`/proc/${parent}/task/${tid}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
    } catch {
      return [];
    }
  });
  return pids.flatMap((pid) => readHostProcess(pid) ?? []).filter((p) => p.state !== 'Z');
}

/**
 * Catches a child of `parent` whose command matches `pattern` (a tool that runs a few ms: mkfs,
 * mount) and stops it with SIGSTOP, so a test can hold it past some other event; one that ended
 * before the signal reached it is passed over. Resume it with SIGCONT (also when the test fails).
 */
export async function stopChildProcess(parent: number, pattern: RegExp, timeoutMs = 20_000): Promise<HostProcess> {
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; await delay(1)) {
    const seen = childrenOf(parent).find((p) => pattern.test(p.command));
    if (seen === undefined) continue;
    try {
      process.kill(seen.pid, 'SIGSTOP');
    } catch {
      continue; // gone already
    }
    // Stopped for sure (state T), not a process that was already on its way out.
    const state = await waitUntil(() => (stillRunning([seen]).length > 0 ? readHostProcess(seen.pid)?.state : 'gone'), (st) => st === 'T' || st === 'gone', 1000, 1);
    if (state === 'T') return seen;
  }
  throw new Error(`no child of ${parent} matching ${String(pattern)} could be stopped`);
}

/** SIGCONT to `p` if it is still that process (a no-op once it has ended). */
export function resumeProcess(p: HostProcess): void {
  if (stillRunning([p]).length > 0) process.kill(p.pid, 'SIGCONT');
}
