// A session's persistent Python interpreter: started on first use inside the session's sandbox,
// kept between calls, interrupted on timeout and replaced when it cannot be saved.
//
// kernel_restarted is true on the first call after a kernel was lost without being asked to
// (timeout that needed a kill, death during a call, death while idle, idle stop). The first
// kernel of an object is not a restart, and neither is the first one after restart(): the caller
// asked for fresh state and knows it has it.
import type { Logger } from 'pino';
import type { Environment } from '../environments.js';
import { OutputCapture } from '../output-capture.js';
import type { CgroupStats } from '../cgroups.js';
import type { SandboxRunner } from '../runner.js';
import { baseEnvironment } from '../spawn.js';
import type { ResourceLimits, VolumeMount } from '../types.js';
import { KernelProcess } from './kernel-process.js';
import { callSecret, callTokens, MarkerCut } from './marker-cut.js';
import { OutputOrder } from './output-order.js';
import { richOutputOf, RichOutputs, type RichOutput } from './rich-output.js';
import { finishCall, raceCall, type CallOutcome, type KernelRunOptions, type KernelRunResult } from './kernel-result.js';

export type { KernelError, KernelRunOptions, KernelRunResult } from './kernel-result.js';
export type { RichOutput } from './rich-output.js';
export { KernelStartError } from './kernel-process.js';

export interface PythonKernelOptions {
  runner: Pick<SandboxRunner, 'spawnDeps' | 'nextCgroupName'>;
  environment: Environment | null;
  workspaceDir: string;
  volumes: VolumeMount[];
  /** Added to baseEnvironment(environment); fixed for the life of each interpreter. */
  env?: Record<string, string> | undefined;
  limits: ResourceLimits;
  identity: { uid: number; gid: number } | null;
  /** Stop an interpreter idle this long (0 or absent: never). */
  idleMs?: number | undefined;
  /** RLIMIT_CPU of the interpreter, a backstop: per-call limits are wall-clock. */
  cpuSeconds?: number | undefined;
  startTimeoutMs?: number | undefined;
  logger?: Logger | undefined;
  /** The session's network namespace (SessionNetwork.netnsPath); absent: a private loopback-only one. */
  netnsPath?: string | undefined;
}

export class KernelClosedError extends Error {
  override name = 'KernelClosedError';
}

const DEFAULT_GRACE_MS = 2000;
/** After `done`, how long the marker may take to come through stdout/stderr. */
const MARKER_WAIT_MS = 1000;
/** Results and tracebacks travel in one frame: clip them in the driver. */
const MAX_RESULT_CHARS = 2_000_000;

export class PythonKernel {
  private proc: KernelProcess | null = null;
  private lost = false;
  private closed = false;
  private closing: Promise<void> | null = null;
  private busy = false;
  private seq = 0;
  private cpuBaseline: number | null = null;
  private tail: Promise<void> = Promise.resolve();
  private idleTimer: NodeJS.Timeout | null = null;
  private lastActivity = 0;

  constructor(private readonly opts: PythonKernelOptions) {}

  /** Host pid of the current interpreter's sandbox, null when none is running. */
  get pid(): number | null {
    return this.proc?.alive ? (this.proc.pid ?? null) : null;
  }

  /** Run one cell. Calls are served one at a time, in order. Rejects only when the kernel cannot start or is closed. */
  run(code: string, options: KernelRunOptions): Promise<KernelRunResult> {
    return this.enqueue(() => this.execute(code, options));
  }

  /** Start the interpreter now instead of on the first call. */
  start(): Promise<void> {
    return this.enqueue(async () => {
      await this.ensureProcess();
    });
  }

  /** Kill the interpreter now (a running call ends as 'killed'); the next call starts fresh with kernel_restarted false. */
  async restart(): Promise<void> {
    if (this.closed) throw new KernelClosedError('the kernel is closed');
    const proc = this.proc;
    this.proc = null; // no later call may pick it up, and its death is not a loss
    await proc?.terminate();
    await this.enqueue(async () => {
      await proc?.dispose();
      this.lost = false;
    });
  }

