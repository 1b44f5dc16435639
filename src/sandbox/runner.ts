// One sandboxed execution from start to result: spawn, feed stdin, capture output with caps,
// enforce the wall-clock timeout, and turn the outcome into an execution result.
import fs from 'node:fs';
import { constants as osConstants } from 'node:os';
import type { Logger } from 'pino';
import { SANDBOX_PATHS } from './bwrap-args.js';
import type { CgroupManager } from './cgroups.js';
import type { Environment } from './environments.js';
import type { HostLayout } from './host-layout.js';
import { closeInheritedDescriptors } from './inherited-fds.js';
import { OutputCapture } from './output-capture.js';
import { errorFromReport, type PythonError } from './python-error.js';
import { baseEnvironment, pythonFor, spawnSandbox, type SpawnDeps } from './spawn.js';
import type { ExecutionStatus, Program, RunRequest, RunResult } from './types.js';
import type { Spawner } from './spawner.js';
import { WarmPool, type WarmPoolOptions } from './warm/warm-pool.js';

export { baseEnvironment } from './spawn.js';

export interface SandboxRunnerOptions {
  bwrapPath: string;
  execHelperPath: string;
  layout: HostLayout;
  seccompProgram: Buffer | null;
  cgroups: CgroupManager | null;
  /** The spawn helper (spawner.ts), owned by the caller; absent: the service forks each sandbox itself. */
  spawner?: Spawner | null;
  logger?: Logger;
  /** Pre-started sandboxes (warm/warm-pool.ts); absent or max 0: every run spawns. */
  warm?: Omit<WarmPoolOptions, 'spawnDeps' | 'nextCgroupName' | 'logger'>;
}

export interface SandboxRunner {
  run(request: RunRequest): Promise<RunResult>;
  /** What the runner spawns with; a persistent interpreter reuses it. */
  readonly spawnDeps: SpawnDeps;
  /** A cgroup name unique to this process. */
  nextCgroupName(prefix?: string): string;
  /** Pre-started sandboxes that run() claims when one matches; null when they are off. */
  readonly warm: WarmPool | null;
}

/** launch.py beside this module (the build copies it to dist): runs main.py and reports its uncaught exception. */
const LAUNCHER_SOURCE = fs.readFileSync(new URL('./launch.py', import.meta.url), 'utf8');
/** What is read of a launcher's report: it is a few hundred bytes, the rest is not one. */
const MAX_REPORT_BYTES = 16 * 1024;

function commandFor(program: Program, env: Environment | null): string[] | ((extraFds: number[]) => string[]) {
  switch (program.kind) {
    case 'script':
      return ([reportFd]) => [pythonFor(env), SANDBOX_PATHS.launcher, String(reportFd)];
    case 'command':
      return ['/bin/sh', '-c', program.command];
    case 'argv':
      return [...program.argv];
  }
}

export function signalName(n: number): string | null {
  const entry = Object.entries(osConstants.signals).find(([, v]) => v === n);
  return entry ? entry[0] : null;
}

/** bwrap reports a child killed by signal N as exit status 128+N. */
export function splitExitStatus(code: number | null, signal: string | null): { exitCode: number | null; signal: string | null } {
  if (signal === null && code !== null && code > 128 && code < 128 + 65) {
    const name = signalName(code - 128);
    if (name !== null) return { exitCode: null, signal: name };
  }
  return { exitCode: code, signal };
}

/** Everything a stream carries up to `max` bytes (the rest is drained and dropped); '' without one. */
function readBounded(stream: NodeJS.ReadableStream | null, max: number): Promise<string> {
  if (stream === null) return Promise.resolve('');
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (c: Buffer) => {
      if (size < max) chunks.push(c.subarray(0, max - size));
      size += c.length;
    });
    const done = () => resolve(Buffer.concat(chunks).toString('utf8'));
    stream.once('end', done);
    stream.once('close', done);
    stream.once('error', done);
  });
}

/** Shared by every runner of this process, so two runners (test apps side by side) never pick the same cgroup name. */
let cgroupCounter = 0;

