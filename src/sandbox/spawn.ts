// Starts one sandbox process and hands it back alive: the layer under both one-shot runs
// (runner.ts) and long-lived interpreters (kernel).
//
// The chain is: Node → bubble-sandbox-exec (src/sandbox/exec-helper: sets the rlimits, joins the
// cgroups and the session's network namespace, drops to the sandbox's host uid with no groups,
// sets no_new_privs, execs bwrap with an empty environment) → bwrap → program. One exec between
// the service and bwrap, so the child Node sees is bwrap itself and --die-with-parent ties the
// sandbox to this process.
// With a spawn helper (deps.spawner, spawner.ts; the service always has one) the fork and exec
// happen there, off the event loop. Without one (the rootfs CLI, tests that build SpawnDeps by
// hand, SPAWN_HELPER=off) node:child_process does it here, instead of execa: the hot path needs
// raw extra descriptors (args, seccomp, script, O_PATH bind sources) at fixed numbers and nothing
// else on top.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { buildBwrapInvocation, encodeArgs, SANDBOX_PATHS, type BwrapPolicy } from './bwrap-args.js';
import type { CgroupManager, CgroupStats, ExecutionCgroup } from './cgroups.js';
import type { Environment } from './environments.js';
import type { HostLayout } from './host-layout.js';
import { readRootEntries } from './rootfs/root-entries.js';
import type { Spawner, SpawnerFd, SpawnerProcess } from './spawner.js';
import type { ResourceLimits, VolumeMount } from './types.js';

const O_PATH = 0o10000000;
const DIR_FD_FLAGS = O_PATH | fs.constants.O_NOFOLLOW | fs.constants.O_DIRECTORY;

/**
 * bwrap (and the host tools of src/sandbox/network) are named by absolute path: the exec helper
 * gives bwrap an empty environment and does no lookup. They are looked up in a shell's default
 * search path; a name not found is passed as is, so the run fails with exit 127.
 */
const COMMAND_SEARCH_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
const resolvedCommands = new Map<string, string>();

export function resolveCommand(name: string): string {
  if (name.includes('/')) return name;
  const cached = resolvedCommands.get(name);
  if (cached !== undefined) return cached;
  for (const dir of COMMAND_SEARCH_PATH) {
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (!fs.statSync(candidate).isFile()) continue;
    } catch {
      continue;
    }
    resolvedCommands.set(name, candidate);
    return candidate;
  }
  return name;
}

export interface SpawnDeps {
  bwrapPath: string;
  /** The compiled exec helper (BUBBLE_SANDBOX_EXEC_HELPER_PATH), checked by checkExecHelper at start-up. */
  execHelperPath: string;
  layout: HostLayout;
  seccompProgram: Buffer | null;
  cgroups: CgroupManager | null;
  /** The spawn helper that forks for us (spawner.ts); absent: node:child_process forks the service. */
  spawner?: Spawner | null | undefined;
}

export interface SandboxSpec {
  environment: Environment | null;
  workspaceDir: string;
  volumes: VolumeMount[];
  /** The program; a function gets the numbers the extra pipes have inside (known only once the descriptors are laid out). */
  command: string[] | ((extraFds: number[]) => string[]);
  /** Files placed read-only in /sandbox, by name (main.py: the script; launch.py: its launcher). */
  sandboxFiles?: Readonly<Record<string, string>>;
  env: Record<string, string>;
  limits: ResourceLimits;
  identity: { uid: number; gid: number } | null;
  /** RLIMIT_CPU of the sandbox, a backstop behind the wall-clock timeout. */
  cpuSeconds: number;
  /** A host directory bound read-only at /sandbox (a warm sandbox's, see warm/warm-pool.ts); exclusive with sandboxFiles. */
  sandboxDir?: string | undefined;
  /** Extra pipes that stay open inside (for a kernel's control channel); their fd numbers are returned. */
  extraPipes?: number;
  cgroupName: string;
  /**
   * A session's network namespace (SessionNetwork.netnsPath, /proc/<pid>/fd/<n>): the sandbox
   * joins it and shares it with the session's other sandboxes. Undefined: a private netns with
   * loopback only, as before.
   */
  netnsPath?: string | undefined;
  /**
   * The sandbox of a fork server (warm/fork-server.ts): no seccomp filter and no /proc masks (each
   * execution it forks sets both up itself, a masked /proc would forbid its fresh one), CAP_SYS_ADMIN
   * and CAP_SETPCAP kept in its own user namespace (dropped by each execution before its program),
   * and Node's IPC channel as the last descriptor (the command function gets its number last).
   * Started by node:child_process: the spawn helper hands back sockets, not a channel.
   */
  forkServer?: boolean;
}

