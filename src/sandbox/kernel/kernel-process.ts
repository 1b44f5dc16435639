// One running kernel: the sandbox with the driver in it, its request streams (stdin for cells,
// a side pipe for interrupts and pings), its control pipe (frames), and its stdout/stderr handed
// to whichever call is listening.
import fs from 'node:fs';
import type { Writable } from 'node:stream';
import type { Logger } from 'pino';
import { SANDBOX_PATHS } from '../bwrap-args.js';
import type { CgroupStats } from '../cgroups.js';
import type { Environment } from '../environments.js';
import { pythonFor, spawnSandbox, type SpawnDeps, type SpawnedSandbox } from '../spawn.js';
import type { ResourceLimits, VolumeMount } from '../types.js';
import { encodeFrame, FrameDecoder } from './frames.js';

/** The Python side (driver.py and its rich outputs beside this module; the build copies them to dist). */
const DRIVER_SOURCE = fs.readFileSync(new URL('./driver.py', import.meta.url), 'utf8');
const RICH_SOURCE = fs.readFileSync(new URL('./_bubble_rich.py', import.meta.url), 'utf8');

export interface KernelSpawnSpec {
  deps: SpawnDeps;
  cgroupName: string;
  environment: Environment | null;
  workspaceDir: string;
  volumes: VolumeMount[];
  /** The complete environment of the interpreter. */
  env: Record<string, string>;
  limits: ResourceLimits;
  identity: { uid: number; gid: number } | null;
  cpuSeconds: number;
  /** The session's network namespace to join (see SandboxSpec.netnsPath). */
  netnsPath?: string | undefined;
}

export interface DriverError {
  type: string;
  message: string;
  line: number | null;
  traceback: string[];
}

export interface DoneFrame {
  id: number;
  result: string | null;
  error: DriverError | null;
  interrupted: boolean;
  /** The driver dropped rich outputs over the call's budget. */
  outputsTruncated: boolean;
  /** Whether the driver wrote the call's marker to stdout / stderr (it does not when it could not, or when the service had already read everything the stream carried). */
  markers: { stdout: boolean; stderr: boolean };
}

export interface OutputSink {
  stdout(chunk: Buffer): void;
  stderr(chunk: Buffer): void;
}

export type ExitStatus = { code: number | null; signal: NodeJS.Signals | null };

export class KernelStartError extends Error {
  override name = 'KernelStartError';
}

const STARTUP_STDERR_CHARS = 4000;

const str = (v: unknown): string => (typeof v === 'string' ? v : '');

function toDone(f: Record<string, unknown>): DoneFrame {
  const e = f.error as Record<string, unknown> | null | undefined;
  const m = (f.markers ?? {}) as Record<string, unknown>;
  return {
    id: Number(f.id),
    result: typeof f.result === 'string' ? f.result : null,
    error: e && typeof e === 'object'
      ? { type: str(e.type) || 'Exception', message: str(e.message), line: typeof e.line === 'number' ? e.line : null, traceback: Array.isArray(e.traceback) ? e.traceback.map(str) : [] }
      : null,
    interrupted: f.interrupted === true,
    outputsTruncated: f.outputs_truncated === true,
    markers: { stdout: m.stdout === true, stderr: m.stderr === true },
  };
}

export class KernelProcess {
  /** Receives stdout/stderr while a call listens; output between calls is dropped. */
  sink: OutputSink | null = null;
  /** Receives the display frames of the call that listens (checked by the listener). */
  displaySink: ((frame: Record<string, unknown>) => void) | null = null;
  exitStatus: ExitStatus | null = null;
  readonly exited: Promise<ExitStatus>;
  private readonly waiters = new Map<number, (frame: DoneFrame) => void>();
  private pongs: (() => void)[] = [];
  private ready: (() => void) | null = null;
  private disposed: Promise<void> | null = null;
  /** Interrupts and pings go here, so a cell that runs does not hold them up. */
  private side: Writable | null = null;

  private constructor(private readonly sandbox: SpawnedSandbox, private readonly logger: Logger | undefined) {
    this.exited = sandbox.exited.catch(() => ({ code: null, signal: null })).then((status) => {
      this.exitStatus = status;
      return status;
    });
  }

