// Owns the rules of sessions: idempotent create, limits, delete with or without data,
// re-attaching kept workspaces, idle expiry, restore after restart, and executions run one at a
// time per session (see session-executions.ts). Framework-free: it takes plain values and a pino logger.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Environment } from '../sandbox/environments.js';
import type { Sandbox } from '../sandbox/sandbox.js';
import { groupedCgroups, type GroupedCgroups } from '../sandbox/cgroups.js';
import type { VolumeMount } from '../sandbox/types.js';
import {
  MaxSessionsError, MaxVolumesError, NetworkModeMismatchError, NetworkModeUnavailableError, PersistentSessionsDisabledError, SessionConflictError, SessionNotFoundError, ShuttingDownError,
  VolumeInUseError, VolumeNotFoundError, WritableRootUnavailableError, NoPythonError,
} from '../errors.js';
import type { EgressDecision } from '../sandbox/network/egress-proxy.js';
import { checkNetworkPatterns, normalizeNetwork, sameNetwork, type NetworkModeName, type NetworkPolicy } from './network-policy.js';
import { SessionNetworks, type NetworkJoin } from './session-networks.js';
import { SessionProcesses } from './session-processes.js';
import type { SessionNetwork } from '../sandbox/network/session-network.js';
import { EnvironmentCache } from './environment-cache.js';
import type { ExecutionObserver, ExecutionRequest, ExecutionResult } from './executor.js';
import { ExecutionLimiter, SerialQueues } from './limiter.js';
import { ChangeTracker } from '../workspace/change-tracker.js';
import { SessionChanges } from './session-changes.js';
import { SessionExecutions, type RunCodeRequest, type RunCodeResult } from './session-executions.js';
import { SessionKernels } from './session-kernels.js';
import type { ContextInfo, ContextLanguage } from './session-contexts.js';
import { executeNotebook, type NotebookRequest, type NotebookResult } from './session-notebooks.js';

export type { ContextInfo, ContextLanguage } from './session-contexts.js';
export type { RichOutput, RunCodeRequest, RunCodeResult } from './session-executions.js';
export type { NotebookRequest, NotebookResult } from './session-notebooks.js';
import {
  deleteRecord, ensureLayout, readAllRecords, sessionDir, storeLayout, workspaceOf, writeRecord,
  type SessionRecord, type StoreLayout,
} from './session-store.js';
import { clearLeftovers, ensureVolume, prepareWorkspace, unmountVolumes } from './session-workspace.js';
import { mountWorkspaceDir, newWorkspace, removeWorkspaceDir, unmountWorkspaceDir } from '../workspace/workspace-dir.js';
import { existingVolumes, removeVolume, volumeUsage, type VolumeUsage } from './session-volumes.js';
import { UidSlots } from './uid-slots.js';
import { SessionRoots, writableRootRefusal } from './session-root.js';
import { IS_ROOT } from '../sandbox/sandbox.js';
import { WorkspacePool } from '../workspace/workspace-pool.js';
import type { WarmObserver, WarmTarget } from '../sandbox/warm/warm-pool.js';
import { OneShotWarm } from './one-shot-warm.js';
import { detectQuotaSupport, mountPointsUnder } from '../workspace/workspace-quota.js';

export interface SessionInfo {
  session_id: string;
  environment: string;
  created_at: string;
  last_activity: string;
  expires_at: string;
  volumes: Record<string, 'ro' | 'rw'>;
  network: NetworkPolicy;
  writable_root: boolean;
  /** The replica that holds it (NODE_ID), when the service runs as several. */
  node_id?: string;
}

/** A shared volume, with the live sessions that name it. */
export interface VolumeInfo extends VolumeUsage {
  name: string;
  in_use: boolean;
  sessions: string[];
}

export interface CreateSessionInput {
  environment?: string | undefined;
  session_id?: string | undefined;
  volumes?: Record<string, 'ro' | 'rw'> | undefined;
  network?: NetworkInput | undefined;
  writable_root?: boolean | undefined;
}

export interface NetworkInput {
  mode?: NetworkModeName | undefined;
  allow?: string[] | undefined;
  deny?: string[] | undefined;
}

/** What the manager reports besides executions (the metrics implement it). */
export interface SessionObserver extends ExecutionObserver {
  onSessionCountChanged(n: number): void;
  /** A new session's workspace: claimed from the pool, or built on the request path. */
  onWorkspaceCreated(source: 'pool' | 'built'): void;
  onWorkspacePoolChanged(ready: number): void;
  /** The egress proxy of an allowlist session (or one-shot run) let a connection through or refused it. */
  onEgressDecision?(decision: EgressDecision['decision']): void;
  /** Warm sandboxes (sandbox/warm/warm-pool.ts): how many are idle or starting, the memory the idle ones hold, the spares being forked. */
  onWarmCounts?: WarmObserver['onCounts'];
  onWarmClaim?: WarmObserver['onClaim'];
  onWarmDiscarded?: WarmObserver['onDiscarded'];
}

export interface SessionManagerDeps {
  config: Config;
  sandbox: Sandbox;
  logger: Logger;
  observer?: SessionObserver | undefined;
  now?: () => number;
}