/** Node's IPC channel to a fork server: the part of ChildProcess that speaks it. */
export interface IpcChannel {
  send(message: unknown, callback?: (error: Error | null) => void): boolean;
  on(event: 'message', listener: (message: unknown, handle?: unknown) => void): unknown;
  off(event: 'message', listener: (message: unknown, handle?: unknown) => void): unknown;
  readonly connected: boolean;
}

/** The sandbox's process as its users see it: a ChildProcess or the spawn helper's SpawnerProcess. */
export interface SandboxChild {
  readonly pid?: number | undefined;
  readonly exitCode: number | null;
  readonly signalCode: NodeJS.Signals | null;
}

export interface SpawnedSandbox {
  child: SandboxChild;
  stdin: Writable;
  stdout: Readable;
  stderr: Readable;
  /** Extra pipes, with the descriptor number each has inside the sandbox. */
  extra: { fd: number; stream: Readable & Writable }[];
  /** SIGKILL bwrap (its PID namespace dies with it) and everything in the cgroup. */
  kill(): void;
  /** Resolves once the process has exited and its pipes closed. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stats(): Promise<CgroupStats | null>;
  /** Kill what is left in the cgroup and remove it. */
  dispose(): Promise<void>;
  /** A fork server's IPC channel (spec.forkServer); absent otherwise. */
  ipc?: IpcChannel;
}

export function baseEnvironment(env: Environment | null): Record<string, string> {
  const venvBin = env?.venvDir ? `${SANDBOX_PATHS.venv}/bin:` : '';
  // In a root filesystem, whatever it installs (apt-get, pip as root) lands in the sbin directories too.
  const system = env?.rootDir ? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' : '/usr/local/bin:/usr/bin:/bin';
  const user = env?.writableRoot ? 'root' : 'sandbox';
  return {
    PATH: `${venvBin}${system}`,
    HOME: SANDBOX_PATHS.tmp,
    TMPDIR: SANDBOX_PATHS.tmp,
    USER: user,
    LOGNAME: user,
    LANG: 'C.UTF-8',
    PYTHONUNBUFFERED: '1',
    PYTHONDONTWRITEBYTECODE: '1',
    PYTHONPATH: SANDBOX_PATHS.workspace,
    MPLBACKEND: 'Agg',
    ...(env?.venvDir ? { VIRTUAL_ENV: SANDBOX_PATHS.venv } : {}),
  };
}

export function pythonFor(env: Environment | null): string {
  return env?.venvDir ? `${SANDBOX_PATHS.venv}/bin/python` : '/usr/bin/python3';
}

