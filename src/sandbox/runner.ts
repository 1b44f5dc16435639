// Spawns one sandboxed execution and turns it into an execution result.
//
// The chain is: Node → /bin/sh wrapper (joins the cgroups, sets rlimits) → setpriv (drops to the
// sandbox's host uid when we are root) → bwrap → user program. Each step execs the next, so the
// child Node sees is bwrap itself and --die-with-parent ties the sandbox to this process.
// node:child_process is used instead of execa here: the hot path needs raw extra descriptors
// (args, seccomp, script, O_PATH bind sources) at fixed numbers and nothing else on top.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { constants as osConstants } from 'node:os';
import type { Logger } from 'pino';
import { buildBwrapInvocation, encodeArgs, SANDBOX_PATHS, type BwrapPolicy } from './bwrap-args.js';
import type { CgroupManager, CgroupStats } from './cgroups.js';
import type { Environment } from './environments.js';
import type { HostLayout } from './host-layout.js';
import { closeInheritedDescriptors } from './inherited-fds.js';
import { OutputCapture } from './output-capture.js';
import { parsePythonError, type PythonError } from './python-error.js';
import type { ExecutionStatus, Program, ResourceLimits, RunRequest, RunResult } from './types.js';

const O_PATH = 0o10000000;
const DIR_FD_FLAGS = O_PATH | fs.constants.O_NOFOLLOW | fs.constants.O_DIRECTORY;

// $1 nofile, $2 fsize in 512-byte blocks, $3 cpu seconds, then cgroup procs files up to "--".
const WRAPPER = [
  'ulimit -c 0 && ulimit -n "$1" && ulimit -f "$2" && ulimit -t "$3" || exit 125',
  'shift 3',
  'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done',
  'shift',
  'exec "$@"',
].join('\n');

export interface SandboxRunnerOptions {
  bwrapPath: string;
  layout: HostLayout;
  seccompProgram: Buffer | null;
  cgroups: CgroupManager | null;
  logger?: Logger;
}

export interface SandboxRunner {
  run(request: RunRequest): Promise<RunResult>;
}

export function baseEnvironment(env: Environment | null): Record<string, string> {
  const venvBin = env?.venvDir ? `${SANDBOX_PATHS.venv}/bin:` : '';
  return {
    PATH: `${venvBin}/usr/local/bin:/usr/bin:/bin`,
    HOME: SANDBOX_PATHS.tmp,
    TMPDIR: SANDBOX_PATHS.tmp,
    USER: 'sandbox',
    LOGNAME: 'sandbox',
    LANG: 'C.UTF-8',
    PYTHONUNBUFFERED: '1',
    PYTHONDONTWRITEBYTECODE: '1',
    PYTHONPATH: SANDBOX_PATHS.workspace,
    MPLBACKEND: 'Agg',
    ...(env?.venvDir ? { VIRTUAL_ENV: SANDBOX_PATHS.venv } : {}),
  };
}

function commandFor(program: Program, env: Environment | null): string[] {
  const python = env?.venvDir ? `${SANDBOX_PATHS.venv}/bin/python` : '/usr/bin/python3';
  switch (program.kind) {
    case 'script':
      return [python, SANDBOX_PATHS.script];
    case 'command':
      return ['/bin/sh', '-c', program.command];
    case 'argv':
      return [...program.argv];
  }
}

function signalName(n: number): string | null {
  const entry = Object.entries(osConstants.signals).find(([, v]) => v === n);
  return entry ? entry[0] : null;
}

