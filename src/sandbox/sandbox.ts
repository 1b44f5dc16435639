// The sandbox as one object: host layout, seccomp program, cgroups and runner, built once from
// the configuration, plus the probe that tells whether a real sandbox can start here.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { createCgroupManager, type CgroupManager } from './cgroups.js';
import { createHostLayout, type HostLayout } from './host-layout.js';
import { createSandboxRunner, type SandboxRunner } from './runner.js';
import { buildSeccompProgram, hostSeccompArch } from './seccomp.js';
import { checkExecHelper } from './spawn.js';
import { createSpawner, spawnerPathFor, type Spawner } from './spawner.js';
import type { ResourceLimits } from './types.js';
import { lockUidRange, type UidRangeLock } from './uid-range-lock.js';

export interface ProbeResult {
  available: boolean;
  reason: string | null;
  duration_ms: number;
}

export interface Sandbox {
  runner: SandboxRunner;
  cgroupMode: 'v2' | 'v1' | 'none';
  cgroupReason: string | null;
  seccomp: boolean;
  /** Host uid/gid for sandboxes: null when we are not root (they run as us). */
  identityFor(slot: number): { uid: number; gid: number } | null;
  defaultLimits: ResourceLimits;
  probe(): Promise<ProbeResult>;
  close(): Promise<void>;
}

export function limitsFromConfig(config: Config): ResourceLimits {
  return {
    memoryBytes: config.memoryLimitBytes,
    pids: config.pidsLimit,
    cpuCores: config.cpuCores,
    tmpSizeBytes: config.tmpSizeBytes,
    fileSizeBytes: config.workspaceQuotaBytes,
    openFiles: config.maxOpenFiles,
  };
}

/** Pids an idle warm sandbox may need (its interpreter and the threads its preloads start), counted into the parent's limit. */
const WARM_PIDS_EACH = 16;

/** The warm pool's bounds from the settings; the private /sandbox directories live under WORKSPACE_DIR/warm. */
export function warmPoolSettings(config: Config): NonNullable<Parameters<typeof createSandboxRunner>[0]['warm']> {
  return {
    dir: path.join(config.workspaceDir, 'warm'),
    max: config.warmSandboxesMax,
    idleMs: config.warmIdleSeconds * 1000,
    memoryBudgetBytes: config.warmMemoryBudgetBytes,
    minAvailableBytes: config.warmMinAvailableBytes,
    // The preload and the longest execution together; the wall-clock timeout still applies from the claim.
    cpuSeconds: config.maxExecutionTimeoutSeconds + 60,
    forkServers: config.warmForkServer === 'on',
  };
}

export const IS_ROOT = process.getuid?.() === 0;

/** Explain a failed probe from what bwrap printed, without host paths. */
export function explainProbeFailure(exitCode: number | null, stderr: string): string {
  if (exitCode === 127 || /bwrap: (?:not found|No such file)/.test(stderr)) return 'bwrap (bubblewrap) is not installed or not in PATH';
  if (/No permissions to creat|setting up uid map|Creating new (?:user )?namespace failed|unshare .*Operation not permitted|user namespace/i.test(stderr)) {
    return 'user namespaces are not permitted for this user (check kernel.unprivileged_userns_clone, user.max_user_namespaces, or the container seccomp/AppArmor profile)';
  }
  if (/seccomp/i.test(stderr)) return 'the seccomp filter could not be loaded';
  const first = stderr.split('\n').find((l) => l.trim().length > 0) ?? `exit code ${String(exitCode)}`;
  return `the sandbox failed to start: ${first.replace(/\/[^\s:'"]+/g, '<path>').slice(0, 200)}`;
}

export interface CreateSandboxOptions {
  /**
   * Hold SANDBOX_UID_BASE..+COUNT for this process (as root: a record in UID_LOCK_DIR, released by
   * close) and reject with UidRangeInUseError while a live instance holds an overlapping range. For
   * the service, which hands out a uid per session; a one-off CLI run uses only the probe uid.
   */
  lockUidRange?: boolean;
  /** Name of the parent cgroup of all sandboxes ('bubble-sandbox'); tests use their own. */
  cgroupParentName?: string;
}

export async function createSandbox(config: Config, logger?: Logger, opts: CreateSandboxOptions = {}): Promise<Sandbox> {
  let uidLock: UidRangeLock | null = null;
  if (opts.lockUidRange && IS_ROOT) {
    uidLock = await lockUidRange(config.uidLockDir, { base: config.sandboxUidBase, count: config.sandboxUidCount });
    if (uidLock.removedStale.length > 0) logger?.info({ dir: config.uidLockDir, removed: uidLock.removedStale }, 'removed uid range records of instances that are gone');
  }
  try {
    return await assembleSandbox(config, logger, opts, uidLock);
  } catch (err) {
    await uidLock?.release();
    throw err;
  }
}

