// Starts the real service (node bin/bubble-sandbox.js serve) on a random loopback port for the
// benchmark, and reads its memory and CPU use from /proc.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { BIN, PROJECT_ROOT, sleep } from '../../test/helpers/host-env.js';

// removeTempDir, not fs.rmSync, for a dir a service ran in: a service killed (or stopped past its
// timeout) leaves quota images mounted there, and rmSync would delete the images from under their
// loop devices and stop at the first mount point (EBUSY), leaving mounts and devices attached.
export { ENVIRONMENTS_DIR, PROJECT_ROOT, cleanEnv, freePort, makeTempDir, removeTempDir } from '../../test/helpers/host-env.js';

export interface BenchServer {
  baseUrl: string;
  pid: number;
  /** SIGTERM, then SIGKILL after the timeout; resolves once the process is gone. */
  stop(timeoutMs?: number): Promise<void>;
  /** The last lines the service wrote (for error messages). */
  tail(): string;
  /** The `checks` of the /readyz answer that found the service ready (cgroups, quota, self-test...). */
  readyChecks: Record<string, unknown>;
}

export async function startService(env: NodeJS.ProcessEnv, opts: { nodeArgs?: string[]; readyTimeoutMs?: number; bin?: string } = {}): Promise<BenchServer> {
  const host = env.BUBBLE_SANDBOX_HOST ?? '127.0.0.1';
  const port = env.BUBBLE_SANDBOX_PORT ?? '8000';
  const child: ChildProcess = spawn(process.execPath, [...(opts.nodeArgs ?? []), opts.bin ?? BIN, 'serve'], {
    cwd: PROJECT_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Keep only a tail of the log: the service logs a line per request at INFO.
  const lines: string[] = [];
  const keep = (chunk: Buffer) => {
    lines.push(chunk.toString('utf8'));
    if (lines.length > 50) lines.splice(0, lines.length - 50);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let exited = false;
  const gone = new Promise<void>((resolve) => child.once('close', () => {
    exited = true;
    resolve();
  }));
  const tail = () => lines.join('').split('\n').slice(-20).join('\n');
  const stop = async (timeoutMs = 15_000) => {
    if (exited) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    await gone;
    clearTimeout(timer);
  };

  // Ready means /readyz answers 200 and the start-up isolation self-test is over: it spawns
  // sandboxes of its own and would compete with the first measurements.
  const baseUrl = `http://${host}:${port}`;
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 90_000);
  let readyChecks: Record<string, unknown> = {};
  for (;;) {
    if (exited) throw new Error(`the service exited during start-up:\n${tail()}`);
    try {
      const res = await fetch(`${baseUrl}/readyz`, { signal: AbortSignal.timeout(5000) });
      const body = (await res.json()) as { checks?: Record<string, unknown> & { self_test?: { status?: string } } };
      if (res.status === 200 && body.checks?.self_test?.status !== 'running') {
        readyChecks = body.checks ?? {};
        break;
      }
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop(1000);
      throw new Error(`the service was not ready in time:\n${tail()}`);
    }
    await sleep(100);
  }
  if (child.pid === undefined) throw new Error('the service has no pid');
  return { baseUrl, pid: child.pid, stop, tail, readyChecks };
}

/** A line of /proc/<pid>/status in KiB (VmRSS, VmHWM). */
export function procStatusKiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]);
}

/** Resets VmHWM to the current RSS (Linux 4.0+, needs to be the owner or root). */
export function resetPeakRss(pid: number): boolean {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

const CLOCK_TICKS = 100; // USER_HZ on Linux

/** user + system CPU time of the process (all its threads) in milliseconds. */
export function processCpuMs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // After "pid (comm) ", field 3 (state) is index 0: utime is field 14, stime field 15.
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
}
