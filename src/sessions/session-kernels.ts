// The persistent interpreters of sessions, one per context (the default one and the named ones
// of session-contexts.ts): at most MAX_KERNELS alive in all, least recently used stopped first.
// A context whose interpreter was stopped to make room is told so on its next call
// (kernel_restarted: true), as after an idle stop.
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Environment } from '../sandbox/environments.js';
import { KernelPool } from '../sandbox/kernel/kernel-pool.js';
import { PythonKernel, type KernelRunOptions, type KernelRunResult } from '../sandbox/kernel/kernel.js';
import type { Sandbox } from '../sandbox/sandbox.js';
import type { VolumeMount } from '../sandbox/types.js';
import { kernelKey, sessionOfKernelKey, SessionContexts } from './session-contexts.js';

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
  readonly contexts: SessionContexts;

  constructor(private readonly deps: { config: Config; sandbox: Sandbox; logger: Logger }) {
    this.contexts = new SessionContexts(deps.config.maxContextsPerSession);
  }

  get size(): number {
    return this.pool.size;
  }

  /** Run a cell in the session's default interpreter, or in a named context's (checked by the caller). */
  async run(sessionId: string, target: KernelTarget, code: string, opts: KernelRunOptions, contextId?: string): Promise<KernelRunResult> {
    const key = kernelKey(sessionId, contextId);
    if (!this.pool.peek(key)) await this.makeRoom();
    // Checked again after the await: a context deleted meanwhile gets no interpreter.
    if (contextId !== undefined) this.contexts.check(sessionId, contextId);
    const kernel = this.pool.get(key, () => new PythonKernel({
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
    this.lastUsed.set(key, Date.now());
    this.inCall.add(key);
    let result: KernelRunResult;
    try {
      result = await kernel.run(code, opts);
    } finally {
      this.inCall.delete(key);
    }
    // Unless it was stopped meanwhile (its context or session deleted): nothing to remember then.
    if (this.pool.peek(key) === kernel) this.lastUsed.set(key, Date.now());
    // The interpreter did not survive this call (killed after a timeout, OOM, exited): its state
    // is lost, and the answer says so now; the next call, on a fresh one, says so again.
    const lostNow = kernel.pid === null && result.status !== 'ok';
    if (this.evicted.delete(key) || lostNow) return { ...result, kernel_restarted: true };
    return result;
  }

  /** Kill the session's interpreter on purpose; the next call starts fresh. */
  async restart(sessionId: string): Promise<void> {
    this.evicted.delete(sessionId);
    await this.pool.peek(sessionId)?.restart();
  }

  /** A named context is deleted: its interpreter stops (a running cell ends as killed). */
  async stopContext(sessionId: string, contextId: string): Promise<void> {
    this.contexts.remove(sessionId, contextId);
    await this.stopKey(kernelKey(sessionId, contextId));
  }

  /** The session is gone: its interpreters and contexts go with it. */
  async stop(sessionId: string): Promise<void> {
    this.contexts.dropSession(sessionId);
    for (const key of this.evicted) if (sessionOfKernelKey(key) === sessionId) this.evicted.delete(key);
    await Promise.all(this.keysOf(sessionId).map((key) => this.stopKey(key)));
  }

  /**
   * Stops the session's interpreters for a reason of the service's own (its network namespace was
   * replaced): the session and its contexts live on, and each one's next call says
   * kernel_restarted, as after an eviction.
   */
  async discard(sessionId: string): Promise<void> {
    await Promise.all(this.keysOf(sessionId).map(async (key) => {
      await this.stopKey(key);
      this.evicted.add(key);
    }));
  }

  async closeAll(): Promise<void> {
    this.lastUsed.clear();
    this.contexts.clear();
    await this.pool.closeAll();
  }

  private keysOf(sessionId: string): string[] {
    return this.pool.keys().filter((key) => sessionOfKernelKey(key) === sessionId);
  }

  private async stopKey(key: string): Promise<void> {
    this.lastUsed.delete(key);
    this.evicted.delete(key);
    await this.pool.stop(key);
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
      this.deps.logger.info({ session_id: sessionOfKernelKey(oldest), kernels: this.pool.size }, 'stopping the least recently used interpreter to make room');
      this.lastUsed.delete(oldest);
      await this.pool.stop(oldest);
      this.evicted.add(oldest);
    }
  }
}