/** Key of the queue that creates, deletes and expiries of sessions go through, one at a time. */
const LIFECYCLE = '\0lifecycle';

export class SessionManager {
  readonly layout: StoreLayout;
  readonly limiter: ExecutionLimiter;
  private readonly sessions = new Map<string, SessionRecord>();
  private readonly serial = new SerialQueues();
  private readonly dirty = new Set<string>();
  /** fsyncs of new sessions' records, run after the create has answered (see writeRecord). */
  private readonly flushing = new Set<Promise<void>>();
  /** One-shot workspaces being removed after their run's answer (removeOneShotWorkspaceThenRelease). */
  private readonly removing = new Set<Promise<void>>();
  private readonly slots: UidSlots;
  private readonly environments: EnvironmentCache;
  private readonly roots: SessionRoots;
  private readonly executions: SessionExecutions;
  private readonly pool: WorkspacePool;
  private readonly rootPool: WorkspacePool;
  private sweepTimer: NodeJS.Timeout | null = null;
  private closing = false;
  private readonly oneShotRuns = new Set<Promise<unknown>>();
  /** Whether workspaces get a loop-mounted quota image, and why not. */
  quota: { enabled: boolean; reason: string | null } = { enabled: false, reason: 'not checked yet' };
  private readonly now: () => number;

  readonly kernels: SessionKernels;
  readonly changes: SessionChanges;
  /** Per environment, a one-shot workspace with a warm sandbox waiting in it (one-shot-warm.ts). */
  readonly oneShotWarm: OneShotWarm;
  readonly networks: SessionNetworks;
  /** The long-running processes of each session that started one (see session-processes.ts). */
  private readonly processes = new Map<string, SessionProcesses>();
  /** The cgroup group each session's processes nest in (made at its first process), removed with them. */
  private readonly processCgroups = new Map<string, GroupedCgroups>();
  /** Record writes of one session, one after another (a flush never lands after a newer write). */
  private readonly writes = new Map<string, Promise<void>>();
  private tracker: ChangeTracker | null = null;
  private trackerFailures = 0;
  /** Why there is no working change tracker (when there is none). */
  private trackingOffReason = 'not checked yet';

  constructor(private readonly deps: SessionManagerDeps) {
    this.kernels = new SessionKernels({ config: deps.config, sandbox: deps.sandbox, logger: deps.logger });
    this.changes = new SessionChanges(deps.logger);
    this.layout = storeLayout(deps.config.workspaceDir);
    this.networks = new SessionNetworks({
      root: this.layout.net, allowPrivate: deps.config.egressAllowPrivateCidrs, logger: deps.logger,
      onEgressDecision: (d) => deps.observer?.onEgressDecision?.(d.decision),
      onReplacing: async (id) => {
        await this.dropWarm(id);
        await this.kernels.discard(id);
      },
    });
    this.limiter = new ExecutionLimiter(deps.config.maxConcurrentExecutions, deps.config.maxQueuedExecutions);
    this.now = deps.now ?? Date.now;
    this.slots = new UidSlots(() => [...this.sessions.values()].map((s) => s.uid_slot), deps.config.maxConcurrentExecutions + deps.config.maxQueuedExecutions);
    this.environments = new EnvironmentCache(deps.config.environmentsDir, deps.config.workspaceDir, this.now);
    this.roots = new SessionRoots(this.layout, deps.logger);
    this.pool = new WorkspacePool({
      dir: this.layout.pool, size: deps.config.workspacePoolSize, quotaBytes: deps.config.workspaceQuotaBytes, logger: deps.logger,
      onReadyChanged: (ready) => deps.observer?.onWorkspacePoolChanged(ready),
    });
    // Writable-root sessions claim entries already in the shared layout (workspace-image.ts); this
    // pool starts filling at the first such create, so a service that never makes one builds none.
    this.rootPool = new WorkspacePool({
      dir: this.layout.pool, size: deps.config.workspacePoolSize, quotaBytes: deps.config.workspaceQuotaBytes, logger: deps.logger, shared: true,
    });
    this.executions = new SessionExecutions({
      config: deps.config, serial: this.serial, kernels: this.kernels, changes: this.changes,
      isClosing: () => this.closing,
      isLive: (id) => this.sessions.has(id),
      touch: (id) => this.touch(id),
      environmentOf: (record) => this.environmentOf(record),
      workspaceDir: (id) => this.workspaceDir(id),
      ownerOf: (record) => this.ownerOf(record),
      volumeMounts: (volumes) => this.volumeMounts(volumes),
      executorDeps: () => this.executorDeps(),
      networkOf: (record) => this.joinNetwork(record),
      prewarm: (id, target) => this.prewarm(id, target),
    });
    this.oneShotWarm = new OneShotWarm({
      warm: deps.sandbox.runner.warm, root: this.layout.oneshot, logger: deps.logger,
      reserveSlot: () => this.reserveTemporarySlot(),
      releaseSlot: (slot) => this.releaseTemporarySlot(slot),
      identityForSlot: (slot) => this.identityForSlot(slot),
      newWorkspace: (dir, identity) => this.newOneShotWorkspace(dir, identity),
      removeWorkspace: (dir) => this.removeOneShotWorkspace(dir),
      isClosing: () => this.closing,
    });
    deps.sandbox.runner.warm?.observe({
      onCounts: (c) => deps.observer?.onWarmCounts?.(c),
      onClaim: (r) => deps.observer?.onWarmClaim?.(r),
      onDiscarded: (r) => deps.observer?.onWarmDiscarded?.(r),
    });
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
    await this.startChangeTracking();
    await clearLeftovers(this.layout, this.deps.logger);
    await this.networks.init();
    const { records, broken } = await readAllRecords(this.layout);
    for (const id of broken) this.deps.logger.warn({ session_id: id }, 'unreadable session metadata left in place');
    await this.unmountDirsNotLive(new Set(records.map((r) => r.session_id)));
    for (const record of records) {
      if (this.isExpired(record)) {
        await this.removeSessionData(record.session_id);
        this.deps.logger.info({ audit: 'session.expired', session_id: record.session_id }, 'session expired while the service was down');
      } else {
        await mountWorkspaceDir(sessionDir(this.layout, record.session_id), this.deps.logger);
        for (const name of Object.keys(record.volumes)) await this.ensureVolume(name, this.deps.sandbox.identityFor(0)?.gid);
        this.sessions.set(record.session_id, record);
        this.deps.logger.info({ audit: 'session.restored', session_id: record.session_id }, 'session restored');
      }
    }
    this.countChanged();
    // Without quotas a workspace is a mkdir: there is nothing worth building ahead.
    if (this.quota.enabled) this.pool.start();
    const interval = this.deps.config.sweepIntervalSeconds * 1000;
    this.sweepTimer = setInterval(() => void this.sweep().then(() => this.flushDirty()), interval);
    this.sweepTimer.unref();
  }

