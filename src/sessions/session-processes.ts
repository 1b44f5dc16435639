// The long-running processes of one session (POST /v1/sessions/{id}/processes), beside its
// executions: each in a sandbox of its own with the session's workspace, volumes, network
// namespace, uid, seccomp filter and limits, in a cgroup of its own (killing it takes every
// descendant). A process runs until it exits, is killed, reaches its timeout, or the session ends
// (closeAll). Its output goes to a bounded ring (and, for a terminal, a bounded scrollback); the
// pipes are always read, so a slow client never makes memory grow.
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import {
  BadRequestError, ProcessExitedError, ProcessNotFoundError, ProcessNotPtyError, ProcessStdinClosedError, SessionNotFoundError, StdinBacklogError, TooManyProcessesError,
} from '../errors.js';
import type { Environment } from '../sandbox/environments.js';
import {
  PROCESS_SIGNALS, PTY_MAX_SIZE, PTY_MIN_SIZE, startProcessSandbox, type ProcessSandbox, type ProcessSignal,
} from '../sandbox/process-sandbox.js';
import { splitExitStatus } from '../sandbox/runner.js';
import { baseEnvironment, type SpawnDeps } from '../sandbox/spawn.js';
import type { ResourceLimits, VolumeMount } from '../sandbox/types.js';
import { openDirChain, withRoot } from '../workspace/safe-open.js';
import { PathNotDirectoryError, validateRelativePath, WorkspaceFileNotFoundError } from '../workspace/workspace-fs.js';
import { ByteRing, OutputRing, type OutputRead, type OutputStream } from './output-ring.js';

/** Input a program has not read yet that POST .../stdin lets wait in the service (per process). */
export const PROCESS_MAX_PENDING_INPUT_BYTES = 1024 * 1024;

export interface ProcessInfo {
  pid: string;
  command: string;
  pty: boolean;
  status: 'running' | 'exited' | 'killed' | 'timeout';
  exit_code: number | null;
  signal: string | null;
  started_at: string;
  ended_at: string | null;
}

export interface StartProcessInput {
  /** Exactly one of command (run by /bin/sh -c) and argv. */
  command?: string | undefined;
  argv?: string[] | undefined;
  env?: Record<string, string> | undefined;
  /** Relative to the workspace. */
  cwd?: string | undefined;
  /** Default and maximum: PROCESS_MAX_SECONDS. */
  timeoutSeconds?: number | undefined;
  pty?: { cols: number; rows: number } | null | undefined;
}

/** Where the session's sandboxes run: what an execution of the session gets. */
export interface ProcessTarget {
  environment: Environment;
  workspaceDir: string;
  volumes: VolumeMount[];
  identity: { uid: number; gid: number } | null;
  netnsPath?: string | undefined;
  /** The network's variables (proxy settings of an allowlist session): over the request's. */
  networkEnv: Readonly<Record<string, string>>;
}

export type ProcessSettings = Pick<Config, 'maxProcessesPerSession' | 'processMaxSeconds' | 'processOutputBufferBytes' | 'ptyScrollbackBytes' | 'maxFinishedProcesses'>;

export interface SessionProcessesDeps {
  sessionId: string;
  config: ProcessSettings;
  spawnDeps: SpawnDeps;
  limits: ResourceLimits;
  nextCgroupName(prefix: string): string;
  /** Resolved at each start (environment, workspace, the session's network namespace). */
  target(): Promise<ProcessTarget>;
  logger: Logger;
}

export interface PtyAttachment {
  /** Recent terminal output, bounded (PTY_SCROLLBACK_BYTES). */
  scrollback: Buffer;
  /** Keystrokes; throws PROCESS_EXITED once the process has ended. */
  write(data: Buffer): void;
  /** Keystrokes written but not yet taken by the program's terminal: bytes held in the service's memory. */
  pendingInput(): number;
  /** Called each time held keystrokes have all been taken (after a write left more than the pipe's mark); returns the unsubscribe function. */
  onDrain(cb: () => void): () => void;
  /** Throws 400 outside 1..1000. */
  resize(cols: number, rows: number): void;
  /** Terminal output from now on; returns the unsubscribe function. */
  onData(cb: (chunk: Buffer) => void): () => void;
  /** Called once when the process has ended (at once, asynchronously, when it already has). */
  onExit(cb: (info: ProcessInfo) => void): () => void;
}

export interface FollowHandlers {
  /** A promise holds further output back until it settles (the client's backpressure). */
  output(stream: OutputStream, text: string): void | Promise<void>;
  exit(info: ProcessInfo): void;
}

