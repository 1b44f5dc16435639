// Owns the rules of sessions: idempotent create, limits, delete with or without data,
// re-attaching kept workspaces, idle expiry, restore after restart, and executions run one at a
// time per session. Framework-free: it takes plain values and a pino logger.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { findEnvironment, type Environment } from '../sandbox/environments.js';
import type { Sandbox } from '../sandbox/sandbox.js';
import type { VolumeMount } from '../sandbox/types.js';
import {
  EnvironmentNotFoundError, EnvironmentUnavailableError, MaxSessionsError, PersistentSessionsDisabledError,
  SessionConflictError, SessionNotFoundError, ShuttingDownError,
} from '../server/errors.js';
import { executeInWorkspace, type ExecutionObserver, type ExecutionRequest, type ExecutionResult, type SnapshotCache } from './executor.js';
import { ExecutionLimiter, SerialQueues } from './limiter.js';
import { SessionKernels } from './session-kernels.js';
import type { KernelRunResult } from '../sandbox/kernel/kernel.js';
import {
  deleteRecord, ensureLayout, readAllRecords, sessionDir, storeLayout, workspaceOf, writeRecord,
  type SessionRecord, type StoreLayout,
} from './session-store.js';
import { chownTreeSafe, diffSnapshots, removeTreeSafe, snapshotWorkspace, type WorkspaceSnapshot } from './workspace-fs.js';

const SNAPSHOT_MAX_ENTRIES = 100_000;
const ENVIRONMENT_CACHE_MS = 5000;
import {
  createQuotaWorkspace, detectQuotaSupport, mountQuotaWorkspace, removeQuotaWorkspace, unmountQuotaWorkspace,
} from './workspace-quota.js';

export interface SessionInfo {
  session_id: string;
  environment: string;
  created_at: string;
  last_activity: string;
  expires_at: string;
  volumes: Record<string, 'ro' | 'rw'>;
}

export interface CreateSessionInput {
  environment?: string | undefined;
  session_id?: string | undefined;
  volumes?: Record<string, 'ro' | 'rw'> | undefined;
}

export interface SessionManagerDeps {
  config: Config;
  sandbox: Sandbox;
  logger: Logger;
  observer?: (ExecutionObserver & { onSessionCountChanged(n: number): void }) | undefined;
  now?: () => number;
}

export class SessionManager {
  readonly layout: StoreLayout;
  readonly limiter: ExecutionLimiter;
  private readonly sessions = new Map<string, SessionRecord>();
  private readonly serial = new SerialQueues();
  private readonly running = new Map<string, AbortController>();
  private readonly dirty = new Set<string>();
  private readonly temporarySlots = new Set<number>();
  private readonly environmentCache = new Map<string, { at: number; env: Environment | null }>();
  /** Workspace snapshots left by the last execution of each session (see SnapshotCache). */
  private readonly snapshots = new Map<string, WorkspaceSnapshot>();
  private sweepTimer: NodeJS.Timeout | null = null;
  private closing = false;
  /** Whether workspaces get a loop-mounted quota image, and why not. */
  quota: { enabled: boolean; reason: string | null } = { enabled: false, reason: 'not checked yet' };
  private readonly now: () => number;

  readonly kernels: SessionKernels;

  constructor(private readonly deps: SessionManagerDeps) {
    this.kernels = new SessionKernels({ config: deps.config, sandbox: deps.sandbox, logger: deps.logger });
    this.layout = storeLayout(deps.config.workspaceDir);
    this.limiter = new ExecutionLimiter(deps.config.maxConcurrentExecutions, deps.config.maxQueuedExecutions);
    this.now = deps.now ?? Date.now;
  }