  /**
   * A session dir without a live session holds no mount, except after a crash: a delete with
   * clear_data=false cut short after its record went, a create cut short before its record was
   * written, an unreadable record. Their images (workspace, overlays) are unmounted here, so each
   * loop device has an owner again; the files stay, mounted again when the workspace is re-attached.
   */
  private async unmountDirsNotLive(live: ReadonlySet<string>): Promise<void> {
    const mounted = await mountPointsUnder(this.layout.sessions);
    for (const id of await fs.readdir(this.layout.sessions)) {
      if (live.has(id)) continue;
      const dir = await fs.realpath(sessionDir(this.layout, id)).catch(() => null);
      if (dir === null || !mounted.some((m) => m.startsWith(`${dir}/`))) continue;
      this.deps.logger.warn({ session_id: id }, 'unmounting the workspace of a session that is not live (left by a crash)');
      await this.unmountSessionDir(id);
    }
  }

  private async unmountSessionDir(id: string): Promise<void> {
    await this.roots.unmount(id);
    await unmountWorkspaceDir(sessionDir(this.layout, id), this.deps.logger);
  }

  /** fanotify needs each workspace to be a file system of its own, which only quota images give. */
  private async startChangeTracking(): Promise<void> {
    let reason: string | null;
    if (this.deps.config.changeTracking === 'off') reason = 'disabled by BUBBLE_SANDBOX_CHANGE_TRACKING=off';
    else if (!this.quota.enabled) reason = 'needs workspace quotas (a file system per workspace)';
    else ({ tracker: this.tracker, reason } = await ChangeTracker.start({ logger: this.deps.logger, onFailure: () => this.restartChangeTracking() }));
    this.changes.useTracker(this.tracker);
    this.trackingOffReason = reason ?? '';
    if (reason !== null && this.deps.config.changeTracking !== 'off') this.deps.logger.warn({ reason }, 'changed files are found by scanning each workspace');
  }

  /**
   * A helper that stopped (killed, or too slow to answer) is replaced after a pause that grows
   * with each failure (1 s, doubling, at most a minute); sessions are scanned meanwhile and
   * watched again afterwards.
   */
  private restartChangeTracking(): void {
    this.changes.useTracker(null);
    this.trackingOffReason = 'the change tracker stopped; restarting it';
    const delay = Math.min(60_000, 1000 * 2 ** this.trackerFailures++);
    const timer = setTimeout(() => {
      if (!this.closing) void this.startChangeTracking();
    }, delay);
    timer.unref();
  }

  /** Whether executions learn their changed files from the kernel (fanotify) or by scanning, and why. */
  get changeTracking(): { mode: 'fanotify' | 'scan'; reason: string | null } {
    return this.tracker?.available ? { mode: 'fanotify', reason: null } : { mode: 'scan', reason: this.trackingOffReason };
  }

  /** The change-tracking helper's pid, when one runs (for operators and tests). */
  get changeTrackerPid(): number | undefined {
    return this.tracker?.available ? this.tracker.pid : undefined;
  }

  get count(): number {
    return this.sessions.size;
  }

