// The persistent interpreters of sessions: at most MAX_KERNELS alive, least recently used
// stopped first. A session whose interpreter was stopped to make room is told so on its next call
// (kernel_restarted: true), as after an idle stop.
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Environment } from '../sandbox/environments.js';
import { KernelPool } from '../sandbox/kernel/kernel-pool.js';
import { PythonKernel, type KernelRunOptions, type KernelRunResult } from '../sandbox/kernel/kernel.js';
import type { Sandbox } from '../sandbox/sandbox.js';
import type { VolumeMount } from '../sandbox/types.js';

export interface KernelTarget {
  environment: Environment;
  workspaceDir: string;
  volumes: VolumeMount[];
  identity: { uid: number; gid: number } | null;
  /** The session's network namespace; a restarted interpreter joins the same one. */
  netnsPath?: string | undefined;
  /** Variables of the session's network (the proxy variables of an allowlist session). */
  env?: Record<string, string> | undefined;
}

export class SessionKernels {
  private readonly pool = new KernelPool();
  private readonly lastUsed = new Map<string, number>();
  private readonly evicted = new Set<string>();
  private readonly inCall = new Set<string>();

  constructor(private readonly deps: { config: Config; sandbox: Sandbox; logger: Logger }) {}

  get size(): number {
    return this.pool.size;
  }

  async run(sessionId: string, target: KernelTarget, code: string, opts: KernelRunOptions): Promise<KernelRunResult> {
    if (!this.pool.peek(sessionId)) await this.makeRoom();
    const kernel = this.pool.get(sessionId, () => new PythonKernel({
      runner: this.deps.sandbox.runner,
      environment: target.environment,
      workspaceDir: target.workspaceDir,
      volumes: target.volumes,
      limits: this.deps.sandbox.defaultLimits,
      identity: target.identity,
      netnsPath: target.netnsPath,
      env: target.env,
      idleMs: this.deps.config.kernelIdleTimeoutSeconds * 1000,
      logger: this.deps.logger,
    }));
    this.lastUsed.set(sessionId, Date.now());
    this.inCall.add(sessionId);
    let result: KernelRunResult;
    try {
      result = await kernel.run(code, opts);
    } finally {
      this.inCall.delete(sessionId);
    }
    this.lastUsed.set(sessionId, Date.now());
    // The interpreter did not survive this call (killed after a timeout, OOM, exited): its state
    // is lost, and the answer says so now; the next call, on a fresh one, says so again.
    const lostNow = kernel.pid === null && result.status !== 'ok';
    if (this.evicted.delete(sessionId) || lostNow) return { ...result, kernel_restarted: true };
    return result;
  }

  /** Kill the session's interpreter on purpose; the next call starts fresh. */
  async restart(sessionId: string): Promise<void> {
    this.evicted.delete(sessionId);
    await this.pool.peek(sessionId)?.restart();
  }

  /** The session is gone: its interpreter goes with it. */
  async stop(sessionId: string): Promise<void> {
    this.lastUsed.delete(sessionId);
    this.evicted.delete(sessionId);
    await this.pool.stop(sessionId);
  }

  /**
   * Stops the session's interpreter for a reason of the service's own (its network namespace was
   * replaced): the session lives on, and its next call says kernel_restarted, as after an eviction.
   */
  async discard(sessionId: string): Promise<void> {
    const had = this.pool.peek(sessionId) !== undefined;
    await this.stop(sessionId);
    if (had) this.evicted.add(sessionId);
  }

  async closeAll(): Promise<void> {
    this.lastUsed.clear();
    await this.pool.closeAll();
  }

  /**
   * Stops idle interpreters, least recently used first, until there is room. One in the middle of
   * a call is never taken: when all are busy the cap is exceeded for a while (the execution
   * limiter already bounds how many can be busy at once).
   */
  private async makeRoom(): Promise<void> {
    while (this.pool.size >= this.deps.config.maxKernels) {
      const oldest = [...this.lastUsed.entries()].filter(([id]) => !this.inCall.has(id)).sort((a, b) => a[1] - b[1])[0]?.[0];
      if (oldest === undefined) return;
      this.deps.logger.info({ session_id: oldest, kernels: this.pool.size }, 'stopping the least recently used interpreter to make room');
      this.lastUsed.delete(oldest);
      await this.pool.stop(oldest);
      this.evicted.add(oldest);
    }
  }
}