  static async start(spec: KernelSpawnSpec, startTimeoutMs: number, logger?: Logger): Promise<KernelProcess> {
    const sandbox = await spawnSandbox(spec.deps, {
      environment: spec.environment,
      workspaceDir: spec.workspaceDir,
      volumes: spec.volumes,
      command: ([ctlFd, sideFd]) => [pythonFor(spec.environment), SANDBOX_PATHS.script, String(ctlFd), String(sideFd)],
      sandboxFiles: { 'main.py': DRIVER_SOURCE, '_bubble_rich.py': RICH_SOURCE },
      env: spec.env,
      limits: spec.limits,
      identity: spec.identity,
      cpuSeconds: spec.cpuSeconds,
      // The control pipe (frames out), and the pipe for interrupts and pings (see driver.py).
      extraPipes: 2,
      cgroupName: spec.cgroupName,
      netnsPath: spec.netnsPath,
    });
    const proc = new KernelProcess(sandbox, logger);
    let startupStderr = '';
    const collect = (c: Buffer) => {
      if (startupStderr.length < STARTUP_STDERR_CHARS) startupStderr += c.toString('utf8');
    };
    sandbox.stderr.on('data', collect);
    try {
      const ctl = sandbox.extra[0];
      const side = sandbox.extra[1];
      if (ctl === undefined || side === undefined) throw new KernelStartError('no control pipe');
      side.stream.on('error', () => undefined); // a dead kernel shows through `exited`
      proc.side = side.stream;
      proc.wire(ctl.stream);
      let timer: NodeJS.Timeout | undefined;
      const outcome = await Promise.race([
        new Promise<'ready'>((resolve) => {
          proc.ready = () => resolve('ready');
        }),
        proc.exited.then(() => 'exited' as const),
        new Promise<'timeout'>((resolve) => {
          timer = setTimeout(() => resolve('timeout'), startTimeoutMs);
        }),
      ]).finally(() => clearTimeout(timer));
      if (outcome !== 'ready') {
        await proc.dispose();
        const how = outcome === 'timeout' ? `did not answer within ${startTimeoutMs} ms` : `exited (${JSON.stringify(proc.exitStatus)})`;
        throw new KernelStartError(`the kernel ${how}: ${startupStderr.trim().slice(0, STARTUP_STDERR_CHARS) || 'no output'}`);
      }
    } catch (err) {
      await proc.dispose();
      throw err;
    } finally {
      sandbox.stderr.off('data', collect);
    }
    return proc;
  }

  private wire(ctl: NodeJS.ReadableStream): void {
    const decoder = new FrameDecoder();
    ctl.on('data', (chunk: Buffer) => {
      let frames: unknown[];
      try {
        frames = decoder.push(chunk);
      } catch (err) {
        // Only the driver writes here; garbage means the process is not in a state we can trust.
        this.logger?.error({ err }, 'kernel control pipe corrupted; killing the kernel');
        this.sandbox.kill();
        return;
      }
      for (const frame of frames) this.onFrame(frame);
    });
    this.sandbox.stdout.on('data', (c: Buffer) => this.sink?.stdout(c));
    this.sandbox.stderr.on('data', (c: Buffer) => this.sink?.stderr(c));
  }

  private onFrame(frame: unknown): void {
    if (frame === null || typeof frame !== 'object') return;
    const f = frame as Record<string, unknown>;
    switch (f.type) {
      case 'ready':
        this.ready?.();
        this.ready = null;
        break;
      case 'pong':
        for (const resolve of this.pongs.splice(0)) resolve();
        break;
      case 'display':
        this.displaySink?.(f);
        break;
      case 'done': {
        const done = toDone(f);
        const waiter = this.waiters.get(done.id);
        this.waiters.delete(done.id);
        waiter?.(done);
        break;
      }
      default:
        this.logger?.debug({ frame: f }, 'kernel frame ignored');
    }
  }

  get alive(): boolean {
    return this.exitStatus === null && this.disposed === null;
  }

  /** Host pid of the sandbox's outermost process (for diagnostics). */
  get pid(): number | undefined {
    return this.sandbox.child.pid;
  }

  send(message: Record<string, unknown>): void {
    if (!this.alive) return;
    (message.type === 'run' || this.side === null ? this.sandbox.stdin : this.side).write(encodeFrame(message));
  }

  /**
   * The done frame of call `id`; never settles if the process dies first (race it with exited).
   * `onArrival` runs as the frame is read, before anything the promise's settling sets off.
   */
  waitDone(id: number, onArrival?: (frame: DoneFrame) => void): Promise<DoneFrame> {
    return new Promise((resolve) => this.waiters.set(id, (frame) => {
      onArrival?.(frame);
      resolve(frame);
    }));
  }

  async ping(timeoutMs: number): Promise<boolean> {
    if (!this.alive) return false;
    let timer: NodeJS.Timeout | undefined;
    const answered = new Promise<boolean>((resolve) => this.pongs.push(() => resolve(true)));
    this.send({ type: 'ping' });
    return Promise.race([answered, new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    })]).finally(() => clearTimeout(timer));
  }

  stats(): Promise<CgroupStats | null> {
    return this.sandbox.stats();
  }

  /** SIGKILL the sandbox and wait until it is gone and its output is read; the cgroup stays for stats(). */
  async terminate(): Promise<void> {
    if (this.exitStatus === null) this.sandbox.kill();
    await this.exited;
  }

  /** terminate(), then remove the cgroup. Idempotent. */
  dispose(): Promise<void> {
    this.disposed ??= this.terminate().then(() => this.sandbox.dispose());
    return this.disposed;
  }
}