  info(r: SessionRecord): SessionInfo {
    const expires = Date.parse(r.last_activity) + this.deps.config.sessionIdleTimeoutSeconds * 1000;
    return {
      session_id: r.session_id, environment: r.environment, created_at: r.created_at,
      last_activity: r.last_activity, expires_at: new Date(expires).toISOString(), volumes: r.volumes,
      network: copyNetwork(r.network), writable_root: r.writable_root,
      ...(this.deps.config.nodeId !== '' ? { node_id: this.deps.config.nodeId } : {}),
    };
  }

  /** Whether a live session has this id (no touch). */
  has(id: string): boolean {
    return this.sessions.has(id);
  }

  /** A new random session id; with NODE_ID it starts with it (n1-3f9c...), so every replica knows where it lives. */
  private newId(): string {
    const random = crypto.randomUUID().replace(/-/g, '');
    return this.deps.config.nodeId === '' ? random : `${this.deps.config.nodeId}-${random}`;
  }

  list(): SessionInfo[] {
    return [...this.sessions.values()].sort((a, b) => a.created_at.localeCompare(b.created_at)).map((r) => this.info(r));
  }

  async resolveEnvironment(name: string): Promise<Environment> {
    return this.environments.resolve(name);
  }

  /** A session's environment: with writable_root, `/` is its own overlay (mounted at first use). */
  async environmentOf(record: SessionRecord): Promise<Environment> {
    const env = await this.resolveEnvironment(record.environment);
    return record.writable_root ? this.roots.environment(record.session_id, env, this.ownerOf(record)) : env;
  }

  /** Creates run one at a time, so the count, the ids and the uid slots cannot race. */
  async create(input: CreateSessionInput): Promise<{ session: SessionInfo; created: boolean }> {
    if (this.closing) throw new ShuttingDownError();
    return this.serial.run(LIFECYCLE, () => this.createNow(input));
  }