  /** Kill and dispose; no process of the kernel survives. Later calls reject with KernelClosedError. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      this.clearIdle();
      await this.proc?.terminate();
      await this.tail;
      await this.drop();
    })();
    return this.closing;
  }

  private enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const job = this.tail.then(fn);
    this.tail = job.then(() => undefined, () => undefined);
    return job;
  }

  private async drop(): Promise<void> {
    const proc = this.proc;
    this.proc = null;
    await proc?.dispose();
  }

  private async ensureProcess(): Promise<{ proc: KernelProcess; restarted: boolean }> {
    if (this.closed) throw new KernelClosedError('the kernel is closed');
    if (this.proc && !this.proc.alive) {
      await this.drop();
      this.lost = true;
    }
    if (this.proc) return { proc: this.proc, restarted: false };
    const o = this.opts;
    const proc = await KernelProcess.start({
      deps: o.runner.spawnDeps,
      cgroupName: o.runner.nextCgroupName('kernel'),
      environment: o.environment,
      workspaceDir: o.workspaceDir,
      volumes: o.volumes,
      env: { ...baseEnvironment(o.environment), ...o.env },
      limits: o.limits,
      identity: o.identity,
      cpuSeconds: o.cpuSeconds ?? 24 * 3600,
      netnsPath: o.netnsPath,
    }, o.startTimeoutMs ?? 20_000, o.logger);
    if (this.closed) {
      await proc.dispose();
      throw new KernelClosedError('the kernel is closed');
    }
    const restarted = this.lost;
    this.lost = false;
    this.proc = proc;
    this.cpuBaseline = (await proc.stats())?.cpuMs ?? null;
    // Died while nobody was calling: release the cgroup now; the next call will say it restarted.
    void proc.exited.then(() => {
      if (this.proc === proc && !this.busy) {
        this.enqueue(async () => {
          if (this.proc !== proc) return;
          await this.drop();
          this.lost = true;
        }).catch(() => undefined);
      }
    });
    o.logger?.debug({ pid: proc.pid, restarted }, 'kernel started');
    return { proc, restarted };
  }

  private async execute(code: string, options: KernelRunOptions): Promise<KernelRunResult> {
    const started = performance.now();
    this.clearIdle();
    this.busy = true;
    try {
      const { proc, restarted } = await this.ensureProcess();
      // Read as soon as the cell has answered, alongside the rest of the call; after a kill, once
      // the interpreter is gone.
      const atEnd: { stats: Promise<CgroupStats | null> | null } = { stats: null };
      const outcome = await this.call(proc, code, options, () => {
        atEnd.stats = proc.stats();
        atEnd.stats.catch(() => undefined); // awaited below, perhaps after other events
      });
      const stats = await (atEnd.stats ?? proc.stats());
      if (outcome.lost) {
        if (this.proc === proc) {
          this.proc = null;
          this.lost = true;
        }
        await proc.dispose();
      }
      const cpuMs = stats?.cpuMs ?? null;
      const cpuDelta = cpuMs !== null && this.cpuBaseline !== null ? Math.max(0, cpuMs - this.cpuBaseline) : cpuMs;
      this.cpuBaseline = cpuMs;
      const env = this.opts.environment;
      return finishCall(outcome, {
        options, stats, cpuMs: cpuDelta, restarted, started,
        hintContext: { environment: env?.name ?? 'system', dependencies: env?.dependencies ?? [] },
      });
    } finally {
      this.busy = false;
      this.lastActivity = performance.now();
      this.armIdle();
    }
  }

  private async call(proc: KernelProcess, code: string, options: KernelRunOptions, answered: () => void): Promise<CallOutcome> {
    const id = ++this.seq;
    const tokens = callTokens(callSecret());
    const stdout = new OutputCapture(options.maxOutputChars, options.onOutput ? (t) => options.onOutput?.('stdout', t) : undefined);
    const stderr = new OutputCapture(options.maxOutputChars, options.onOutput ? (t) => options.onOutput?.('stderr', t) : undefined);
    const outputs = new RichOutputs(options.maxOutputChars);
    const order = new OutputOrder<RichOutput | null>({
      stdout: (c) => stdout.push(c),
      stderr: (c) => stderr.push(c),
      display: (o) => {
        if (o) options.onDisplay?.(o);
      },
    });
    const prefix = Buffer.from(tokens.prefix);
    const cuts = {
      stdout: new MarkerCut(prefix, (c) => order.data('stdout', c), (n) => order.sync('stdout', n)),
      stderr: new MarkerCut(prefix, (c) => order.data('stderr', c), (n) => order.sync('stderr', n)),
    };
    proc.sink = { stdout: (c) => cuts.stdout.push(c), stderr: (c) => cuts.stderr.push(c) };
    proc.displaySink = (f) => {
      const output = f.id === id ? richOutputOf(f) : null;
      if (!output || typeof f.seq !== 'number') return;
      const sync = (f.sync ?? {}) as Record<string, unknown>;
      // Only what fits in the answer is streamed too; a dropped one is skipped in the order.
      order.display(f.seq, outputs.add(output) ? output : null, { stdout: sync.stdout === true, stderr: sync.stderr === true });
    };
    // The race (its timer, its abort listener) is set up before the request goes out: the write
    // wakes the interpreter, often onto this CPU, where it runs only once the event loop sleeps,
    // so nothing should be left to do here after it.
    // The cell is over once its done frame is read (the driver writes its markers before it):
    // what it changed is looked at from that moment, a round trip to another process that then
    // runs while this call finishes its own steps (the race settling, the statistics).
    const done = proc.waitDone(id, () => options.onCellEnd?.());
    const race = raceCall(done, proc.exited, options.timeoutMs, options.signal);
    proc.send({
      type: 'run', id, code, marker: tokens.end, sync: tokens.syncPrefix,
      max_result_chars: Math.min(options.maxOutputChars, MAX_RESULT_CHARS),
      max_outputs_chars: options.maxOutputChars,
    });

    let stop: 'timeout' | 'abort' | null = null;
    let first = await race;
    if (first.kind === 'timeout' || first.kind === 'abort') {
      stop = first.kind;
      proc.send({ type: 'interrupt', id });
      first = await raceCall(done, proc.exited, options.graceMs ?? DEFAULT_GRACE_MS, undefined);
    }
    const frame = first.kind === 'done' ? first.frame : null;
    if (frame) {
      // The statistics now, while the look at the changes (started as the frame came) is under way.
      answered();
      const waits: Promise<void>[] = [];
      if (frame.markers.stdout && !cuts.stdout.found) waits.push(cuts.stdout.reached);
      if (frame.markers.stderr && !cuts.stderr.found) waits.push(cuts.stderr.reached);
      // Usually both markers came in with the frame: no timer, no race.
      if (waits.length > 0) await raceCall(Promise.all(waits).then(() => frame), proc.exited, MARKER_WAIT_MS, undefined);
    } else {
      // Out of time after the interrupt, or dead: kill, and read what it wrote up to its end.
      await proc.terminate();
    }
    proc.sink = null;
    proc.displaySink = null;
    cuts.stdout.flush();
    cuts.stderr.flush();
    order.finish();
    return {
      frame, stop, lost: !proc.alive, exit: proc.exitStatus, killedByUs: frame === null && stop !== null, stdout: stdout.finish(), stderr: stderr.finish(),
      outputs: outputs.list, outputsTruncated: outputs.truncated || frame?.outputsTruncated === true,
    };
  }

  private clearIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }

  private armIdle(): void {
    this.clearIdle();
    const idleMs = this.opts.idleMs ?? 0;
    const proc = this.proc;
    if (idleMs <= 0 || !proc || this.closed) return;
    this.idleTimer = setTimeout(() => {
      this.enqueue(async () => {
        if (this.proc !== proc || performance.now() - this.lastActivity < idleMs - 5) return;
        this.opts.logger?.debug({ pid: proc.pid }, 'kernel idle: stopping it');
        await this.drop();
        this.lost = true;
      }).catch(() => undefined);
    }, idleMs);
    this.idleTimer.unref();
  }
}