interface Proc {
  info: ProcessInfo;
  sandbox: ProcessSandbox;
  ring: OutputRing;
  scrollback: ByteRing | null;
  stdinClosed: boolean;
  /** Why the service ended it, when it did; the outcome otherwise comes from the exit status. */
  endedBy: 'timeout' | null;
  done: Promise<void>;
  exitListeners: Set<(info: ProcessInfo) => void>;
  dataListeners: Set<(chunk: Buffer) => void>;
}

export function checkPtySize(cols: number, rows: number, field = 'pty'): void {
  for (const [name, v] of [['cols', cols], ['rows', rows]] as const) {
    if (!Number.isInteger(v) || v < PTY_MIN_SIZE || v > PTY_MAX_SIZE) throw new BadRequestError('FST_ERR_VALIDATION', `${field}.${name}: must be an integer from ${PTY_MIN_SIZE} to ${PTY_MAX_SIZE}`);
  }
}

export class SessionProcesses {
  private readonly procs = new Map<string, Proc>();
  /** Ended processes, oldest first (at most MAX_FINISHED_PROCESSES stay listed). */
  private readonly finished: string[] = [];
  private starting = 0;
  private closed = false;

  constructor(private readonly deps: SessionProcessesDeps) {}

  get runningCount(): number {
    return [...this.procs.values()].filter((p) => p.info.status === 'running').length;
  }

  async start(input: StartProcessInput): Promise<ProcessInfo> {
    const { config } = this.deps;
    if (this.closed) throw new SessionNotFoundError(this.deps.sessionId);
    if ((input.command === undefined) === (input.argv === undefined)) throw new BadRequestError('FST_ERR_VALIDATION', 'body: exactly one of command or argv is required');
    const argv = input.command !== undefined ? ['/bin/sh', '-c', input.command] : [...(input.argv ?? [])];
    if (argv.length === 0) throw new BadRequestError('FST_ERR_VALIDATION', 'body.argv: must name a program');
    const timeout = input.timeoutSeconds ?? config.processMaxSeconds;
    if (!(timeout > 0) || timeout > config.processMaxSeconds) throw new BadRequestError('FST_ERR_VALIDATION', `body.timeout_seconds: must be more than 0 and at most ${config.processMaxSeconds}`);
    let cwd: string | undefined;
    if (input.cwd !== undefined && input.cwd !== '' && input.cwd !== '.') {
      try {
        cwd = validateRelativePath(input.cwd).join('/');
      } catch (err) {
        throw new BadRequestError('INVALID_PATH', `body.cwd: ${(err as Error).message}`);
      }
    }
    const pty = input.pty ?? null;
    if (pty) checkPtySize(pty.cols, pty.rows);
    if (this.runningCount + this.starting >= config.maxProcessesPerSession) throw new TooManyProcessesError(config.maxProcessesPerSession);

    this.starting++;
    let sandbox: ProcessSandbox;
    try {
      const target = await this.deps.target();
      if (cwd !== undefined) await checkCwdExists(target.workspaceDir, cwd);
      sandbox = await startProcessSandbox(this.deps.spawnDeps, {
        environment: target.environment,
        workspaceDir: target.workspaceDir,
        volumes: target.volumes,
        env: { ...baseEnvironment(target.environment), ...input.env, ...target.networkEnv },
        limits: this.deps.limits,
        identity: target.identity,
        // RLIMIT_CPU from the process's own timeout: the execution default would kill a server
        // with SIGXCPU in mid-life.
        cpuSeconds: timeout + 5,
        cgroupName: this.deps.nextCgroupName('proc'),
        netnsPath: target.netnsPath,
        argv,
        pty,
        cwd,
      });
    } finally {
      this.starting--;
    }
    if (this.closed) {
      sandbox.kill();
      await sandbox.exited.catch(() => undefined);
      await sandbox.dispose();
      throw new SessionNotFoundError(this.deps.sessionId);
    }
    const proc = this.track(sandbox, {
      pid: `p-${randomBytes(8).toString('hex')}`,
      command: input.command ?? argv.join(' '),
      pty: pty !== null,
      status: 'running',
      exit_code: null,
      signal: null,
      started_at: new Date().toISOString(),
      ended_at: null,
    }, timeout);
    this.deps.logger.info({ session_id: this.deps.sessionId, pid: proc.info.pid, pty: proc.info.pty, timeout_seconds: timeout }, 'process started');
    return { ...proc.info };
  }

