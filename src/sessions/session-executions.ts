// Executions inside sessions: programs (execute) and cells of the persistent interpreter (runCode),
// each queued behind the session's earlier work, cancellable on delete or shutdown, and telling
// what they changed through the session's ChangeSource (session-changes.ts).
import type { Config } from '../config.js';
import type { Environment } from '../sandbox/environments.js';
import type { KernelRunResult, RichOutput } from '../sandbox/kernel/kernel.js';
import type { NetworkJoin } from './session-networks.js';
import type { VolumeMount } from '../sandbox/types.js';
import { NoPythonError, SessionNotFoundError, ShuttingDownError } from '../errors.js';
import { executeInWorkspace, withChangedFiles, type ExecutionRequest, type ExecutionResult } from './executor.js';
import type { SerialQueues } from './limiter.js';
import type { SessionChanges } from './session-changes.js';
import type { SessionKernels } from './session-kernels.js';
import type { SessionRecord } from './session-store.js';
import type { WarmTarget } from '../sandbox/warm/warm-pool.js';

export type { RichOutput } from '../sandbox/kernel/kernel.js';

export interface RunCodeRequest {
  code: string;
  timeoutSeconds: number;
  /** A named context of the session (SessionManager.createContext); absent: the default one. */
  contextId?: string | undefined;
  signal?: AbortSignal | undefined;
  onOutput?: ExecutionRequest['onOutput'];
  /** Each rich output as it is produced, in order with onOutput's stdout/stderr. */
  onDisplay?: ((output: RichOutput) => void) | undefined;
}

/** KernelRunResult carries `outputs: RichOutput[]` and `outputs_truncated`. */
export type RunCodeResult = KernelRunResult & Pick<ExecutionResult, 'files' | 'files_truncated'>;

/** What executions need from the session manager that owns the sessions. */
export interface ExecutionHost {
  readonly config: Config;
  readonly serial: SerialQueues;
  readonly kernels: SessionKernels;
  readonly changes: SessionChanges;
  isClosing(): boolean;
  isLive(id: string): boolean;
  touch(id: string): Promise<SessionRecord>;
  /** The session's environment (its writable root mounted when it has one). */
  environmentOf(record: SessionRecord): Promise<Environment>;
  workspaceDir(id: string): string;
  ownerOf(record: SessionRecord): { uid: number; gid: number } | null;
  volumeMounts(volumes: Record<string, 'ro' | 'rw'>): VolumeMount[];
  executorDeps(): Parameters<typeof executeInWorkspace>[0];
  /** The session's network namespace, made at first use. */
  networkOf(record: SessionRecord): Promise<NetworkJoin>;
  /** Build the session's next sandbox ahead (warm), after its turn and off the answer's path. */
  prewarm(id: string, target: WarmTarget): void;
}

export class SessionExecutions {
  private readonly running = new Map<string, AbortController>();

  constructor(private readonly host: ExecutionHost) {}

  get runningCount(): number {
    return this.running.size;
  }

  abort(id: string): void {
    this.running.get(id)?.abort();
  }

  abortAll(): void {
    for (const ac of this.running.values()) ac.abort();
  }

  /** Run in the session's workspace, after the session's earlier executions. */
  async execute(id: string, req: ExecutionRequest): Promise<ExecutionResult> {
    return this.inTurn(id, req.signal, async (record, environment, signal) => {
      const network = await this.host.networkOf(record);
      const target = {
        environment, workspaceDir: this.host.workspaceDir(id), volumes: this.host.volumeMounts(record.volumes), identity: this.host.ownerOf(record),
        netnsPath: network.netnsPath,
      };
      try {
        return await executeInWorkspace(this.host.executorDeps(), { ...target, changes: this.changesOf(id) }, { ...req, env: withNetworkEnv(req.env, network), signal });
      } finally {
        // The next execution of this session most likely looks like this one.
        this.host.prewarm(id, { ...target, limits: req.limits, env: network.env });
      }
    });
  }

  /** Run a cell in the session's persistent interpreter, after the session's earlier work. */
  async runCode(id: string, req: RunCodeRequest): Promise<RunCodeResult> {
    const host = this.host;
    return this.inTurn(id, req.signal, async (record, environment, signal) => {
      if (!environment.python) throw new NoPythonError(environment.name, 'run_code');
      if (req.contextId !== undefined) host.kernels.contexts.check(id, req.contextId);
      const workspaceDir = host.workspaceDir(id);
      const network = await host.networkOf(record);
      const target = { environment, workspaceDir, volumes: host.volumeMounts(record.volumes), identity: host.ownerOf(record), netnsPath: network.netnsPath, env: { ...network.env } };
      return withChangedFiles(host.executorDeps(), { workspaceDir, changes: this.changesOf(id) }, signal, (ended) =>
        host.kernels.run(id, target, req.code, {
          onCellEnd: ended,
          timeoutMs: Math.round(req.timeoutSeconds * 1000),
          maxOutputChars: host.config.maxOutputChars,
          graceMs: host.config.kernelInterruptGraceSeconds * 1000,
          signal,
          onOutput: req.onOutput,
          onDisplay: req.onDisplay,
        }, req.contextId));
    });
  }

  /**
   * The session's turn: queued before any await (so work of one session runs in arrival order),
   * cancellable by the client's signal and by delete or shutdown, and refreshing last_activity.
   */
  private async inTurn<T>(
    id: string,
    clientSignal: AbortSignal | undefined,
    work: (record: SessionRecord, environment: Environment, signal: AbortSignal) => Promise<T>,
  ): Promise<T> {
    const host = this.host;
    if (host.isClosing()) throw new ShuttingDownError();
    if (!host.isLive(id)) throw new SessionNotFoundError(id);
    return host.serial.run(id, async () => {
      const record = await host.touch(id);
      const environment = await host.environmentOf(record);
      const ac = new AbortController();
      const onAbort = () => ac.abort();
      clientSignal?.addEventListener('abort', onAbort, { once: true });
      this.running.set(id, ac);
      try {
        return await work(record, environment, ac.signal);
      } finally {
        this.running.delete(id);
        clientSignal?.removeEventListener('abort', onAbort);
        if (host.isLive(id)) await host.touch(id).catch(() => undefined);
      }
    });
  }

  private changesOf(id: string) {
    return this.host.changes.forSession(id, this.host.workspaceDir(id), () => this.host.isLive(id));
  }
}

/**
 * The request's variables with the network's on top: in an allowlist session the proxy variables
 * always point at the session's proxy (a request cannot point them elsewhere; there is no other
 * way out of the namespace anyway, so overriding them could only break the client's own calls).
 */
export function withNetworkEnv(env: Record<string, string> | undefined, network: Pick<NetworkJoin, 'env'>): Record<string, string> | undefined {
  if (Object.keys(network.env).length === 0) return env;
  return { ...env, ...network.env };
}
