// Turning what happened during one kernel call into an ExecutionResult-shaped answer.
import type { CgroupStats } from '../cgroups.js';
import type { CapturedOutput } from '../output-capture.js';
import { hintFor, type HintContext, type PythonError } from '../python-error.js';
import { splitExitStatus } from '../runner.js';
import type { ExecutionStatus, RunResult } from '../types.js';
import type { DoneFrame, ExitStatus } from './kernel-process.js';
import type { RichOutput } from './rich-output.js';

export interface KernelRunOptions {
  /** Wall-clock limit of the cell, counted once the interpreter is up. */
  timeoutMs: number;
  maxOutputChars: number;
  /** After the timeout, how long the interrupted cell may take to come back before the kernel is killed. */
  graceMs?: number | undefined;
  /** Aborting (client gone) interrupts the cell, then kills the kernel after graceMs; status 'killed'. */
  signal?: AbortSignal | undefined;
  onOutput?: ((stream: 'stdout' | 'stderr', text: string) => void) | undefined;
  /** Each rich output as it is produced, in order with onOutput's text. */
  onDisplay?: ((output: RichOutput) => void) | undefined;
  /**
   * Called as the cell's done frame is read (the cell is over; the last of its output may still
   * be on its way), before the call's own last steps (reading the cgroup's statistics): what the
   * cell changed can be looked at from then on.
   */
  onCellEnd?: (() => void) | undefined;
}

export interface KernelError extends PythonError {
  traceback: string[];
}

export interface KernelRunResult extends Omit<RunResult, 'error'> {
  error: KernelError | null;
  /** repr() of the cell's final expression, null when there is none or it is None. */
  result: string | null;
  kernel_restarted: boolean;
  /** display() outputs, figures and the final expression's value (execute_result), in order. */
  outputs: RichOutput[];
  /** Outputs were dropped: past MAX_OUTPUT_CHARS characters in all. */
  outputs_truncated: boolean;
}

export type RaceResult = { kind: 'done'; frame: DoneFrame } | { kind: 'exit' } | { kind: 'timeout' } | { kind: 'abort' };

/** Whichever comes first: the done frame, the death of the process, the time limit, the abort. */
export async function raceCall(done: Promise<DoneFrame>, exited: Promise<unknown>, ms: number, signal: AbortSignal | undefined): Promise<RaceResult> {
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const stop = new Promise<RaceResult>((resolve) => {
    timer = setTimeout(() => resolve({ kind: 'timeout' }), ms);
    if (signal) {
      onAbort = () => resolve({ kind: 'abort' });
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
    }
  });
  try {
    return await Promise.race([
      done.then((frame): RaceResult => ({ kind: 'done', frame })),
      exited.then((): RaceResult => ({ kind: 'exit' })),
      stop,
    ]);
  } finally {
    clearTimeout(timer);
    if (onAbort) signal?.removeEventListener('abort', onAbort);
  }
}

export interface CallOutcome {
  /** null: no answer (the process died or was killed). */
  frame: DoneFrame | null;
  /** Why the service stopped the cell, if it did. */
  stop: 'timeout' | 'abort' | null;
  /** The interpreter is gone. */
  lost: boolean;
  exit: ExitStatus | null;
  killedByUs: boolean;
  stdout: CapturedOutput;
  stderr: CapturedOutput;
  outputs: RichOutput[];
  outputsTruncated: boolean;
}

export interface FinishContext {
  options: KernelRunOptions;
  stats: CgroupStats | null;
  cpuMs: number | null;
  restarted: boolean;
  started: number;
  hintContext: HintContext;
}

function statusOf(o: CallOutcome, ctx: FinishContext): { status: ExecutionStatus; exitCode: number | null; signal: string | null } {
  if (o.frame) {
    if (o.stop === 'timeout') return { status: 'timeout', exitCode: null, signal: 'SIGINT' };
    if (o.stop === 'abort') return { status: 'killed', exitCode: null, signal: 'SIGINT' };
    return o.frame.error ? { status: 'error', exitCode: 1, signal: null } : { status: 'ok', exitCode: 0, signal: null };
  }
  if (o.killedByUs) return { status: o.stop === 'timeout' ? 'timeout' : 'killed', exitCode: null, signal: 'SIGKILL' };
  const split = splitExitStatus(o.exit?.code ?? null, o.exit?.signal ?? null);
  if (ctx.stats?.oomKilled) return { status: 'oom', exitCode: null, signal: split.signal ?? 'SIGKILL' };
  if (split.signal !== null || split.exitCode === null) return { status: 'killed', exitCode: null, signal: split.signal };
  return { status: split.exitCode === 0 ? 'ok' : 'error', exitCode: split.exitCode, signal: null };
}

function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}[... ${text.length - max} characters omitted ...]`;
}

export function finishCall(o: CallOutcome, ctx: FinishContext): KernelRunResult {
  const { status, exitCode, signal } = statusOf(o, ctx);
  const timeoutSeconds = ctx.options.timeoutMs / 1000;
  let error: KernelError | null = null;
  const e = o.frame?.error;
  if (e) {
    let hint: string | null;
    if (o.stop === 'timeout') hint = `The code ran longer than the timeout of ${timeoutSeconds} s and was interrupted; the interpreter and its state are kept.`;
    else if (o.stop === 'abort') hint = null;
    else hint = hintFor(e.type.split('.').pop() ?? e.type, e.message.split('\n')[0] ?? '', e.line, ctx.hintContext);
    // Clipped here as well as in the driver: code in the sandbox can write a frame of its own.
    const cap = ctx.options.maxOutputChars;
    error = {
      type: clip(e.type, 200), message: clip(e.message, cap), line: e.line, hint,
      traceback: e.traceback.slice(0, 1000).map((l) => clip(l, cap)),
    };
  }
  return {
    status,
    exit_code: exitCode,
    signal,
    stdout: o.stdout.text,
    stderr: o.stderr.text,
    truncated: o.stdout.truncated || o.stderr.truncated,
    max_output_chars: ctx.options.maxOutputChars,
    timed_out: o.stop === 'timeout',
    timeout_seconds: timeoutSeconds,
    duration_ms: Math.round(performance.now() - ctx.started),
    resources: { memory_peak_bytes: ctx.stats?.memoryPeakBytes ?? null, cpu_ms: ctx.cpuMs },
    error,
    result: status === 'ok' && typeof o.frame?.result === 'string' ? clip(o.frame.result, ctx.options.maxOutputChars) : null,
    kernel_restarted: ctx.restarted,
    outputs: o.outputs,
    outputs_truncated: o.outputsTruncated,
  };
}