export async function spawnSandbox(deps: SpawnDeps, spec: SandboxSpec): Promise<SpawnedSandbox> {
  const usrOverlay = spec.environment?.writableUsrDir;
  const policy: BwrapPolicy = {
    systemMounts: usrOverlay === undefined ? deps.layout.systemMounts
      : deps.layout.systemMounts.map((m) => (m.kind === 'ro-bind' && m.dest === '/usr' ? { kind: 'bind', source: usrOverlay, dest: '/usr' } : m)),
    venvWritable: spec.environment?.writableRoot === true && spec.environment.kind === 'venv',
    etcFiles: deps.layout.etcFiles,
    procMasks: spec.forkServer === true ? [] : deps.layout.procMasks,
    venvDir: spec.environment?.venvDir ?? null,
    rootEntries: spec.environment?.rootDir ? readRootEntries(spec.environment.rootDir, spec.environment.writableRoot) : null,
    ...(spec.environment?.writableRoot ? { insideUid: 0 } : {}),
    sandboxFiles: Object.keys(spec.sandboxFiles ?? {}),
    sandboxDir: spec.sandboxDir ?? null,
    volumes: spec.volumes.map((v) => ({ name: v.name, mode: v.mode })),
    seccomp: deps.seccompProgram !== null && spec.forkServer !== true,
    ...(spec.forkServer === true ? { capAdd: ['CAP_SYS_ADMIN', 'CAP_SETPCAP'] as const } : {}),
    shareNet: spec.netnsPath !== undefined,
    tmpSizeBytes: spec.limits.tmpSizeBytes,
    env: spec.env,
    command: [],
  };
  const laidOut = buildBwrapInvocation(policy);
  // Extra pipes follow bwrap's own descriptors; the command may name them.
  const extraFdNumbers = Array.from({ length: spec.extraPipes ?? 0 }, (_, i) => 3 + laidOut.fdRoles.length + i);
  const ipcFd = spec.forkServer === true ? 3 + laidOut.fdRoles.length + extraFdNumbers.length : null;
  const namedFds = ipcFd === null ? extraFdNumbers : [...extraFdNumbers, ipcFd];
  const invocation = { ...laidOut, argv: [...laidOut.argv, ...(typeof spec.command === 'function' ? spec.command(namedFds) : spec.command)] };
  const cgroup: ExecutionCgroup | null = deps.cgroups ? await deps.cgroups.create(spec.cgroupName, spec.limits) : null;

  if (deps.spawner && ipcFd === null) {
    try {
      return await spawnThroughHelper(deps.spawner, deps, spec, invocation, extraFdNumbers, cgroup);
    } catch (err) {
      await cgroup?.destroy();
      throw err;
    }
  }

  // Bind sources are opened here, without following links, and handed over as descriptors:
  // a workspace or volume swapped for a symlink fails closed instead of exposing the target.
  const openedFds: number[] = [];
  try {
    const stdio: (number | 'pipe' | 'ipc')[] = ['pipe', 'pipe', 'pipe'];
    const payloads = new Map<number, Buffer>([[3, encodeArgs(invocation.options)]]);
    for (const [i, role] of invocation.fdRoles.entries()) {
      const fdNumber = 3 + i;
      if (role.role === 'args' || role.role === 'seccomp' || role.role === 'sandbox-file') {
        stdio.push('pipe');
        if (role.role === 'seccomp' && deps.seccompProgram) payloads.set(fdNumber, deps.seccompProgram);
        if (role.role === 'sandbox-file') payloads.set(fdNumber, Buffer.from(spec.sandboxFiles?.[role.name] ?? '', 'utf8'));
      } else {
        const hostDir = role.role === 'workspace' ? spec.workspaceDir
          : role.role === 'root-entry' ? `${spec.environment?.rootDir ?? '/nonexistent'}/${role.name}`
            : spec.volumes.find((v) => v.name === role.name)?.hostDir;
        if (hostDir === undefined) throw new Error(`no host directory for ${role.role}`);
        const fd = fs.openSync(hostDir, DIR_FD_FLAGS);
        openedFds.push(fd);
        stdio.push(fd);
      }
    }
    for (const fd of extraFdNumbers) {
      if (stdio.length !== fd) throw new Error('extra pipe numbering out of step with bwrap descriptors');
      stdio.push('pipe');
    }
    if (ipcFd !== null) {
      if (stdio.length !== ipcFd) throw new Error('IPC channel numbering out of step with bwrap descriptors');
      stdio.push('ipc');
    }

    const argv = execHelperArgs(spec, cgroup?.procsFiles ?? [], [resolveCommand(deps.bwrapPath), ...invocation.argv]);
    const child = spawn(deps.execHelperPath, argv, { stdio, env: {}, windowsHide: true });
    // The helper joins the cgroup itself: until it is gone it could still do so, and a cgroup
    // given back to the pool (cgroup-pool.ts) must never receive a process of the last execution.
    const helperGone = new Promise<void>((resolve) => {
      if (child.pid === undefined) resolve();
      child.once('exit', () => resolve());
      child.once('error', () => resolve());
    });
    for (const fd of openedFds.splice(0)) fs.closeSync(fd);
    for (const [fdNumber, payload] of payloads) {
      const stream = child.stdio[fdNumber] as Writable | null | undefined;
      stream?.on('error', () => undefined);
      stream?.end(payload);
    }
    child.stdin?.on('error', () => undefined); // the program may exit without reading stdin

    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (code, signal) => resolve({ code, signal }));
    });
    const extra = extraFdNumbers.map((fd) => {
      const stream = child.stdio[fd] as Readable & Writable;
      stream.on('error', () => undefined);
      return { fd, stream };
    });
    return {
      child,
      stdin: child.stdin as Writable,
      stdout: child.stdout as Readable,
      stderr: child.stderr as Readable,
      extra,
      kill: () => {
        child.kill('SIGKILL');
        void cgroup?.killAll();
      },
      exited,
      stats: async () => (cgroup ? cgroup.stats() : null),
      ...(ipcFd !== null ? { ipc: child } : {}),
      // destroy() kills what is left before it removes the cgroup (or empties it for reuse).
      dispose: async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        await helperGone;
        await cgroup?.destroy();
      },
    };
  } catch (err) {
    for (const fd of openedFds) fs.closeSync(fd);
    await cgroup?.destroy();
    throw err;
  }
}

