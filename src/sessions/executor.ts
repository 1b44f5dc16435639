// One execution in a workspace: wait for a slot, snapshot the workspace, run the sandbox,
// snapshot again and report which files changed. Shared by sessions and one-shot executions.
import type { Logger } from 'pino';
import type { Environment } from '../sandbox/environments.js';
import type { Sandbox } from '../sandbox/sandbox.js';
import type { Program, ResourceLimits, RunResult, VolumeMount } from '../sandbox/types.js';
import type { PathBudget } from '../workspace/bounded-paths.js';
import { NoPythonError } from '../errors.js';
import type { ExecutionLimiter } from './limiter.js';
import { diffSnapshots, snapshotWorkspace, type SnapshotDiff, type WorkspaceSnapshot } from '../workspace/workspace-fs.js';

export interface ExecutionRequest {
  program: Program;
  stdin?: string | undefined;
  env?: Record<string, string> | undefined;
  timeoutSeconds: number;
  limits: ResourceLimits;
  signal?: AbortSignal | undefined;
  onOutput?: ((stream: 'stdout' | 'stderr', text: string) => void) | undefined;
}

export interface FileChanges {
  created: string[];
  modified: string[];
  deleted: string[];
}

/**
 * files_truncated: the lists are not everything that changed: more paths changed than
 * MAX_CHANGED_FILES / MAX_CHANGED_FILES_BYTES allow (the lists keep the first ones in byte order),
 * or the workspace holds more than SNAPSHOT_MAX_ENTRIES entries.
 */
export type ExecutionResult = RunResult & { files: FileChanges; files_truncated: boolean };

export interface ExecutionObserver {
  onFinished(result: Pick<ExecutionResult, 'status' | 'duration_ms'>): void;
}

export interface WorkspaceTarget {
  environment: Environment;
  workspaceDir: string;
  volumes: VolumeMount[];
  identity: { uid: number; gid: number } | null;
  /** How the session learns what an execution changed; a scan before and after when absent. */
  changes?: ChangeSource | undefined;
  /** The network namespace to run in (a session's, or a one-shot run's); absent: a private loopback-only one. */
  netnsPath?: string | undefined;
}

/** Tells what one execution changed in its workspace. */
export interface ChangeSource {
  /** The workspace as it is now, before the run. */
  before(): Promise<WorkspaceSnapshot>;
  /**
   * What changed since `before` (which it may update in place to the state after the run): the
   * lists hold at most `budget` paths together (all of them when absent).
   */
  after(before: WorkspaceSnapshot, budget?: PathBudget): Promise<SnapshotDiff>;
}

export const SNAPSHOT_MAX_ENTRIES = 100_000;

/** A scan before and a scan after: for workspaces nothing else keeps track of. */
function scanChanges(workspaceDir: string): ChangeSource {
  return {
    before: () => snapshotWorkspace(workspaceDir, { maxEntries: SNAPSHOT_MAX_ENTRIES }),
    after: async (before, budget) => diffSnapshots(before, await snapshotWorkspace(workspaceDir, { maxEntries: SNAPSHOT_MAX_ENTRIES }), budget),
  };
}

type ExecutorDeps = {
  sandbox: Sandbox; limiter: ExecutionLimiter; maxOutputChars: number; logger: Logger; observer?: ExecutionObserver | undefined;
  /** How many changed paths one result lists (MAX_CHANGED_FILES, MAX_CHANGED_FILES_BYTES). */
  changedFilesBudget: PathBudget;
};

/**
 * The frame every execution runs in, a program or an interpreter cell: wait for a slot, snapshot
 * the workspace, run, snapshot again, report the changed files and the outcome.
 *
 * `run` may call `ended` once the code has stopped touching the workspace while it still has
 * work of its own to finish (an interpreter cell: reading its cgroup's statistics): the "after"
 * look starts then, alongside that work, instead of once `run` has resolved. Without the call,
 * it starts when `run` resolves.
 */
export async function withChangedFiles<R extends { status: ExecutionResult['status']; duration_ms: number }>(
  deps: Pick<ExecutorDeps, 'limiter' | 'observer' | 'changedFilesBudget'>,
  target: Pick<WorkspaceTarget, 'workspaceDir' | 'changes'>,
  signal: AbortSignal | undefined,
  run: (ended: () => void) => Promise<R>,
): Promise<R & Pick<ExecutionResult, 'files' | 'files_truncated'>> {
  const release = await deps.limiter.acquire(signal);
  const started: { after: Promise<SnapshotDiff> | null } = { after: null };
  try {
    const changes = target.changes ?? scanChanges(target.workspaceDir);
    const before = await changes.before();
    const look = () => (started.after ??= changes.after(before, deps.changedFilesBudget));
    const result = await run(() => {
      // Awaited below; a failure of a run that rejects first is not left unhandled.
      look().catch(() => undefined);
    });
    const { created, modified, deleted, truncated } = await look();
    deps.observer?.onFinished(result);
    return { ...result, files: { created, modified, deleted }, files_truncated: truncated };
  } finally {
    // A look started by `ended` finishes inside the slot, even when the run failed after it.
    await started.after?.catch(() => undefined);
    release();
  }
}

export async function executeInWorkspace(deps: ExecutorDeps, target: WorkspaceTarget, req: ExecutionRequest): Promise<ExecutionResult> {
  if (req.program.kind === 'script' && !target.environment.python) throw new NoPythonError(target.environment.name, 'a script');
  return withChangedFiles(deps, target, req.signal, () => deps.sandbox.runner.run({
    environment: target.environment,
    workspaceDir: target.workspaceDir,
    volumes: target.volumes,
    program: req.program,
    stdin: req.stdin,
    env: req.env,
    timeoutMs: Math.round(req.timeoutSeconds * 1000),
    maxOutputChars: deps.maxOutputChars,
    limits: req.limits,
    identity: target.identity,
    netnsPath: target.netnsPath,
    signal: req.signal,
    onOutput: req.onOutput,
  }));
}