  private async createNow(input: CreateSessionInput): Promise<{ session: SessionInfo; created: boolean }> {
    // Queued behind a create or delete when the stop began: close() has waited for those only.
    if (this.closing) throw new ShuttingDownError();
    const environment = input.environment ?? 'bare';
    const volumes = input.volumes ?? {};
    const network = normalizeNetwork(input.network);
    const writableRoot = input.writable_root ?? false;
    this.checkPatterns(network, 'network');
    const id = input.session_id ?? this.newId();
    const existing = this.sessions.get(id);
    if (existing) {
      if (existing.environment !== environment || !sameVolumes(existing.volumes, volumes) || !sameNetwork(existing.network, network) || existing.writable_root !== writableRoot) throw new SessionConflictError(id);
      return { session: this.info(await this.touch(id)), created: false };
    }
    this.networks.assertAvailable(network.mode);
    if (this.sessions.size >= this.deps.config.maxSessions) throw new MaxSessionsError(this.deps.config.maxSessions, 30);
    await this.resolveEnvironment(environment);
    const refusal = writableRoot ? writableRootRefusal(IS_ROOT) : null;
    if (refusal !== null) throw new WritableRootUnavailableError(refusal);
    await this.checkVolumeCap(Object.keys(volumes));

    const slot = this.slots.free(); // no live session or one-shot execution uses it; slot 0 is kept for probes
    const identity = this.deps.sandbox.identityFor(slot);
    const quotaBytes = this.quota.enabled ? this.deps.config.workspaceQuotaBytes : null;
    const pool = writableRoot ? this.rootPool : this.pool;
    if (writableRoot && quotaBytes !== null && !this.closing) this.rootPool.start();
    const source = await prepareWorkspace(this.layout, id, { identity, quotaBytes, pool, logger: this.deps.logger });
    const stamp = new Date(this.now()).toISOString();
    const record: SessionRecord = { session_id: id, environment, created_at: stamp, last_activity: stamp, volumes, uid_slot: slot, network, writable_root: writableRoot };
    let flushed: Promise<void>;
    try {
      if (writableRoot) await this.roots.prepare(id, source, { quotaBytes, pool: this.pool, logger: this.deps.logger });
      const group = this.deps.sandbox.identityFor(0)?.gid;
      for (const name of Object.keys(volumes)) await this.ensureVolume(name, group);
      ({ flushed } = await writeRecord(this.layout, record, { deferFlush: true }));
    } catch (err) {
      // Nothing half made: a workspace built for this create goes again; a kept one stays, but
      // unmounted (no live session holds its loop device).
      if (source !== 'kept') await this.removeSessionData(id).catch(() => undefined);
      else await this.unmountSessionDir(id).catch(() => undefined);
      throw err;
    }
    this.track(flushed.catch((err: unknown) => {
      // Gone already (deleted right after its create) is fine; anything else is worth a look.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.deps.logger.error({ err, session_id: id }, 'could not flush new session metadata to disk');
    }));
    this.sessions.set(id, record);
    this.countChanged();
    if (source === 'kept') this.deps.logger.info({ audit: 'session.reattached', session_id: id, environment, uid_slot: slot }, 'session re-attached to its kept workspace');
    else {
      this.deps.observer?.onWorkspaceCreated(source);
      this.deps.logger.info({ audit: 'session.created', session_id: id, environment, uid_slot: slot, workspace: source, network: network.mode }, 'session created');
    }
    if (source === 'pool') pool.settled();
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
      if (record) await this.persist(record).catch((err: unknown) => this.deps.logger.error({ err, session_id: id }, 'could not write session metadata'));
    }
  }

  /** Writes the record as it is when its turn comes, after the session's earlier writes. */
  private async persist(record: SessionRecord): Promise<void> {
    const id = record.session_id;
    const done = (this.writes.get(id) ?? Promise.resolve()).catch(() => undefined).then(async () => {
      await writeRecord(this.layout, record);
    });
    this.writes.set(id, done);
    try {
      await done;
    } finally {
      if (this.writes.get(id) === done) this.writes.delete(id);
    }
  }

  /**
   * Replaces the allow and/or deny list of an allowlist session (a list left out stays). Every
   * pattern is checked first; the new policy is on disk before the answer, and the egress proxy
   * reads it on its next connection. In the lifecycle queue, so it never races a delete.
   */
  async updateNetwork(id: string, lists: { allow?: string[] | undefined; deny?: string[] | undefined }): Promise<SessionInfo> {
    if (this.closing) throw new ShuttingDownError();
    return this.serial.run(LIFECYCLE, async () => {
      const record = this.sessions.get(id);
      if (!record) throw new SessionNotFoundError(id);
      if (record.network.mode !== 'allowlist') throw new NetworkModeMismatchError(id, record.network.mode);
      this.checkPatterns(lists, '');
      const before = record.network;
      record.network = { mode: 'allowlist', allow: [...(lists.allow ?? before.allow ?? [])], deny: [...(lists.deny ?? before.deny ?? [])] };
      record.last_activity = new Date(this.now()).toISOString();
      try {
        await this.persist(record);
      } catch (err) {
        record.network = before;
        throw err;
      }
      await this.dropWarm(id);
      this.deps.logger.info({ audit: 'session.network_updated', session_id: id, allow: record.network.allow?.length, deny: record.network.deny?.length }, 'session network policy updated');
      return this.info(record);
    });
  }

  private checkPatterns(lists: { allow?: string[] | undefined; deny?: string[] | undefined }, field: string): void {
    checkNetworkPatterns(lists, field);
  }

  /**
   * The session's network namespace, made at its first execution or interpreter start. Its
   * policy is read from the live record, so a PATCH reaches the running proxy.
   */
  private async joinNetwork(record: SessionRecord): Promise<NetworkJoin> {
    const id = record.session_id;
    return this.networks.join(id, {
      policy: () => this.sessions.get(id)?.network ?? record.network,
      identity: this.ownerOf(record),
    });
  }

  /**
   * The session's network (made like an execution makes it), for ports/ and the command line's
   * --forward-port: connectPort reaches 127.0.0.1:port inside its namespace. Touches the session.
   */
  async networkOf(id: string): Promise<SessionNetwork> {
    if (this.closing) throw new ShuttingDownError();
    const record = await this.touch(id);
    const join = await this.joinNetwork(record);
    if (!isSessionNetwork(join)) throw new NetworkModeUnavailableError(record.network.mode, 'sessions share a network namespace only when the service runs as root');
    return join;
  }

  /**
   * The session's processes (made at first use). Touches the session: using its processes is
   * activity, but a process running on its own is not: a session idle past
   * SESSION_IDLE_TIMEOUT_SECONDS expires and its processes are killed with it.
   */
  async processesOf(id: string): Promise<SessionProcesses> {
    if (this.closing) throw new ShuttingDownError();
    const record = await this.touch(id);
    let procs = this.processes.get(id);
    if (!procs) {
      const { sandbox, config, logger } = this.deps;
      // The contract counts a session's processes against the session: they share one group whose
      // memory (no swap) and pids limits are one execution's (MEMORY_LIMIT_BYTES, PIDS_LIMIT),
      // each process in a cgroup of its own below it with its own limits as before.
      const base = sandbox.runner.spawnDeps;
      let spawnDeps = base;
      if (base.cgroups) {
        const group = groupedCgroups(base.cgroups, sandbox.runner.nextCgroupName('sess'), sandbox.defaultLimits);
        this.processCgroups.set(id, group);
        spawnDeps = { ...base, cgroups: group };
      }
      procs = new SessionProcesses({
        sessionId: id,
        config,
        spawnDeps,
        limits: sandbox.defaultLimits,
        nextCgroupName: (prefix) => sandbox.runner.nextCgroupName(prefix),
        logger,
        target: async () => {
          const live = this.sessions.get(id) ?? record;
          const network = await this.joinNetwork(live);
          return {
            environment: await this.processEnvironment(live),
            workspaceDir: this.workspaceDir(id),
            volumes: this.volumeMounts(live.volumes),
            identity: this.ownerOf(live),
            netnsPath: network.netnsPath,
            networkEnv: network.env,
          };
        },
      });
      this.processes.set(id, procs);
    }
    return procs;
  }

  /** The session ends: its processes are killed, and waited for, before its network and workspace go. */
  private async closeProcesses(id: string): Promise<void> {
    const procs = this.processes.get(id);
    if (!procs) return;
    this.processes.delete(id);
    const group = this.processCgroups.get(id);
    this.processCgroups.delete(id);
    await procs.closeAll();
    // Whatever is left in the group (a start that was spawning meanwhile) is killed with it.
    await group?.destroy();
  }

  /** A network of its own for one one-shot run (allowlist or outbound); the caller closes it with closeOneShotNetwork. */
  async openOneShotNetwork(key: string, network: NetworkPolicy, identity: { uid: number; gid: number } | null): Promise<NetworkJoin> {
    return this.networks.join(key, { policy: () => network, identity });
  }

  async closeOneShotNetwork(key: string): Promise<void> {
    await this.networks.close(key);
  }

  /** Checks a one-shot run's network the way a session create does (patterns, then availability). */
  checkOneShotNetwork(input: NetworkInput | undefined, field = 'network'): NetworkPolicy {
    const network = normalizeNetwork(input);
    this.checkPatterns(network, field);
    this.networks.assertAvailable(network.mode);
    return network;
  }

  workspaceDir(id: string): string {
    return workspaceOf(this.layout, id);
  }

  ownerOf(record: SessionRecord): { uid: number; gid: number } | null {
    return this.deps.sandbox.identityFor(record.uid_slot);
  }

  /**
   * Deletes run in the same queue as creates: a create of the same id waits until the delete has
   * unmounted or removed the workspace, instead of re-attaching one that is about to go.
   */
  async delete(id: string, clearData: boolean): Promise<void> {
    if (!clearData && !this.deps.config.allowPersistentSessions) throw new PersistentSessionsDisabledError();
    return this.serial.run(LIFECYCLE, () => this.deleteNow(id, clearData));
  }

  private async deleteNow(id: string, clearData: boolean): Promise<void> {
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
    this.executions.abort(id);
    await this.closeProcesses(id);
    await this.kernels.stop(id);
    await this.serial.run(id, async () => {
      await this.dropWarm(id);
      await this.networks.close(id);
      await this.changes.forget(id, workspaceOf(this.layout, id));
      if (clearData) await this.removeSessionData(id);
      else {
        await deleteRecord(this.layout, id);
        await this.unmountSessionDir(id);
      }
    });
    this.countChanged();
    this.deps.logger.info({ audit: 'session.deleted', session_id: id, clear_data: clearData }, 'session deleted');
  }

  /**
   * Before anything of a create is made: naming volumes that do not exist yet must not take the
   * count past MAX_VOLUMES (0: none may be created). Existing volumes can always be named.
   */
  private async checkVolumeCap(names: readonly string[]): Promise<void> {
    if (names.length === 0) return;
    const existing = new Set(await existingVolumes(this.layout));
    const added = names.filter((n) => !existing.has(n)).length;
    if (added > 0 && existing.size + added > this.deps.config.maxVolumes) throw new MaxVolumesError(this.deps.config.maxVolumes);
  }

  /** The live sessions naming each volume (sorted). */
  private volumeUsers(name: string): string[] {
    return [...this.sessions.values()].filter((r) => Object.hasOwn(r.volumes, name)).map((r) => r.session_id).sort();
  }

  /** Every shared volume on disk, sorted by name; in the lifecycle queue, so never half made or half removed. */
  async listVolumes(): Promise<VolumeInfo[]> {
    return this.serial.run(LIFECYCLE, async () => {
      const out: VolumeInfo[] = [];
      for (const name of await existingVolumes(this.layout)) {
        const sessions = this.volumeUsers(name);
        out.push({ name, in_use: sessions.length > 0, sessions, ...(await volumeUsage(this.layout, name)) });
      }
      return out;
    });
  }

  /**
   * Removes a volume no live session names, with its quota image and loop device. It runs in the
   * lifecycle queue, like creates: a create naming it either comes first (and the delete is 409)
   * or after (and makes a new, empty volume).
   */
  async deleteVolume(name: string): Promise<void> {
    if (this.closing) throw new ShuttingDownError();
    return this.serial.run(LIFECYCLE, async () => {
      if (!(await existingVolumes(this.layout)).includes(name)) throw new VolumeNotFoundError(name);
      const users = this.volumeUsers(name);
      if (users.length > 0) throw new VolumeInUseError(name, users);
      await removeVolume(this.layout, name, this.deps.logger);
      this.deps.logger.info({ audit: 'volume.deleted', volume: name }, 'volume deleted');
    });
  }

  /** Run in the session's workspace, after the session's earlier executions. */
  async execute(id: string, req: ExecutionRequest): Promise<ExecutionResult> {
    return this.executions.execute(id, req);
  }

  /** Run a cell in the session's persistent interpreter, after the session's earlier work. */
  async runCode(id: string, req: RunCodeRequest): Promise<RunCodeResult> {
    return this.executions.runCode(id, req);
  }

  /** A new named context: an interpreter of its own in the session's sandbox, started at its first run_code. */
  async createContext(sessionId: string, input: { language: ContextLanguage }): Promise<ContextInfo> {
    if (!this.sessions.has(sessionId)) throw new SessionNotFoundError(sessionId);
    await this.touch(sessionId);
    const info = this.kernels.contexts.create(sessionId, input.language);
    this.deps.logger.info({ audit: 'context.created', session_id: sessionId, context_id: info.context_id }, 'context created');
    return info;
  }

  async listContexts(sessionId: string): Promise<ContextInfo[]> {
    if (!this.sessions.has(sessionId)) throw new SessionNotFoundError(sessionId);
    await this.touch(sessionId);
    return this.kernels.contexts.list(sessionId);
  }

  /** Stops the context's interpreter (a cell running in it ends as killed) and forgets it. */
  async deleteContext(sessionId: string, contextId: string): Promise<void> {
    if (!this.sessions.has(sessionId)) throw new SessionNotFoundError(sessionId);
    await this.touch(sessionId);
    await this.kernels.stopContext(sessionId, contextId);
    this.deps.logger.info({ audit: 'context.deleted', session_id: sessionId, context_id: contextId }, 'context deleted');
  }

  /** Run a notebook of the workspace with a Jupyter kernel in the session's sandbox (session-notebooks.ts). */
  async executeNotebook(id: string, req: NotebookRequest): Promise<NotebookResult> {
    if (!this.sessions.has(id)) throw new SessionNotFoundError(id);
    return executeNotebook({
      config: this.deps.config,
      defaultLimits: this.deps.sandbox.defaultLimits,
      workspaceDir: (sid) => this.workspaceDir(sid),
      environmentOf: async (sid) => this.resolveEnvironment((await this.touch(sid)).environment),
      execute: (sid, r) => this.executions.execute(sid, r),
    }, id, req);
  }

  /** Restart the session's interpreter on purpose (waits for a running cell's turn to end). */
  async restartKernel(id: string): Promise<void> {
    if (!this.sessions.has(id)) throw new SessionNotFoundError(id);
    await this.touch(id);
    await this.kernels.restart(id);
  }

  /** The API changed the session's files: the cached snapshot no longer describes them. */
  workspaceChanged(id: string): void {
    this.changes.workspaceChanged(id);
  }

  executorDeps() {
    const { config } = this.deps;
    return {
      sandbox: this.deps.sandbox, limiter: this.limiter, maxOutputChars: config.maxOutputChars, logger: this.deps.logger, observer: this.deps.observer,
      changedFilesBudget: { maxPaths: config.maxChangedFiles, maxBytes: config.maxChangedFilesBytes },
    };
  }

  volumeMounts(volumes: Record<string, 'ro' | 'rw'>): VolumeMount[] {
    return Object.entries(volumes).sort(([a], [b]) => a.localeCompare(b)).map(([name, mode]) => ({ name, mode, hostDir: path.join(this.layout.volumes, name) }));
  }

  /** A slot (host uid) of its own for a one-shot execution, released by releaseTemporarySlot. */
  reserveTemporarySlot(): number {
    return this.slots.reserve();
  }

  releaseTemporarySlot(slot: number): void {
    this.slots.release(slot);
  }

  identityForSlot(slot: number): { uid: number; gid: number } | null {
    return this.deps.sandbox.identityFor(slot);
  }

  /** Processes run below process-relay.py, so they need a python3 in the root filesystem. */
  private async processEnvironment(record: SessionRecord): Promise<Environment> {
    const env = await this.environmentOf(record);
    if (!env.python) throw new NoPythonError(record.environment, 'a process (its relay is Python)');
    return env;
  }

  private async removeSessionData(id: string): Promise<void> {
    await this.roots.remove(id);
    await removeWorkspaceDir(sessionDir(this.layout, id), this.deps.logger);
  }

  private isExpired(r: SessionRecord): boolean {
    return this.now() - Date.parse(r.last_activity) > this.deps.config.sessionIdleTimeoutSeconds * 1000;
  }

  /** Remove sessions idle past the timeout (never one that is executing), in the lifecycle queue. */
  async sweep(): Promise<string[]> {
    return this.serial.run(LIFECYCLE, () => this.sweepNow());
  }

  private async sweepNow(): Promise<string[]> {
    const expired: string[] = [];
    for (const record of [...this.sessions.values()]) {
      if (!this.isExpired(record) || this.serial.busy(record.session_id)) continue;
      this.sessions.delete(record.session_id);
      this.dirty.delete(record.session_id);
      await this.closeProcesses(record.session_id);
      await this.kernels.stop(record.session_id);
      await this.dropWarm(record.session_id);
      await this.networks.close(record.session_id);
      await this.changes.forget(record.session_id, workspaceOf(this.layout, record.session_id));
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
    // A create under way (its workspace being built or claimed) finishes first, so the session it
    // makes is among those unmounted below; otherwise its image would be mounted after them and
    // its loop device left attached when the process exits. Later creates are refused.
    await this.serial.run(LIFECYCLE, () => Promise.resolve());
    // Pool entries are built anew at the next start (its quota size may differ): none is kept.
    await this.pool.close();
    await this.rootPool.close();
    const deadline = Date.now() + graceMs;
    while (this.executions.runningCount > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    this.executions.abortAll();
    while (this.executions.runningCount > 0) await new Promise((r) => setTimeout(r, 20));
    await Promise.allSettled(this.oneShotRuns);
    await Promise.all(this.removing);
    // Warm sandboxes bind the workspaces unmounted below: all of them end first.
    await this.oneShotWarm.close();
    await this.deps.sandbox.runner.warm?.close();
    await Promise.all([...this.processes.keys()].map((id) => this.closeProcesses(id)));
    await this.kernels.closeAll();
    await this.networks.closeAll();
    await this.tracker?.close();
    await Promise.all(this.flushing);
    for (const id of this.sessions.keys()) this.dirty.add(id);
    await this.flushDirty();
    // Images are mounted again by init() on the next start.
    for (const id of this.sessions.keys()) await this.unmountSessionDir(id);
    await unmountVolumes(this.layout, this.deps.logger);
  }

  /**
   * The session's next sandbox, built ahead after its execution (never on the request path: on
   * the next turn of the event loop, after the answer is on its way; it holds no execution slot).
   */
  private prewarm(id: string, target: WarmTarget): void {
    const warm = this.deps.sandbox.runner.warm;
    if (!warm?.enabled) return;
    setImmediate(() => {
      if (!this.closing && this.sessions.has(id)) warm.prestart(warmOwner(id), target, { reuse: true });
    });
  }

  /** Ends the session's warm sandbox (its configuration changed, or it is going) and waits until it is gone. */
  private async dropWarm(id: string): Promise<void> {
    await this.deps.sandbox.runner.warm?.dropOwner(warmOwner(id));
  }

  /** Background work close() waits for. */
  private track(work: Promise<void>): void {
    this.flushing.add(work);
    void work.finally(() => this.flushing.delete(work));
  }

  private async ensureVolume(name: string, group: number | undefined): Promise<void> {
    const quotaBytes = this.quota.enabled ? this.deps.config.volumeQuotaBytes : null;
    await ensureVolume(this.layout, name, group, quotaBytes, this.deps.logger);
  }

  /** A throw-away workspace at `dir`/workspace (`dir` must not exist), for one-shot executions. */
  async newOneShotWorkspace(dir: string, owner: { uid: number; gid: number } | null): Promise<void> {
    const quotaBytes = this.quota.enabled ? this.deps.config.workspaceQuotaBytes : null;
    const source = await newWorkspace(dir, { identity: owner, quotaBytes, pool: this.closing ? undefined : this.pool, logger: this.deps.logger });
    if (quotaBytes !== null) this.deps.observer?.onWorkspaceCreated(source);
  }

  async removeOneShotWorkspace(dir: string): Promise<void> {
    await removeWorkspaceDir(dir, this.deps.logger);
  }

  /**
   * A finished one-shot run's workspace is removed after its answer; the run's uid slot is given
   * back only once it is gone (no later run gets that uid while the old files exist). close()
   * waits for these; a crash meanwhile leaves the directory to the next start's clean-up.
   */
  removeOneShotWorkspaceThenRelease(dir: string, slot: number): void {
    const work = this.removeOneShotWorkspace(dir)
      .catch((err: unknown) => this.deps.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'one-shot workspace removal failed'))
      .finally(() => this.releaseTemporarySlot(slot));
    this.removing.add(work);
    void work.finally(() => this.removing.delete(work));
  }

  /**
   * A one-shot run from its start to its answer. close() waits for these before it waits for the
   * workspace removals: a run still building its workspace when the stop began would otherwise
   * start its removal after close() had returned, and the process exit with it mounted.
   */
  async trackOneShot<T>(run: () => Promise<T>): Promise<T> {
    if (this.closing) throw new ShuttingDownError();
    const running = run();
    this.oneShotRuns.add(running);
    try {
      return await running;
    } finally {
      this.oneShotRuns.delete(running);
    }
  }

  /** Resolves once every one-shot workspace whose removal has begun is gone. */
  async oneShotRemovalsSettled(): Promise<void> {
    await Promise.all(this.removing);
  }

  /** Quota workspaces kept ready for new sessions: the target (0 without quotas) and how many are. */
  get workspacePool(): { size: number; ready: number } {
    return { size: this.quota.enabled ? this.deps.config.workspacePoolSize : 0, ready: this.pool.readyCount };
  }

  get isClosing(): boolean {
    return this.closing;
  }

  private countChanged(): void {
    this.deps.observer?.onSessionCountChanged(this.sessions.size);
  }
}

/** The warm pool's owner key of a session's warm sandbox. */
export const warmOwner = (id: string): string => `session:${id}`;

function isSessionNetwork(join: NetworkJoin): join is SessionNetwork {
  return join.netnsPath !== undefined && 'close' in join;
}

function copyNetwork(n: NetworkPolicy): NetworkPolicy {
  return n.mode === 'allowlist' ? { mode: n.mode, allow: [...(n.allow ?? [])], deny: [...(n.deny ?? [])] } : { mode: n.mode };
}

function sameVolumes(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k] === b[k]);
}