type ExitStatus = { code: number | null; signal: NodeJS.Signals | null };

/**
 * As ChildProcess's 'close', for a sandbox whose streams are sockets handed over (the spawn
 * helper's, a fork server's): the exit, then every readable end closed. Output nobody reads is
 * drained once the process is gone, so an unread stream cannot hold the answer back; stdin goes.
 */
export function closedAfterExit(exitedOnly: Promise<ExitStatus>, readable: Readable[], stdin: Writable): Promise<ExitStatus> {
  return exitedOnly.then(async (status) => {
    for (const s of readable) if (s.readableFlowing !== true && s.listenerCount('readable') === 0) s.resume();
    await Promise.all(readable.map((s) => (s.closed ? Promise.resolve() : new Promise<void>((resolve) => s.once('close', () => resolve())))));
    stdin.destroy();
    return status;
  });
}

type Invocation = ReturnType<typeof buildBwrapInvocation>;

/** Where a bind source of the invocation lives on the host. */
function hostDirFor(role: Invocation['fdRoles'][number], spec: SandboxSpec): string {
  const hostDir = role.role === 'workspace' ? spec.workspaceDir
    : role.role === 'root-entry' ? `${spec.environment?.rootDir ?? '/nonexistent'}/${role.name}`
      : role.role === 'volume' ? spec.volumes.find((v) => v.name === role.name)?.hostDir : undefined;
  if (hostDir === undefined) throw new Error(`no host directory for ${role.role}`);
  return hostDir;
}

/**
 * The same sandbox through the spawn helper: it fills the payloads (memfds), opens the bind
 * sources with O_PATH|O_NOFOLLOW|O_DIRECTORY itself (a planted link fails closed there), forks and
 * hands back the stdio and extra sockets.
 */