  /** Restore live sessions, drop expired ones, clean what a crash left, start the idle sweep. */
  async init(): Promise<void> {
    await ensureLayout(this.layout);
    if (this.deps.config.workspaceQuota === 'off') this.quota = { enabled: false, reason: 'disabled by BUBBLE_SANDBOX_WORKSPACE_QUOTA=off' };
    else {
      const support = await detectQuotaSupport(this.deps.logger);
      this.quota = { enabled: support.available, reason: support.reason };
      if (!support.available) this.deps.logger.warn({ reason: support.reason }, 'workspace quotas unavailable: a session can fill the disk up to RLIMIT_FSIZE per file');
    }
    for (const entry of await fs.readdir(this.layout.staging)) await removeTreeSafe(path.join(this.layout.staging, entry));
    for (const entry of await fs.readdir(this.layout.oneshot, { withFileTypes: true })) {
      const dir = path.join(this.layout.oneshot, entry.name);
      if (entry.isDirectory()) await removeQuotaWorkspace(dir, path.join(dir, 'workspace'), this.deps.logger).catch(() => undefined);
      await removeTreeSafe(dir);
    }
    const { records, broken } = await readAllRecords(this.layout);
    for (const id of broken) this.deps.logger.warn({ session_id: id }, 'unreadable session metadata left in place');
    for (const record of records) {
      if (this.isExpired(record)) {
        await this.removeSessionData(record.session_id);
        this.deps.logger.info({ audit: 'session.expired', session_id: record.session_id }, 'session expired while the service was down');
      } else {
        await mountQuotaWorkspace(sessionDir(this.layout, record.session_id), workspaceOf(this.layout, record.session_id), this.deps.logger);
        this.sessions.set(record.session_id, record);
        this.deps.logger.info({ audit: 'session.restored', session_id: record.session_id }, 'session restored');
      }
    }
    this.countChanged();
    const interval = this.deps.config.sweepIntervalSeconds * 1000;
    this.sweepTimer = setInterval(() => void this.sweep().then(() => this.flushDirty()), interval);
    this.sweepTimer.unref();
  }

  get count(): number {
    return this.sessions.size;
  }

  info(r: SessionRecord): SessionInfo {
    const expires = Date.parse(r.last_activity) + this.deps.config.sessionIdleTimeoutSeconds * 1000;
    return {
      session_id: r.session_id, environment: r.environment, created_at: r.created_at,
      last_activity: r.last_activity, expires_at: new Date(expires).toISOString(), volumes: r.volumes,
    };
  }

  list(): SessionInfo[] {
    return [...this.sessions.values()].sort((a, b) => a.created_at.localeCompare(b.created_at)).map((r) => this.info(r));
  }

  /**
   * Environments change only when an operator rebuilds them, so a lookup is reused for a few
   * seconds instead of reading pyproject.toml and resolving the venv on every execution.
   */
  async resolveEnvironment(name: string): Promise<Environment> {
    const hit = this.environmentCache.get(name);
    let env: Environment | null;
    if (hit && this.now() - hit.at < ENVIRONMENT_CACHE_MS) env = hit.env;
    else {
      env = await findEnvironment(this.deps.config.environmentsDir, name);
      this.environmentCache.set(name, { at: this.now(), env });
    }
    if (!env) throw new EnvironmentNotFoundError(name);
    if (!env.usable) throw new EnvironmentUnavailableError(name, env.reason ?? 'not usable');
    return env;
  }

  /** Creates run one at a time, so the count, the ids and the uid slots cannot race. */
  async create(input: CreateSessionInput): Promise<{ session: SessionInfo; created: boolean }> {
    if (this.closing) throw new ShuttingDownError();
    return this.serial.run('\0create', () => this.createNow(input));
  }

