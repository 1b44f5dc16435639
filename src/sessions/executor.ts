// One execution in a workspace: wait for a slot, snapshot the workspace, run the sandbox,
// snapshot again and report which files changed. Shared by sessions and one-shot executions.
import type { Logger } from 'pino';
import type { Environment } from '../sandbox/environments.js';
import type { Sandbox } from '../sandbox/sandbox.js';
import type { Program, ResourceLimits, RunResult, VolumeMount } from '../sandbox/types.js';
import type { ExecutionLimiter } from './limiter.js';
import { diffSnapshots, snapshotWorkspace, type WorkspaceSnapshot } from './workspace-fs.js';

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

export type ExecutionResult = RunResult & { files: FileChanges };

export interface ExecutionObserver {
  onFinished(result: Pick<ExecutionResult, 'status' | 'duration_ms'>): void;
}

export interface WorkspaceTarget {
  environment: Environment;
  workspaceDir: string;
  volumes: VolumeMount[];
  identity: { uid: number; gid: number } | null;
  /**
   * The workspace as the previous execution left it, when nothing has changed it since (the
   * caller invalidates it on uploads and deletes): saves one full scan per execution.
   */
  snapshots?: SnapshotCache | undefined;
}

/** Last known snapshot of one workspace; `take` hands it over once, `keep` stores the next. */
export interface SnapshotCache {
  take(): WorkspaceSnapshot | undefined;
  keep(snapshot: WorkspaceSnapshot): void;
}

const SNAPSHOT_MAX_ENTRIES = 100_000;

type ExecutorDeps = { sandbox: Sandbox; limiter: ExecutionLimiter; maxOutputChars: number; logger: Logger; observer?: ExecutionObserver | undefined };

/**
 * The frame every execution runs in, a program or an interpreter cell: wait for a slot, snapshot
 * the workspace, run, snapshot again, report the changed files and the outcome.
 */
export async function withChangedFiles<R extends { status: ExecutionResult['status']; duration_ms: number }>(
  deps: Pick<ExecutorDeps, 'limiter' | 'observer'>,
  target: Pick<WorkspaceTarget, 'workspaceDir' | 'snapshots'>,
  signal: AbortSignal | undefined,
  run: () => Promise<R>,
): Promise<R & { files: FileChanges }> {
  const release = await deps.limiter.acquire(signal);
  try {
    const before = target.snapshots?.take() ?? (await snapshotWorkspace(target.workspaceDir, { maxEntries: SNAPSHOT_MAX_ENTRIES }));
    const result = await run();
    const after = await snapshotWorkspace(target.workspaceDir, { maxEntries: SNAPSHOT_MAX_ENTRIES });
    target.snapshots?.keep(after);
    const { created, modified, deleted } = diffSnapshots(before, after);
    deps.observer?.onFinished(result);
    return { ...result, files: { created, modified, deleted } };
  } finally {
    release();
  }
}

export async function executeInWorkspace(deps: ExecutorDeps, target: WorkspaceTarget, req: ExecutionRequest): Promise<ExecutionResult> {
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
    signal: req.signal,
    onOutput: req.onOutput,
  }));
}