export function createSandboxRunner(opts: SandboxRunnerOptions): SandboxRunner {
  closeInheritedDescriptors();
  let counter = 0;

  async function run(req: RunRequest): Promise<RunResult> {
    const started = performance.now();
    const policy: BwrapPolicy = {
      systemMounts: opts.layout.systemMounts,
      etcFiles: opts.layout.etcFiles,
      venvDir: req.environment?.venvDir ?? null,
      hasScript: req.program.kind === 'script',
      volumes: req.volumes.map((v) => ({ name: v.name, mode: v.mode })),
      seccomp: opts.seccompProgram !== null,
      tmpSizeBytes: req.limits.tmpSizeBytes,
      env: { ...baseEnvironment(req.environment), ...req.env },
      command: commandFor(req.program, req.environment),
    };
    const invocation = buildBwrapInvocation(policy);

    // Bind sources are opened here, without following links, and handed over as descriptors:
    // a workspace or volume swapped for a symlink fails closed instead of exposing the target.
    const openedFds: number[] = [];
    const cgroup = opts.cgroups ? await opts.cgroups.create(`exec-${process.pid}-${++counter}`, req.limits) : null;
    try {
      const stdio: (number | 'pipe')[] = ['pipe', 'pipe', 'pipe'];
      const payloads = new Map<number, Buffer>();
      payloads.set(3, encodeArgs(invocation.options));
      for (const [i, role] of invocation.fdRoles.entries()) {
        const fdNumber = 3 + i;
        if (role.role === 'args' || role.role === 'seccomp' || role.role === 'script') {
          stdio.push('pipe');
          if (role.role === 'seccomp' && opts.seccompProgram) payloads.set(fdNumber, opts.seccompProgram);
          if (role.role === 'script' && req.program.kind === 'script') payloads.set(fdNumber, Buffer.from(req.program.source, 'utf8'));
        } else {
          const hostDir = role.role === 'workspace' ? req.workspaceDir : req.volumes.find((v) => v.name === role.name)?.hostDir;
          if (hostDir === undefined) throw new Error(`no host directory for ${role.role}`);
          const fd = fs.openSync(hostDir, DIR_FD_FLAGS);
          openedFds.push(fd);
          stdio.push(fd);
        }
      }

      const fsizeBlocks = Math.max(1, Math.floor(req.limits.fileSizeBytes / 512));
      const cpuSeconds = Math.ceil(req.timeoutMs / 1000) + 5;
      const identity = req.identity
        ? ['setpriv', `--reuid=${req.identity.uid}`, `--regid=${req.identity.gid}`, '--clear-groups', '--no-new-privs', '--']
        : [];
      const argv = [
        '-c', WRAPPER, 'bubble-sandbox-wrapper',
        String(req.limits.openFiles), String(fsizeBlocks), String(cpuSeconds),
        ...(cgroup?.procsFiles ?? []), '--',
        ...identity, opts.bwrapPath, ...invocation.argv,
      ];

      const child = spawn('/bin/sh', argv, { stdio, env: {}, windowsHide: true });
      for (const fd of openedFds.splice(0)) fs.closeSync(fd);

      const stdout = new OutputCapture(req.maxOutputChars, req.onOutput ? (t) => req.onOutput?.('stdout', t) : undefined);
      const stderr = new OutputCapture(req.maxOutputChars, req.onOutput ? (t) => req.onOutput?.('stderr', t) : undefined);
      child.stdout?.on('data', (c: Buffer) => stdout.push(c));
      child.stderr?.on('data', (c: Buffer) => stderr.push(c));

      for (const [fdNumber, payload] of payloads) {
        const stream = child.stdio[fdNumber] as NodeJS.WritableStream | null | undefined;
        stream?.on('error', () => undefined);
        stream?.end(payload);
      }
      child.stdin?.on('error', () => undefined); // the program may exit without reading stdin
      child.stdin?.end(req.stdin ?? '');

      let timedOut = false;
      let aborted = false;
      const kill = () => {
        child.kill('SIGKILL');
        void cgroup?.killAll();
      };
      const timer = setTimeout(() => {
        timedOut = true;
        kill();
      }, req.timeoutMs);
      const onAbort = () => {
        aborted = true;
        kill();
      };
      if (req.signal?.aborted) onAbort();
      req.signal?.addEventListener('abort', onAbort, { once: true });

      const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
        child.once('error', reject);
        child.once('close', (c, s) => resolve({ code: c, signal: s }));
      }).finally(() => {
        clearTimeout(timer);
        req.signal?.removeEventListener('abort', onAbort);
      });

      await cgroup?.killAll();
      const stats: CgroupStats | null = cgroup ? await cgroup.stats() : null;
      const out = stdout.finish();
      const err = stderr.finish();

      // bwrap reports a child killed by signal N as exit status 128+N.
      let exitCode: number | null = code;
      let sig: string | null = signal;
      if (sig === null && code !== null && code > 128 && code < 128 + 65) {
        const name = signalName(code - 128);
        if (name !== null) {
          sig = name;
          exitCode = null;
        }
      }
      if (timedOut) exitCode = null;

      let status: ExecutionStatus;
      if (timedOut) status = 'timeout';
      else if (stats?.oomKilled) status = 'oom';
      else if (sig !== null || aborted) status = 'killed';
      else status = exitCode === 0 ? 'ok' : 'error';

      if (code === 125 && !timedOut && sig === null) {
        opts.logger?.error({ stderr_chars: err.totalChars }, 'sandbox wrapper failed before bwrap started');
      }

      let error: PythonError | null = null;
      if (req.program.kind === 'script' && status !== 'ok') {
        error = parsePythonError(err.text, {
          environment: req.environment?.name ?? 'system',
          dependencies: req.environment?.dependencies ?? [],
        });
      }

      return {
        status,
        exit_code: exitCode,
        signal: sig ?? (timedOut ? 'SIGKILL' : null),
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
      for (const fd of openedFds) fs.closeSync(fd);
      await cgroup?.destroy();
    }
  }

  return { run };
}

export type { ResourceLimits };