export function createSandboxRunner(opts: SandboxRunnerOptions): SandboxRunner {
  closeInheritedDescriptors();
  const spawnDeps: SpawnDeps = { bwrapPath: opts.bwrapPath, execHelperPath: opts.execHelperPath, layout: opts.layout, seccompProgram: opts.seccompProgram, cgroups: opts.cgroups, spawner: opts.spawner ?? null };
  const nextCgroupName = (prefix = 'exec') => `${prefix}-${process.pid}-${++cgroupCounter}`;

  if (opts.warm && opts.warm.max > 0) WarmPool.clearLeftovers(opts.warm.dir, opts.logger);
  const warm = opts.warm && opts.warm.max > 0 ? new WarmPool({ ...opts.warm, spawnDeps, nextCgroupName, logger: opts.logger }) : null;

  async function run(req: RunRequest): Promise<RunResult> {
    // A warm sandbox is claimed whole (hit) or the run spawns as before (miss); the wall-clock
    // timeout and duration_ms start once the sandbox is ready, at the claim.
    const claimed = warm ? await warm.claim(req) : null;
    const started = performance.now();
    const sandbox = claimed ? claimed.sandbox : await spawnSandbox(spawnDeps, {
      environment: req.environment,
      workspaceDir: req.workspaceDir,
      volumes: req.volumes,
      command: commandFor(req.program, req.environment),
      ...(req.program.kind === 'script' ? { sandboxFiles: { 'main.py': req.program.source, 'launch.py': LAUNCHER_SOURCE }, extraPipes: 1 } : {}),
      env: { ...baseEnvironment(req.environment), ...req.env },
      limits: req.limits,
      identity: req.identity,
      cpuSeconds: req.timeoutMs / 1000 + 5,
      cgroupName: nextCgroupName(),
      netnsPath: req.netnsPath,
    });
    try {
      const stdout = new OutputCapture(req.maxOutputChars, req.onOutput ? (t) => req.onOutput?.('stdout', t) : undefined);
      const stderr = new OutputCapture(req.maxOutputChars, req.onOutput ? (t) => req.onOutput?.('stderr', t) : undefined);
      sandbox.stdout.on('data', (c: Buffer) => stdout.push(c));
      sandbox.stderr.on('data', (c: Buffer) => stderr.push(c));
      sandbox.stdin.end(req.stdin ?? '');
      const report = readBounded(claimed ? claimed.report : (sandbox.extra[0]?.stream ?? null), MAX_REPORT_BYTES);
      claimed?.start(req.program);

      let timedOut = false;
      let aborted = false;
      const timer = setTimeout(() => {
        timedOut = true;
        sandbox.kill();
      }, req.timeoutMs);
      const onAbort = () => {
        aborted = true;
        sandbox.kill();
      };
      if (req.signal?.aborted) onAbort();
      req.signal?.addEventListener('abort', onAbort, { once: true });
      const { code, signal } = await sandbox.exited.finally(() => {
        clearTimeout(timer);
        req.signal?.removeEventListener('abort', onAbort);
      });

      const stats = await sandbox.stats();
      const out = stdout.finish();
      const err = stderr.finish();
      const split = splitExitStatus(code, signal);
      const exitCode = timedOut ? null : split.exitCode;
      const sig = split.signal;

      let status: ExecutionStatus;
      if (timedOut) status = 'timeout';
      else if (stats?.oomKilled) status = 'oom';
      else if (sig !== null || aborted) status = 'killed';
      else status = exitCode === 0 ? 'ok' : 'error';
      if (code === 125 && !timedOut) opts.logger?.error({ stderr_chars: err.totalChars }, 'sandbox exec helper failed before bwrap started');

      let error: PythonError | null = null;
      if (req.program.kind === 'script' && status !== 'ok') {
        error = errorFromReport(await report, { environment: req.environment?.name ?? 'system', dependencies: req.environment?.dependencies ?? [] });
      }
      return {
        status,
        exit_code: exitCode,
        signal: sig ?? (timedOut || aborted ? 'SIGKILL' : null),
        stdout: out.text,
        stderr: err.text,
        truncated: out.truncated || err.truncated,
        max_output_chars: req.maxOutputChars,
        timed_out: timedOut,
        timeout_seconds: req.timeoutMs / 1000,
        duration_ms: Math.round(performance.now() - started),
        resources: { memory_peak_bytes: stats?.memoryPeakBytes ?? null, cpu_ms: stats?.cpuMs ?? null },
        error,
      };
    } finally {
      if (claimed) claimed.dispose();
      else await sandbox.dispose();
    }
  }

  return { run, spawnDeps, nextCgroupName, warm };
}