  private track(sandbox: ProcessSandbox, info: ProcessInfo, timeoutSeconds: number): Proc {
    const { config } = this.deps;
    const proc: Proc = {
      info, sandbox,
      ring: new OutputRing(config.processOutputBufferBytes),
      scrollback: info.pty ? new ByteRing(config.ptyScrollbackBytes) : null,
      stdinClosed: false,
      endedBy: null,
      done: Promise.resolve(),
      exitListeners: new Set(),
      dataListeners: new Set(),
    };
    sandbox.stdout.on('data', (chunk: Buffer) => {
      proc.ring.push('stdout', chunk);
      if (proc.scrollback) {
        proc.scrollback.push(chunk);
        for (const cb of [...proc.dataListeners]) cb(chunk);
      }
    });
    sandbox.stderr?.on('data', (chunk: Buffer) => proc.ring.push('stderr', chunk));
    const timer = setTimeout(() => {
      proc.endedBy = 'timeout';
      sandbox.kill();
    }, Math.round(timeoutSeconds * 1000));
    timer.unref();
    proc.done = sandbox.exited.catch(() => ({ code: null, signal: 'SIGKILL' })).then(async ({ code, signal }) => {
      clearTimeout(timer);
      // Whatever the cgroup still holds (a descendant that left the pid namespace's reach) goes now.
      await sandbox.dispose().catch((err: unknown) => this.deps.logger.error({ err, session_id: this.deps.sessionId, pid: info.pid }, 'could not remove a process cgroup'));
      proc.ring.finish();
      const split = splitExitStatus(code, signal);
      info.ended_at = new Date().toISOString();
      if (proc.endedBy === 'timeout') Object.assign(info, { status: 'timeout', exit_code: null, signal: 'SIGKILL' });
      else if (split.signal !== null) Object.assign(info, { status: 'killed', exit_code: null, signal: split.signal });
      else Object.assign(info, { status: 'exited', exit_code: split.exitCode, signal: null });
      this.deps.logger.info({ session_id: this.deps.sessionId, pid: info.pid, status: info.status, exit_code: info.exit_code, signal: info.signal, output_chars: proc.ring.next }, 'process ended');
      proc.dataListeners.clear();
      for (const cb of [...proc.exitListeners]) cb({ ...info });
      proc.exitListeners.clear();
      this.retire(info.pid);
    });
    this.procs.set(info.pid, proc);
    return proc;
  }

  /** Keeps the newest MAX_FINISHED_PROCESSES ended processes (and their output); forgets older ones. */
  private retire(pid: string): void {
    if (!this.procs.has(pid)) return;
    this.finished.push(pid);
    while (this.finished.length > this.deps.config.maxFinishedProcesses) {
      const old = this.finished.shift();
      if (old !== undefined) this.procs.delete(old);
    }
  }

  private find(pid: string): Proc {
    const proc = this.procs.get(pid);
    if (!proc) throw new ProcessNotFoundError(this.deps.sessionId, pid);
    return proc;
  }

  private running(pid: string): Proc {
    const proc = this.find(pid);
    if (proc.info.status !== 'running') throw new ProcessExitedError(pid);
    return proc;
  }

  list(): ProcessInfo[] {
    return [...this.procs.values()].map((p) => ({ ...p.info }));
  }

  get(pid: string): ProcessInfo {
    return { ...this.find(pid).info };
  }

  output(pid: string, since: number): OutputRead {
    return this.find(pid).ring.read(since);
  }

  /**
   * Output from offset `since` as it arrives, then exit() once the process has ended and all its
   * output was delivered. A reader that holds back (output() returns a pending promise) resumes
   * from the ring where it was: what fell out meanwhile is skipped, nothing queues up for it.
   */
  follow(pid: string, since: number, on: FollowHandlers): () => void {
    const proc = this.find(pid);
    let pos = since;
    let waiting = false;
    let stopped = false;
    const stop = () => {
      stopped = true;
      offWrite();
      proc.exitListeners.delete(pump);
    };
    const pump = () => {
      if (stopped || waiting) return;
      while (!stopped && !waiting) {
        const { chunks, next } = proc.ring.chunksSince(pos);
        pos = next;
        if (chunks.length === 0) break;
        for (const c of chunks) {
          const held = on.output(c.stream, c.text);
          if (held) {
            waiting = true;
            void held.catch(() => undefined).then(() => {
              waiting = false;
              pump();
            });
          }
        }
      }
      if (!stopped && !waiting && proc.info.status !== 'running' && pos >= proc.ring.next) {
        stop();
        on.exit({ ...proc.info });
      }
    };
    const offWrite = proc.ring.onWrite(pump);
    if (proc.info.status === 'running') proc.exitListeners.add(pump);
    queueMicrotask(pump);
    return stop;
  }