async function assembleSandbox(config: Config, logger: Logger | undefined, opts: CreateSandboxOptions, uidLock: UidRangeLock | null): Promise<Sandbox> {
  checkExecHelper(config.execHelperPath);
  let spawner: Spawner | null = null;
  if (config.spawnHelper === 'on') {
    const spawnerPath = spawnerPathFor(config.execHelperPath);
    checkExecHelper(spawnerPath, 'spawn helper');
    spawner = createSpawner(spawnerPath, logger);
  }
  const layout: HostLayout = createHostLayout();
  const arch = hostSeccompArch();
  const seccompProgram = arch ? buildSeccompProgram(arch) : null;
  if (!seccompProgram) logger?.warn({ arch: process.arch }, 'no seccomp program for this architecture; running without a syscall filter');

  let cgroups: CgroupManager | null = null;
  if (config.cgroups === 'auto') {
    // The parent caps the sum of all sandboxes: at most MAX_CONCURRENT_EXECUTIONS executions run
    // at once, and at most MAX_KERNELS interpreters stay alive between calls (their threads may
    // keep running after a call). Its CPU ceiling keeps a core for the service itself.
    // Idle warm sandboxes live there too: their memory budget and a few pids each come on top.
    const most = config.maxConcurrentExecutions + config.maxKernels;
    const warm = { memoryBytes: config.warmSandboxesMax > 0 ? config.warmMemoryBudgetBytes : 0, pids: config.warmSandboxesMax * Math.min(config.pidsLimit, WARM_PIDS_EACH) };
    cgroups = await createCgroupManager({
      globalLimits: { memoryBytes: config.memoryLimitBytes * most + warm.memoryBytes, pids: config.pidsLimit * most + warm.pids, cpuCores: config.sandboxesCpuCores },
      poolSize: config.cgroupPoolSize,
      ...(opts.cgroupParentName !== undefined ? { parentName: opts.cgroupParentName } : {}),
      ...(logger ? { logger } : {}),
    });
    if (config.cpuCores > config.sandboxesCpuCores) {
      logger?.warn({ cpu_cores: config.cpuCores, sandboxes_cpu_cores: config.sandboxesCpuCores }, 'CPU_CORES exceeds SANDBOXES_CPU_CORES: one execution gets at most SANDBOXES_CPU_CORES');
    }
    if (cgroups.mode === 'none') logger?.warn({ reason: cgroups.reason }, 'cgroups unavailable: memory, process and CPU limits fall back to rlimits');
  }
  const runner: SandboxRunner = createSandboxRunner({
    bwrapPath: config.bwrapPath,
    execHelperPath: config.execHelperPath,
    layout,
    seccompProgram,
    cgroups: cgroups && cgroups.mode !== 'none' ? cgroups : null,
    spawner,
    ...(logger ? { logger } : {}),
    warm: warmPoolSettings(config),
  });
  const defaultLimits = limitsFromConfig(config);

  const identityFor = (slot: number) => {
    if (!IS_ROOT) return null;
    // One host uid per slot (session); one shared group, so rw volumes can be shared.
    const uid = config.sandboxUidBase + (slot % config.sandboxUidCount);
    return { uid, gid: config.sandboxUidBase };
  };

  async function probe(): Promise<ProbeResult> {
    const started = performance.now();
    const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'bubble-sandbox-probe-'));
    const workspace = path.join(parent, 'ws');
    try {
      fs.chmodSync(parent, 0o711); // the sandbox uid must be able to reach its workspace
      fs.mkdirSync(workspace);
      const identity = identityFor(0);
      if (identity) fs.chownSync(workspace, identity.uid, identity.gid);
      const r = await runner.run({
        environment: null,
        workspaceDir: workspace,
        volumes: [],
        program: { kind: 'command', command: 'echo probe-ok' },
        timeoutMs: 10_000,
        maxOutputChars: 2000,
        limits: defaultLimits,
        identity,
      });
      const ok = r.status === 'ok' && r.stdout === 'probe-ok\n';
      return { available: ok, reason: ok ? null : explainProbeFailure(r.exit_code, r.stderr), duration_ms: Math.round(performance.now() - started) };
    } catch (err) {
      logger?.error({ err }, 'sandbox probe failed');
      return { available: false, reason: 'the sandbox probe could not run (see the service log)', duration_ms: Math.round(performance.now() - started) };
    } finally {
      fs.rmSync(parent, { recursive: true, force: true });
    }
  }

  return {
    runner,
    cgroupMode: cgroups?.mode ?? 'none',
    cgroupReason: config.cgroups === 'off' ? 'disabled by BUBBLE_SANDBOX_CGROUPS=off' : (cgroups?.reason ?? null),
    seccomp: seccompProgram !== null,
    identityFor,
    defaultLimits,
    probe,
    close: async () => {
      await runner.warm?.close();
      await spawner?.close();
      await cgroups?.close();
      layout.dispose();
      await uidLock?.release();
    },
  };
}