async function spawnThroughHelper(spawner: Spawner, deps: SpawnDeps, spec: SandboxSpec, invocation: Invocation, extraFdNumbers: number[], cgroup: ExecutionCgroup | null): Promise<SpawnedSandbox> {
  const fds: SpawnerFd[] = invocation.fdRoles.map((role): SpawnerFd => {
    if (role.role === 'args') return { kind: 'payload', data: encodeArgs(invocation.options) };
    if (role.role === 'seccomp') return { kind: 'payload', data: deps.seccompProgram ?? Buffer.alloc(0) };
    if (role.role === 'sandbox-file') return { kind: 'payload', data: Buffer.from(spec.sandboxFiles?.[role.name] ?? '', 'utf8') };
    return { kind: 'directory', path: hostDirFor(role, spec) };
  });
  fds.push(...extraFdNumbers.map((): SpawnerFd => ({ kind: 'socket' })));
  const argv = [deps.execHelperPath, ...execHelperArgs(spec, cgroup?.procsFiles ?? [], [resolveCommand(deps.bwrapPath), ...invocation.argv])];
  const proc: SpawnerProcess = await spawner.spawn({ argv, fds });
  const socket = (fd: number) => {
    const s = proc.sockets.get(fd);
    if (s === undefined) throw new Error(`the spawn helper did not hand back descriptor ${fd}`);
    s.on('error', () => undefined); // the program may exit without reading stdin, or close a pipe early
    return s;
  };
  const stdin = socket(0);
  const stdout = socket(1);
  const stderr = socket(2);
  const extra = extraFdNumbers.map((fd) => ({ fd, stream: socket(fd) }));
  const readable = [stdout, stderr, ...extra.map((e) => e.stream)];
  const exitedOnly = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) resolve({ code: proc.exitCode, signal: proc.signalCode });
    else proc.once('exit', (code: number | null, signal: NodeJS.Signals | null) => resolve({ code, signal }));
  });
  const exited = closedAfterExit(exitedOnly, readable, stdin);
  return {
    child: proc,
    stdin,
    stdout,
    stderr,
    extra,
    kill: () => {
      proc.kill('SIGKILL');
      void cgroup?.killAll();
    },
    exited,
    stats: async () => (cgroup ? cgroup.stats() : null),
    dispose: async () => {
      proc.kill('SIGKILL');
      // The spawner reaps the helper: once reported, it can no longer join the cgroup.
      await exitedOnly;
      await cgroup?.destroy();
    },
  };
}

/**
 * The exec helper's options: rlimits (RLIMIT_FSIZE in whole 512-byte blocks, as `ulimit -f` set
 * it), the cgroups to join, the netns to join, the identity to drop to. no_new_privs goes with the
 * identity: that is when the helper starts as root and gives it up.
 */
export function execHelperArgs(spec: Pick<SandboxSpec, 'limits' | 'cpuSeconds' | 'identity' | 'netnsPath'>, procsFiles: readonly string[], program: string[]): string[] {
  const fsizeBytes = Math.max(1, Math.floor(spec.limits.fileSizeBytes / 512)) * 512;
  return [
    '--nofile', String(spec.limits.openFiles),
    '--fsize', String(fsizeBytes),
    '--cpu', String(Math.max(1, Math.ceil(spec.cpuSeconds))),
    ...procsFiles.flatMap((f) => ['--cgroup-procs', f]),
    ...(spec.netnsPath !== undefined ? ['--netns', spec.netnsPath] : []),
    ...(spec.identity ? ['--uid', String(spec.identity.uid), '--gid', String(spec.identity.gid), '--no-new-privs'] : []),
    '--', ...program,
  ];
}

/**
 * Throws unless the exec helper is there, executable, and cannot be replaced by anyone but its
 * owner (root or us): it runs as root for every sandbox. Called when the sandbox is assembled, so
 * a missing helper stops the start-up instead of failing every execution later.
 */
export function checkExecHelper(helperPath: string, what = 'exec helper'): void {
  const fix = 'run scripts/build-exec-helper.sh (setup.sh does), or set BUBBLE_SANDBOX_EXEC_HELPER_PATH';
  let st: fs.Stats;
  try {
    fs.accessSync(helperPath, fs.constants.X_OK);
    st = fs.statSync(helperPath);
  } catch (err) {
    throw new Error(`the sandbox ${what} ${helperPath} is missing or not executable (${(err as NodeJS.ErrnoException).code ?? String(err)}): ${fix}`);
  }
  if (!st.isFile()) throw new Error(`the sandbox ${what} ${helperPath} is not a regular file: ${fix}`);
  const me = process.getuid?.() ?? 0;
  for (const p of [helperPath, path.dirname(helperPath)]) {
    const s = fs.statSync(p);
    if ((s.uid !== 0 && s.uid !== me) || (s.mode & 0o022) !== 0) {
      throw new Error(`the sandbox ${what} ${p} may be changed by another user (owner ${s.uid}, mode ${(s.mode & 0o7777).toString(8)}); it runs as root for every sandbox`);
    }
  }
}