  private async createNow(input: CreateSessionInput): Promise<{ session: SessionInfo; created: boolean }> {
    const environment = input.environment ?? 'bare';
    const volumes = input.volumes ?? {};
    const id = input.session_id ?? crypto.randomUUID().replace(/-/g, '');
    const existing = this.sessions.get(id);
    if (existing) {
      if (existing.environment !== environment || !sameVolumes(existing.volumes, volumes)) throw new SessionConflictError(id);
      return { session: this.info(await this.touch(id)), created: false };
    }
    if (this.sessions.size >= this.deps.config.maxSessions) throw new MaxSessionsError(this.deps.config.maxSessions, 30);
    await this.resolveEnvironment(environment);

    const slot = this.freeSlot();
    const identity = this.deps.sandbox.identityFor(slot);
    const dir = sessionDir(this.layout, id);
    const workspace = workspaceOf(this.layout, id);
    await fs.mkdir(dir, { recursive: true, mode: 0o711 });
    let reattached = false;
    try {
      await fs.mkdir(workspace, { mode: 0o755 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      reattached = true;
    }
    const st = await fs.lstat(workspace);
    if (!st.isDirectory()) throw new Error(`workspace of ${id} is not a directory`);
    if (reattached) {
      await mountQuotaWorkspace(dir, workspace, this.deps.logger);
      if (identity) await chownTreeSafe(workspace, identity.uid, identity.gid);
    } else {
      if (identity) await fs.lchown(workspace, identity.uid, identity.gid);
      if (this.quota.enabled) await createQuotaWorkspace(dir, workspace, this.deps.config.workspaceQuotaBytes, identity, this.deps.logger);
    }
    for (const name of Object.keys(volumes)) await this.ensureVolume(name);

    const stamp = new Date(this.now()).toISOString();
    const record: SessionRecord = { session_id: id, environment, created_at: stamp, last_activity: stamp, volumes, uid_slot: slot };
    await writeRecord(this.layout, record);
    this.sessions.set(id, record);
    this.countChanged();
    this.deps.logger.info({ audit: reattached ? 'session.reattached' : 'session.created', session_id: id, environment, uid_slot: slot }, reattached ? 'session re-attached to its kept workspace' : 'session created');
    return { session: this.info(record), created: true };
  }

  /** The record of a live session, with last_activity refreshed. */
  // last_activity is written to disk lazily (flushDirty), keeping fsync off the request path;
  // a crash loses at most one flush interval of idle-time bookkeeping, never a session.
  async touch(id: string): Promise<SessionRecord> {
    const record = this.sessions.get(id);
    if (!record) throw new SessionNotFoundError(id);
    record.last_activity = new Date(this.now()).toISOString();
    this.dirty.add(id);
    return Promise.resolve(record);
  }

  async flushDirty(): Promise<void> {
    const ids = [...this.dirty];
    this.dirty.clear();
    for (const id of ids) {
      const record = this.sessions.get(id);
      if (record) await writeRecord(this.layout, record).catch((err: unknown) => this.deps.logger.error({ err, session_id: id }, 'could not write session metadata'));
    }
  }

  workspaceDir(id: string): string {
    return workspaceOf(this.layout, id);
  }

  ownerOf(record: SessionRecord): { uid: number; gid: number } | null {
    return this.deps.sandbox.identityFor(record.uid_slot);
  }

  async delete(id: string, clearData: boolean): Promise<void> {
    if (!clearData && !this.deps.config.allowPersistentSessions) throw new PersistentSessionsDisabledError();
    const record = this.sessions.get(id);
    if (!record) {
      const kept = await fs.lstat(workspaceOf(this.layout, id)).catch(() => null);
      if (!kept) throw new SessionNotFoundError(id);
      if (clearData) await this.removeSessionData(id);
      this.deps.logger.info({ audit: 'session.deleted', session_id: id, clear_data: clearData, kept_workspace: true }, 'kept workspace deleted');
      return;
    }
    this.sessions.delete(id);
    this.dirty.delete(id);
    this.snapshots.delete(id);
    this.running.get(id)?.abort();
    await this.kernels.stop(id);
    await this.serial.run(id, async () => {
      if (clearData) await this.removeSessionData(id);
      else {
        await deleteRecord(this.layout, id);
        await unmountQuotaWorkspace(workspaceOf(this.layout, id), this.deps.logger);
      }
    });
    this.countChanged();
    this.deps.logger.info({ audit: 'session.deleted', session_id: id, clear_data: clearData }, 'session deleted');
  }

  /** Run in the session's workspace, after the session's earlier executions. */
  async execute(id: string, req: ExecutionRequest): Promise<ExecutionResult> {
    if (this.closing) throw new ShuttingDownError();
    if (!this.sessions.has(id)) throw new SessionNotFoundError(id);
    // Queued before any await, so executions of one session run in arrival order.
    return this.serial.run(id, async () => {
      const record = await this.touch(id);
      const environment = await this.resolveEnvironment(record.environment);
      const ac = new AbortController();
      const onAbort = () => ac.abort();
      req.signal?.addEventListener('abort', onAbort, { once: true });
      this.running.set(id, ac);
      try {
        return await executeInWorkspace(
          this.executorDeps(),
          { environment, workspaceDir: workspaceOf(this.layout, id), volumes: this.volumeMounts(record.volumes), identity: this.ownerOf(record), snapshots: this.snapshotCache(id) },
          { ...req, signal: ac.signal },
        );
      } finally {
        this.running.delete(id);
        req.signal?.removeEventListener('abort', onAbort);
        if (this.sessions.has(id)) await this.touch(id).catch(() => undefined);
      }
    });
  }

  /** Run a cell in the session's persistent interpreter, after the session's earlier work. */
  async runCode(id: string, req: { code: string; timeoutSeconds: number; signal?: AbortSignal | undefined; onOutput?: ExecutionRequest['onOutput'] }): Promise<KernelRunResult & { files: ExecutionResult['files'] }> {
    if (this.closing) throw new ShuttingDownError();
    if (!this.sessions.has(id)) throw new SessionNotFoundError(id);
    return this.serial.run(id, async () => {
      const record = await this.touch(id);
      const environment = await this.resolveEnvironment(record.environment);
      const workspaceDir = workspaceOf(this.layout, id);
      const ac = new AbortController();
      const onAbort = () => ac.abort();
      req.signal?.addEventListener('abort', onAbort, { once: true });
      this.running.set(id, ac);
      const release = await this.limiter.acquire(ac.signal);
      try {
        const cache = this.snapshotCache(id);
        const before = cache.take() ?? (await snapshotWorkspace(workspaceDir, { maxEntries: SNAPSHOT_MAX_ENTRIES }));
        const result = await this.kernels.run(id, { environment, workspaceDir, volumes: this.volumeMounts(record.volumes), identity: this.ownerOf(record) }, req.code, {
          timeoutMs: Math.round(req.timeoutSeconds * 1000),
          maxOutputChars: this.deps.config.maxOutputChars,
          graceMs: this.deps.config.kernelInterruptGraceSeconds * 1000,
          signal: ac.signal,
          onOutput: req.onOutput,
        });
        const after = await snapshotWorkspace(workspaceDir, { maxEntries: SNAPSHOT_MAX_ENTRIES });
        cache.keep(after);
        const { created, modified, deleted } = diffSnapshots(before, after);
        this.deps.observer?.onFinished(result);
        return { ...result, files: { created, modified, deleted } };
      } finally {
        release();
        this.running.delete(id);
        req.signal?.removeEventListener('abort', onAbort);
        if (this.sessions.has(id)) await this.touch(id).catch(() => undefined);
      }
    });
  }

  /** Restart the session's interpreter on purpose (waits for a running cell's turn to end). */
  async restartKernel(id: string): Promise<void> {
    if (!this.sessions.has(id)) throw new SessionNotFoundError(id);
    await this.touch(id);
    await this.kernels.restart(id);
  }

  /**
   * Between two executions of a session only the API changes its workspace (its interpreter's
   * background threads aside, whose changes then show in the next report), so the snapshot taken
   * after one execution serves as the "before" of the next. Uploads and deletes call
   * workspaceChanged(); a snapshot is used at most once.
   */
  private snapshotCache(id: string): SnapshotCache {
    return {
      take: () => {
        const s = this.snapshots.get(id);
        this.snapshots.delete(id);
        return s;
      },
      keep: (s) => {
        if (this.sessions.has(id)) this.snapshots.set(id, s);
      },
    };
  }

  /** The API changed the session's files: the cached snapshot no longer describes them. */
  workspaceChanged(id: string): void {
    this.snapshots.delete(id);
  }

  executorDeps() {
    return { sandbox: this.deps.sandbox, limiter: this.limiter, maxOutputChars: this.deps.config.maxOutputChars, logger: this.deps.logger, observer: this.deps.observer };
  }

  volumeMounts(volumes: Record<string, 'ro' | 'rw'>): VolumeMount[] {
    return Object.entries(volumes).sort(([a], [b]) => a.localeCompare(b)).map(([name, mode]) => ({ name, mode, hostDir: path.join(this.layout.volumes, name) }));
  }

  /** A uid slot no live session or one-shot execution uses; slot 0 is kept for probes. */
  freeSlot(): number {
    const used = new Set([...this.sessions.values()].map((s) => s.uid_slot));
    for (const s of this.temporarySlots) used.add(s);
    for (let slot = 1; ; slot++) if (!used.has(slot)) return slot;
  }

  /** A slot (host uid) of its own for a one-shot execution, released by releaseTemporarySlot. */
  reserveTemporarySlot(): number {
    const slot = this.freeSlot();
    this.temporarySlots.add(slot);
    return slot;
  }

  releaseTemporarySlot(slot: number): void {
    this.temporarySlots.delete(slot);
  }

  identityForSlot(slot: number): { uid: number; gid: number } | null {
    return this.deps.sandbox.identityFor(slot);
  }

  private async ensureVolume(name: string): Promise<void> {
    const dir = path.join(this.layout.volumes, name);
    await fs.mkdir(dir, { recursive: true, mode: 0o2775 });
    const st = await fs.lstat(dir);
    if (!st.isDirectory()) throw new Error(`volume ${name} is not a directory`);
    // Every sandbox shares one group; a volume belongs to the service and that group.
    const group = this.deps.sandbox.identityFor(0)?.gid;
    if (group !== undefined) {
      await fs.lchown(dir, 0, group);
      await fs.chmod(dir, 0o2775);
    }
  }

  /** Unmount the quota image (if any), then remove the session directory without following links. */
  private async removeSessionData(id: string): Promise<void> {
    await removeQuotaWorkspace(sessionDir(this.layout, id), workspaceOf(this.layout, id), this.deps.logger);
    await removeTreeSafe(sessionDir(this.layout, id));
  }

  private isExpired(r: SessionRecord): boolean {
    return this.now() - Date.parse(r.last_activity) > this.deps.config.sessionIdleTimeoutSeconds * 1000;
  }

  /** Remove sessions idle past the timeout (never one that is executing). */
  async sweep(): Promise<string[]> {
    const expired: string[] = [];
    for (const record of [...this.sessions.values()]) {
      if (!this.isExpired(record) || this.serial.busy(record.session_id)) continue;
      this.sessions.delete(record.session_id);
      this.dirty.delete(record.session_id);
      this.snapshots.delete(record.session_id);
      await this.kernels.stop(record.session_id);
      await this.removeSessionData(record.session_id);
      expired.push(record.session_id);
      this.deps.logger.info({ audit: 'session.expired', session_id: record.session_id }, 'idle session removed with its data');
    }
    if (expired.length > 0) this.countChanged();
    return expired;
  }

  /** Stop accepting, let running executions finish up to the deadline, kill the rest. */
  async close(graceMs: number): Promise<void> {
    this.closing = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    const deadline = Date.now() + graceMs;
    while (this.running.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const ac of this.running.values()) ac.abort();
    while (this.running.size > 0) await new Promise((r) => setTimeout(r, 20));
    await this.kernels.closeAll();
    for (const id of this.sessions.keys()) this.dirty.add(id);
    await this.flushDirty();
    // Images are mounted again by init() on the next start.
    for (const id of this.sessions.keys()) await unmountQuotaWorkspace(workspaceOf(this.layout, id), this.deps.logger);
  }

  get isClosing(): boolean {
    return this.closing;
  }

  private countChanged(): void {
    this.deps.observer?.onSessionCountChanged(this.sessions.size);
  }
}

function sameVolumes(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k] === b[k]);
}