  async stdin(pid: string, data: Buffer | 'eof'): Promise<void> {
    const proc = this.running(pid);
    if (proc.stdinClosed) throw new ProcessStdinClosedError(pid);
    const stream = proc.sandbox.stdin;
    if (data === 'eof') {
      proc.stdinClosed = true;
      stream.end();
      return;
    }
    // Input the program has not read yet waits in the service: past the bound, a write is refused
    // (429) instead of queued, so callers that keep sending cannot grow the service's memory.
    if (stream.writableLength >= PROCESS_MAX_PENDING_INPUT_BYTES) throw new StdinBacklogError(pid, PROCESS_MAX_PENDING_INPUT_BYTES);
    // Resolves once the pipe took it; a process that ended first never got it (409).
    const taken = await Promise.race([
      new Promise<boolean>((resolve) => stream.write(data, (err) => resolve(err == null))),
      proc.done.then(() => false),
    ]);
    if (!taken) throw new ProcessExitedError(pid);
  }

  signal(pid: string, name: string): void {
    if (!(PROCESS_SIGNALS as readonly string[]).includes(name)) throw new BadRequestError('FST_ERR_VALIDATION', `body.signal: must be one of ${PROCESS_SIGNALS.join(', ')}`);
    const proc = this.running(pid);
    this.deps.logger.info({ session_id: this.deps.sessionId, pid, signal: name }, 'process signal');
    proc.sandbox.signal(name as ProcessSignal);
  }

  /** DELETE: the process and everything it started are gone before this resolves. An ended one stays listed. */
  async kill(pid: string): Promise<void> {
    const proc = this.find(pid);
    if (proc.info.status === 'running') proc.sandbox.kill();
    await proc.done;
  }

  attachPty(pid: string): PtyAttachment {
    const proc = this.find(pid);
    if (!proc.scrollback) throw new ProcessNotPtyError(pid);
    return {
      scrollback: proc.scrollback.contents(),
      write: (data) => {
        const p = this.running(pid);
        if (p.stdinClosed) throw new ProcessStdinClosedError(pid);
        p.sandbox.stdin.write(data);
      },
      pendingInput: () => proc.sandbox.stdin.writableLength,
      onDrain: (cb) => {
        const stream = proc.sandbox.stdin;
        stream.on('drain', cb);
        return () => stream.off('drain', cb);
      },
      resize: (cols, rows) => {
        checkPtySize(cols, rows, 'resize');
        this.running(pid).sandbox.resize(cols, rows);
      },
      onData: (cb) => {
        if (proc.info.status !== 'running') return () => undefined;
        proc.dataListeners.add(cb);
        return () => proc.dataListeners.delete(cb);
      },
      onExit: (cb) => {
        if (proc.info.status !== 'running') {
          const info = { ...proc.info };
          queueMicrotask(() => cb(info));
          return () => undefined;
        }
        proc.exitListeners.add(cb);
        return () => proc.exitListeners.delete(cb);
      },
    };
  }

  /** The session ends: every process is killed (and waited for); nothing can be started any more. */
  async closeAll(): Promise<void> {
    this.closed = true;
    const procs = [...this.procs.values()];
    for (const p of procs) if (p.info.status === 'running') p.sandbox.kill();
    await Promise.all(procs.map((p) => p.done));
    // A start that was spawning meanwhile sees `closed` and kills its own sandbox.
    while (this.starting > 0) await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A cwd the workspace does not hold is the caller's mistake (400), not a program that exits 127.
 * Looked up link-safe from the host; the sandbox may still change it before the start, which only
 * fails its own process.
 */
async function checkCwdExists(workspaceDir: string, cwd: string): Promise<void> {
  try {
    await withRoot(workspaceDir, async (root) => (await openDirChain(root, cwd.split('/'))).close());
  } catch (err) {
    if (err instanceof WorkspaceFileNotFoundError) throw new BadRequestError('INVALID_PATH', `body.cwd: ${cwd} is not a directory in the workspace`);
    if (err instanceof PathNotDirectoryError) throw new BadRequestError('INVALID_PATH', `body.cwd: ${cwd} is not a directory (or is a link)`);
    throw err;
  }
}
