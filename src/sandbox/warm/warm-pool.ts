// Pre-started ("warm") sandboxes: a sandbox built ahead for a known target (workspace, environment,
// volumes, identity, limits, network namespace), its interpreter started and the environment's
// preload modules imported, waiting on a private control pipe for the one program it will run.
// An execution whose target matches claims it (a hit) instead of spawning (a miss); it is used
// once and disposed of like a cold sandbox, so every execution still starts from fresh process
// state, a fresh /tmp and a fresh PID namespace.
//
// Bounds: at most `max` warm sandboxes (idle or starting), each idle at most `idleMs`, the idle
// ones together holding at most `memoryBudgetBytes` (their cgroups' memory), and none kept while
// the host's MemAvailable is under `minAvailableBytes` (checked every CHECK_INTERVAL_MS; idle warm
// sandboxes are the first thing given back). Every warm sandbox has an owner key (a session, or a
// one-shot environment): dropOwner() ends it when the owner's configuration changes or it goes.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { SANDBOX_GID, SANDBOX_PATHS, SANDBOX_UID } from '../bwrap-args.js';
import { baseEnvironment, pythonFor, spawnSandbox, type SpawnDeps, type SpawnedSandbox } from '../spawn.js';
import { ForkServer, type ForkTarget } from './fork-server.js';
import type { Program, RunRequest } from '../types.js';
import {
  STARTUP_VARIABLE, clearWarmLeftovers, isSettled, readMemAvailable, sameEnv, shadowsImported, targetKey, type WarmTarget,
} from './warm-rules.js';

export { readMemAvailable, targetKey, type WarmTarget } from './warm-rules.js';

const LAUNCHER_NAME = 'warm-launch.py';
/**
 * The files every warm sandbox's /sandbox starts with: warm-launch.py (its __main__, kept tiny),
 * warm-body.py (the launcher's code) and the cold path's launch.py (a script runs through its
 * run(), so both paths run it alike), all beside this module in dist/ (the build copies them).
 */
const LAUNCHER_FILES: readonly { name: string; source: string }[] = [
  { name: LAUNCHER_NAME, source: fs.readFileSync(new URL(`./${LAUNCHER_NAME}`, import.meta.url), 'utf8') },
  { name: 'warm-body.py', source: fs.readFileSync(new URL('./warm-body.py', import.meta.url), 'utf8') },
  { name: 'launch.py', source: fs.readFileSync(new URL('../launch.py', import.meta.url), 'utf8') },
  { name: 'fork-body.py', source: fs.readFileSync(new URL('./fork-body.py', import.meta.url), 'utf8') },
];
/** Modules of LAUNCHER_FILES the launcher loads (not the __main__ script, which Python always compiles): precompiled once per pool. */
const PRECOMPILED = ['warm-body.py', 'launch.py', 'fork-body.py'];
/** Fork servers failing this many times in a row are given up (forkFailed). */
const FORK_FAILURES_TO_GIVE_UP = 3;
/** RLIMIT_CPU of a fork server: its own CPU is its start and one fork per execution; each execution sets its own. */
const FORK_SERVER_CPU_SECONDS = 366 * 86_400;
/** The interpreter a sandbox runs unless its environment has its own (spawn.ts pythonFor): what compiles the .pyc files. */
const SYSTEM_PYTHON = '/usr/bin/python3';
const CHECK_INTERVAL_MS = 1000;
/**
 * A pre-start reuses a MemAvailable reading this young: /proc/meminfo costs about 0.15 ms to read
 * (the kernel sums its counters), once per execution otherwise. The periodic check reads afresh, so
 * pressure is still seen within CHECK_INTERVAL_MS; at worst one more warm sandbox starts meanwhile,
 * within the count and memory budget.
 */
const PRESTART_MEM_MAX_AGE_MS = 250;
/** The ready line is a JSON object naming the preloaded modules: bounded, anything longer is not one. */
const MAX_READY_BYTES = 256 * 1024;

export type WarmDiscardReason = 'idle' | 'budget' | 'max' | 'memory_pressure' | 'replaced' | 'dropped' | 'shutdown' | 'env' | 'shadowed' | 'died';

/** What /metrics shows of the pool; `forking`: fork servers whose next execution (the spare) is being forked ahead. */
export interface WarmCounts { idle: number; starting: number; memoryBytes: number; forking: number }

export interface WarmObserver {
  onCounts?(counts: WarmCounts): void;
  onClaim?(result: 'hit' | 'miss'): void;
  onDiscarded?(reason: WarmDiscardReason): void;
}

export interface WarmPoolOptions {
  /** Where each warm sandbox's private /sandbox directory is made (<dir>/<pid>-<n>); must be traversable by sandbox uids. */
  dir: string;
  /** Most warm sandboxes at once, idle or starting; 0 turns warm sandboxes off. */
  max: number;
  idleMs: number;
  memoryBudgetBytes: number;
  /** Below this much MemAvailable, idle warm sandboxes are discarded and none are started; 0: no check. */
  minAvailableBytes: number;
  /** RLIMIT_CPU of a warm sandbox (the preload and the execution together). */
  cpuSeconds: number;
  spawnDeps: SpawnDeps;
  nextCgroupName: (prefix?: string) => string;
  logger?: Logger | undefined;
  /** The host's available memory in bytes (MemAvailable of /proc/meminfo by default); null when unknown. */
  readMemAvailable?: () => number | null;
  /**
   * A session's warm sandbox is a fork server (fork-server.ts) that forks every execution of the
   * session instead of being used once (WARM_FORK_SERVER). Needs cgroups; absent or false: used once.
   */
  forkServers?: boolean;
}

interface ReadyInfo {
  modules: string[];
  rssBytes: number | null;
  /** The sandbox interpreter's module file endings (.py, .pyc, its extension-module ones); null: the defaults. */
  suffixes: string[] | null;
}

interface WarmEntry {
  id: number;
  owner: string;
  key: string;
  target: WarmTarget;
  /** The variables the sandbox was started with. */
  env: Record<string, string>;
  dir: string;
  state: 'starting' | 'idle';
  sandbox: Promise<SpawnedSandbox>;
  /** bwrap's host pid, once spawned. */
  pid?: number | undefined;
  ready: Promise<ReadyInfo | null>;
  /** When it became idle, or (a fork server) when it was last claimed: the idle time counts from then. */
  readyAt: number;
  memoryBytes: number;
  /** A fork server (its executions are forked, it stays), or a sandbox used once. */
  forking: boolean;
  /** The fork server's handle, once its sandbox is spawned. */
  fork?: ForkServer | undefined;
  /** A fork server's executions still running: it is ended only once they have. */
  active: number;
  /** Discarded while executions ran: ended when the last of them ends. */
  retired?: (() => void) | undefined;
}

/** A claimed warm sandbox: the caller starts its program with start() and disposes of it with dispose(). */
export interface WarmClaim {
  sandbox: SpawnedSandbox;
  /** The report pipe of a script (as a cold run's extra pipe 0). */
  report: SpawnedSandbox['extra'][number]['stream'];
  /** Sends the program; for a script, main.py is written into the sandbox's /sandbox first. */
  start(program: Program): void;
  /**
   * Disposes of the sandbox's cgroup and its private /sandbox directory after the answer: the
   * sandbox has exited (its PID namespace, so all it started, is gone); close() and settled() wait.
   */
  dispose(): void;
}

let entryCounter = 0;

/**
 * A warm sandbox's /sandbox directory goes through the thread pool: rmdir and unlink on the
 * workspace filesystem took about 1.5 ms a sandbox on the main thread under load (4 clients, load
 * 8). Never rejects; close() and settled() wait for it.
 */
const removeDir = (dir: string): Promise<void> => fs.promises.rm(dir, { recursive: true, force: true }).catch(() => undefined);

export class WarmPool {
  private readonly entries = new Map<number, WarmEntry>();
  private observer: WarmObserver = {};
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly disposing = new Set<Promise<void>>();
  private readonly readMem: () => number | null;
  /** MemAvailable as last read, and when (performance.now()). */
  private memSample: { at: number; bytes: number | null } | null = null;
  /**
   * This pool's copy of LAUNCHER_FILES (<dir>/<pid>-<n>, so clearLeftovers removes it after a
   * crash), made at the first start: root-owned, read-only files hard-linked into each warm
   * sandbox's /sandbox instead of written there again. null until made.
   */
  private launchers: string | null = null;
  /** The .pyc files in `launchers` once compiled (none until then, or when compiling failed). */
  private precompiled: string[] = [];
  /** Fork servers that failed in a row, and whether they were given up on this host (forkFailed). */
  private forkFailures = 0;
  private forkServersBroken = false;

  constructor(private readonly opts: WarmPoolOptions) {
    this.readMem = opts.readMemAvailable ?? readMemAvailable;
    if (opts.max > 0) {
      this.timer = setInterval(() => void this.check(), CHECK_INTERVAL_MS);
      this.timer.unref();
    }
  }

  get enabled(): boolean {
    return this.opts.max > 0 && !this.closed;
  }

  observe(observer: WarmObserver): void {
    this.observer = observer;
    this.report();
  }

  /** Idle and starting warm sandboxes, the memory the idle ones hold, and the spares being forked. */
  counts(): WarmCounts {
    let idle = 0;
    let starting = 0;
    let memoryBytes = 0;
    let forking = 0;
    for (const e of this.entries.values()) {
      if (e.state === 'idle') {
        idle++;
        memoryBytes += e.memoryBytes;
      } else starting++;
      if (e.fork?.forkingSpare === true) forking++;
    }
    return { idle, starting, memoryBytes, forking };
  }

  /** The owners that have a warm sandbox now (for tests and operators). */
  /** The host pids (bwrap) of the warm sandboxes spawned so far, by owner (for tests and operators). */
  pids(): { owner: string; pid: number }[] {
    return [...this.entries.values()].flatMap((e) => (e.pid === undefined ? [] : [{ owner: e.owner, pid: e.pid }]));
  }

  /** Whether fork servers were given up on this host (see forkFailed); sessions then get used-once warm sandboxes. */
  get forkServersGivenUp(): boolean {
    return this.forkServersBroken;
  }

  /** The pool's launcher directory (hard-linked into each warm sandbox's /sandbox) and the .pyc files compiled there so far (for tests and operators). */
  launcherFiles(): { dir: string | null; precompiled: readonly string[] } {
    return { dir: this.launchers, precompiled: this.precompiled };
  }

  owners(): string[] {
    return [...this.entries.values()].map((e) => e.owner);
  }

  /**
   * Build a warm sandbox for `owner` (replacing one it has for another target). Never throws: a
   * warm sandbox that cannot be built only costs the speed-up.
   */
  prestart(owner: string, target: WarmTarget, opts: { reuse?: boolean } = {}): void {
    if (!this.enabled) return;
    const key = targetKey(target);
    const env = { ...baseEnvironment(target.environment), ...target.env };
    for (const e of this.entries.values()) {
      if (e.owner !== owner) continue;
      if (e.key === key && sameEnv(e.env, env)) return;
      void this.discard(e, 'replaced');
    }
    if (target.environment !== null && !target.environment.python) return;
    const available = this.opts.minAvailableBytes > 0 ? this.availableMemory(PRESTART_MEM_MAX_AGE_MS) : null;
    if (available !== null && available < this.opts.minAvailableBytes) return;
    while (this.entries.size >= this.opts.max) {
      const oldest = this.oldestIdle();
      if (oldest === null) return; // all are starting: no room now
      void this.discard(oldest, 'max');
    }
    this.start(owner, key, target, env, opts.reuse === true && this.forkable(target));
  }

  /** Whether a target's warm sandbox may be a fork server: on, with cgroups, a Python of the host's (not a root filesystem's), no writable root. */
  private forkable(target: WarmTarget): boolean {
    const e = target.environment;
    return this.opts.forkServers === true && !this.forkServersBroken && this.opts.spawnDeps.cgroups !== null && this.opts.spawnDeps.cgroups.mode !== 'none'
      && (e === null || (e.python && !e.rootDir && !e.writableRoot));
  }

  /**
   * A fork server that did not start, or could not fork a working execution. After
   * FORK_FAILURES_TO_GIVE_UP in a row (a host whose kernel, container profile or bwrap refuses the
   * namespaces, mounts or capabilities it needs) sessions get used-once warm sandboxes instead.
   */
  private forkFailed(err: unknown): void {
    if (this.forkServersBroken) return;
    if (++this.forkFailures < FORK_FAILURES_TO_GIVE_UP) return;
    this.forkServersBroken = true;
    this.opts.logger?.warn({ err }, `fork servers failed ${FORK_FAILURES_TO_GIVE_UP} times in a row on this host: sessions get used-once warm sandboxes from now on (WARM_FORK_SERVER)`);
  }

  /** Discard the owner's warm sandbox (its configuration changed, or it is going); resolves once it is gone. */
  async dropOwner(owner: string, reason: WarmDiscardReason = 'dropped'): Promise<void> {
    const gone: Promise<void>[] = [];
    for (const e of this.entries.values()) if (e.owner === owner) gone.push(this.discard(e, reason));
    await Promise.all(gone);
  }

  /**
   * A warm sandbox for this request, ready to start its program, or null (the caller spawns cold).
   * Counts a hit or a miss.
   */
  async claim(req: RunRequest): Promise<WarmClaim | null> {
    if (!this.enabled) return null;
    const claim = await this.tryClaim(req).catch((err: unknown) => {
      this.opts.logger?.warn({ err }, 'warm sandbox claim failed; running cold');
      return null;
    });
    this.observer.onClaim?.(claim ? 'hit' : 'miss');
    return claim;
  }

  private async tryClaim(req: RunRequest): Promise<WarmClaim | null> {
    const key = targetKey(req);
    let entry: WarmEntry | null = null;
    for (const e of this.entries.values()) {
      if (e.key === key && (entry === null || (e.state === 'idle' && entry.state !== 'idle'))) entry = e;
    }
    if (entry === null) return null;
    if (entry.forking) return this.forkClaim(entry, req);
    this.entries.delete(entry.id); // it is this request's now, whatever follows
    this.report();
    const preloads = req.environment?.preload ?? [];
    const wanted = { ...baseEnvironment(req.environment), ...req.env };
    let envToSend: Record<string, string> | null = null;
    if (!sameEnv(wanted, entry.env)) {
      // A command or argv is exec()ed with the request's variables; a script runs in the
      // interpreter that already started (and imported its preloads) with the others.
      const changed = [...new Set([...Object.keys(wanted), ...Object.keys(entry.env)])].filter((k) => wanted[k] !== entry.env[k]);
      if (req.program.kind === 'script' && (preloads.length > 0 || changed.some((k) => STARTUP_VARIABLE.test(k)))) {
        void this.discard(entry, 'env');
        return null;
      }
      envToSend = wanted;
    }
    const ready = await readyWithin(entry, req);
    if (ready === null) {
      void this.discard(entry, 'died');
      return null;
    }
    if (req.program.kind === 'script' && ready.modules.length > 0 && shadowsImported(req.workspaceDir, ready.modules, ready.suffixes ?? undefined)) {
      void this.discard(entry, 'shadowed');
      return null;
    }
    const sandbox = await entry.sandbox;
    const control = sandbox.extra[0]?.stream;
    const report = sandbox.extra[1]?.stream;
    if (control === undefined || report === undefined) throw new Error('warm sandbox without its pipes');
    const claimed = entry;
    return {
      sandbox,
      report,
      start: (program) => {
        if (program.kind === 'script') fs.writeFileSync(path.join(claimed.dir, 'main.py'), program.source, { mode: 0o644 });
        const request = program.kind === 'script' ? { kind: 'script', env: envToSend }
          : program.kind === 'command' ? { kind: 'command', command: program.command, env: envToSend }
            : { kind: 'argv', argv: program.argv, env: envToSend };
        const body = Buffer.from(JSON.stringify(request), 'utf8');
        const head = Buffer.alloc(4);
        head.writeUInt32BE(body.length);
        control.end(Buffer.concat([head, body]));
      },
      dispose: () => {
        // Still waiting (its program was never sent: start() failed): it ends here too.
        if (sandbox.child.exitCode === null && sandbox.child.signalCode === null) sandbox.kill();
        this.track(sandbox.dispose().catch((err: unknown) => {
          this.opts.logger?.warn({ err }, 'could not dispose of a warm sandbox');
        }).finally(() => removeDir(claimed.dir)));
      },
    };
  }

  /**
   * An execution forked by the entry's fork server, which stays for the next. A miss (null, the run
   * goes cold, the server stays) where a used-once sandbox would be discarded: variables a started
   * interpreter cannot take, or a workspace entry shadowing an imported module.
   */
  private async forkClaim(entry: WarmEntry, req: RunRequest): Promise<WarmClaim | null> {
    const env = requestEnv(entry, req);
    if (env === false) return null;
    const ready = await readyWithin(entry, req);
    if (ready === null) {
      if (entry.state === 'starting' && !(await isSettled(entry.ready))) return null; // still starting, the request gave up
      void this.discard(entry, 'died');
      return null;
    }
    if (req.program.kind === 'script' && ready.modules.length > 0 && shadowsImported(req.workspaceDir, ready.modules, ready.suffixes ?? undefined)) return null;
    const server = entry.fork;
    if (server === undefined || this.entries.get(entry.id) !== entry) return null;
    entry.active++;
    entry.readyAt = Date.now();
    const done = () => {
      entry.active--;
      entry.readyAt = Date.now();
      if (entry.active === 0) entry.retired?.();
    };
    let forked: Awaited<ReturnType<ForkServer['take']>>;
    try {
      forked = await server.take(this.forkTarget(entry), { program: req.program, env, cpuSeconds: req.timeoutMs / 1000 + 5 });
      this.forkFailures = 0;
    } catch (err) {
      this.opts.logger?.warn({ err }, 'fork server could not fork; running cold');
      if (this.entries.get(entry.id) === entry) this.forkFailed(err);
      done();
      void this.discard(entry, 'died');
      return null;
    }
    let disposed = false;
    return {
      sandbox: forked.sandbox,
      report: forked.report,
      start: () => forked.start(),
      dispose: () => {
        if (disposed) return;
        disposed = true;
        this.track(forked.sandbox.dispose().catch((err: unknown) => {
          this.opts.logger?.warn({ err }, 'could not dispose of a forked execution');
        }).finally(done));
      },
    };
  }

  /** What a fork server's executions are forked for: a cgroup with the target's limits each. */
  private forkTarget(entry: WarmEntry): ForkTarget {
    return { limits: entry.target.limits, cgroupName: () => this.opts.nextCgroupName() };
  }

  private start(owner: string, key: string, target: WarmTarget, env: Record<string, string>, fork: boolean): void {
    const launchers = this.launchers ?? this.makeLaunchers();
    const id = ++entryCounter;
    const dir = path.join(this.opts.dir, `${process.pid}-${id}`);
    fs.mkdirSync(dir, { mode: 0o755 });
    this.placeLaunchers(launchers, dir);
    const preloads = target.environment?.preload ?? [];
    if (fork) {
      this.startFork({ id, owner, key, target, env, dir, preloads });
      return;
    }
    const sandbox = spawnSandbox(this.opts.spawnDeps, {
      environment: target.environment,
      workspaceDir: target.workspaceDir,
      volumes: target.volumes,
      command: ([control, report]) => [pythonFor(target.environment), `${SANDBOX_PATHS.scriptDir}/${LAUNCHER_NAME}`, String(control), String(report), preloads.join(',')],
      sandboxDir: dir,
      extraPipes: 2,
      env,
      limits: target.limits,
      identity: target.identity,
      cpuSeconds: this.opts.cpuSeconds,
      cgroupName: this.opts.nextCgroupName('warm'),
      netnsPath: target.netnsPath,
    });
    const entry: WarmEntry = {
      id, owner, key, target, env, dir, state: 'starting', sandbox, ready: Promise.resolve(null), readyAt: 0, memoryBytes: 0, active: 0, forking: false,
    };
    entry.ready = sandbox.then((s) => {
      entry.pid = s.child.pid;
      return this.awaitReady(s);
    }).catch((err: unknown) => {
      this.opts.logger?.warn({ err }, 'warm sandbox did not start');
      return null;
    });
    this.settle(entry);
  }

  /**
   * A fork server for a session's target: its private /sandbox holds the launcher files and what
   * each execution sets up for itself (fork.json: the uid and the /proc entries to mask; the mask
   * sources; the seccomp program), all written here, read-only inside.
   */
  private startFork(e: { id: number; owner: string; key: string; target: WarmTarget; env: Record<string, string>; dir: string; preloads: readonly string[] }): void {
    const { id, target, dir } = e;
    const deps = this.opts.spawnDeps;
    const cgroups = deps.cgroups;
    if (cgroups === null) throw new Error('a fork server needs cgroups');
    const masks = deps.layout.procMasks.map((m) => [m.dest, fs.statSync(m.source).isDirectory()]);
    fs.writeFileSync(path.join(dir, 'fork.json'), JSON.stringify({ uid: SANDBOX_UID, gid: SANDBOX_GID, masks }), { mode: 0o444 });
    fs.writeFileSync(path.join(dir, 'mask-file'), '', { mode: 0o444 });
    fs.mkdirSync(path.join(dir, 'mask-dir'), { mode: 0o555 });
    if (deps.seccompProgram !== null) fs.writeFileSync(path.join(dir, 'seccomp.bpf'), deps.seccompProgram, { mode: 0o444 });
    const sandbox = spawnSandbox(deps, {
      environment: target.environment,
      workspaceDir: target.workspaceDir,
      volumes: target.volumes,
      command: ([channel]) => [pythonFor(target.environment), `${SANDBOX_PATHS.scriptDir}/${LAUNCHER_NAME}`, '--fork-server', String(channel), e.preloads.join(',')],
      sandboxDir: dir,
      forkServer: true,
      env: e.env,
      limits: target.limits,
      identity: target.identity,
      cpuSeconds: FORK_SERVER_CPU_SECONDS,
      cgroupName: this.opts.nextCgroupName('warm'),
      netnsPath: target.netnsPath,
    });
    const entry: WarmEntry = {
      id, owner: e.owner, key: e.key, target, env: e.env, dir, state: 'starting', sandbox, ready: Promise.resolve(null), readyAt: 0, memoryBytes: 0, active: 0, forking: true,
    };
    entry.ready = sandbox.then((s) => {
      entry.pid = s.child.pid;
      const server = new ForkServer(s, cgroups);
      server.onSpareChange = () => this.report();
      entry.fork = server;
      return server.ready.then((r) => {
        if (r === null) {
          if (this.entries.get(id) === entry) this.forkFailed(new Error('the fork server exited before it was ready'));
          return null;
        }
        server.prestart(this.forkTarget(entry));
        return { modules: r.modules, rssBytes: r.rssBytes, suffixes: r.suffixes };
      });
    }).catch((err: unknown) => {
      this.opts.logger?.warn({ err }, 'fork server did not start');
      return null;
    });
    this.settle(entry);
  }

  /** Counts a starting entry and makes it idle once it is ready (or discards it). */
  private settle(entry: WarmEntry): void {
    const { id, sandbox } = entry;
    this.entries.set(id, entry);
    this.report();
    void entry.ready.then(async (ready) => {
      if (this.entries.get(id) !== entry) return;
      if (ready === null) {
        void this.discard(entry, 'died');
        return;
      }
      const s = await sandbox;
      const stats = await s.stats().catch(() => null);
      if (this.entries.get(id) !== entry) return;
      entry.state = 'idle';
      entry.readyAt = Date.now();
      entry.memoryBytes = (stats?.memoryPeakBytes ?? ready.rssBytes ?? 0) + (await entry.fork?.spareMemoryBytes() ?? 0);
      void s.exited.then(() => {
        if (this.entries.get(id) === entry) void this.discard(entry, 'died');
      });
      this.enforceBudget(entry);
      this.report();
    });
  }

  /** The host's available memory, read again when the last reading is older than maxAgeMs (0: always). */
  private availableMemory(maxAgeMs: number): number | null {
    const now = performance.now();
    if (this.memSample === null || maxAgeMs <= 0 || now - this.memSample.at > maxAgeMs) this.memSample = { at: now, bytes: this.readMem() };
    return this.memSample.bytes;
  }

  /** The pool's launcher directory (see `launchers`), its .pyc files compiled in the background. */
  private makeLaunchers(): string {
    fs.mkdirSync(this.opts.dir, { recursive: true, mode: 0o711 });
    fs.chmodSync(this.opts.dir, 0o711);
    const dir = path.join(this.opts.dir, `${process.pid}-${++entryCounter}`);
    fs.mkdirSync(dir, { mode: 0o755 });
    for (const f of LAUNCHER_FILES) fs.writeFileSync(path.join(dir, f.name), f.source, { mode: 0o444 });
    this.launchers = dir;
    // <name>c beside each module, which the launcher loads (as a file, not by import) before the
    // source; an interpreter of another version finds a bad magic number there and compiles the
    // source in memory as before. Named as inside the sandbox (dfile), for tracebacks. Until this
    // is done (a few tens of ms, once), warm sandboxes start without them.
    const compile = [
      'import py_compile, sys',
      'for f in sys.argv[1:]: py_compile.compile(f, cfile=f + "c", dfile="/sandbox/" + f.rsplit("/", 1)[1], doraise=True)',
    ].join('\n');
    // -I: no PYTHON* variable of the service's.
    execFile(SYSTEM_PYTHON, ['-I', '-c', compile, ...PRECOMPILED.map((n) => path.join(dir, n))], { timeout: 30_000 }, (err) => {
      if (this.launchers !== dir) return; // closed meanwhile: the directory is gone
      try {
        if (err) throw new Error(err.message);
        const names = PRECOMPILED.map((n) => `${n}c`);
        for (const n of names) fs.chmodSync(path.join(dir, n), 0o444);
        this.precompiled = names;
      } catch (e) {
        this.opts.logger?.warn({ err: e instanceof Error ? e.message : String(e) }, 'warm launcher not precompiled: warm sandboxes compile it on start');
      }
    });
    return dir;
  }

  /** Hard links to the pool's launcher files in a warm sandbox's /sandbox (same filesystem); a copy where linking fails. */
  private placeLaunchers(from: string, dir: string): void {
    const place = (name: string, source: () => string | Buffer) => {
      try {
        fs.linkSync(path.join(from, name), path.join(dir, name));
      } catch {
        fs.writeFileSync(path.join(dir, name), source(), { mode: 0o444 });
      }
    };
    for (const f of LAUNCHER_FILES) place(f.name, () => f.source);
    for (const n of this.precompiled) place(n, () => fs.readFileSync(path.join(from, n)));
  }

  /** The launcher's ready line, or null when it exits (or says something else) first. */
  private awaitReady(s: SpawnedSandbox): Promise<ReadyInfo | null> {
    const control = s.extra[0]?.stream;
    if (control === undefined) return Promise.resolve(null);
    return new Promise((resolve) => {
      let buf = '';
      const onData = (c: Buffer) => {
        buf += c.toString('utf8');
        const nl = buf.indexOf('\n');
        if (nl < 0) {
          if (buf.length > MAX_READY_BYTES) finish(null);
          return;
        }
        try {
          const parsed = JSON.parse(buf.slice(0, nl)) as { ready?: unknown; modules?: unknown; rss_bytes?: unknown; suffixes?: unknown };
          const modules = Array.isArray(parsed.modules) ? parsed.modules.filter((m): m is string => typeof m === 'string') : [];
          // Endings as an interpreter has them (a dot, no separator); anything else: the defaults.
          const suffixes = Array.isArray(parsed.suffixes) && parsed.suffixes.length <= 32
            && parsed.suffixes.every((x) => typeof x === 'string' && /^\.[A-Za-z0-9_.-]{1,80}$/.test(x)) ? parsed.suffixes as string[] : null;
          finish(parsed.ready === true ? { modules, suffixes, rssBytes: typeof parsed.rss_bytes === 'number' ? parsed.rss_bytes : null } : null);
        } catch {
          finish(null);
        }
      };
      const finish = (r: ReadyInfo | null) => {
        control.off('data', onData);
        control.off('close', onClose);
        resolve(r);
      };
      const onClose = () => finish(null);
      control.on('data', onData);
      control.once('close', onClose);
    });
  }

  private oldestIdle(except?: WarmEntry): WarmEntry | null {
    let oldest: WarmEntry | null = null;
    for (const e of this.entries.values()) {
      if (e.state === 'idle' && e !== except && (oldest === null || e.readyAt < oldest.readyAt)) oldest = e;
    }
    return oldest;
  }

  private enforceBudget(fresh: WarmEntry): void {
    while (this.counts().memoryBytes > this.opts.memoryBudgetBytes) {
      const victim = this.oldestIdle(fresh) ?? fresh;
      void this.discard(victim, 'budget');
      if (victim === fresh) return;
    }
  }

  /**
   * The periodic check: idle ones past the idle time go, their memory is measured again, and under
   * memory pressure idle ones are discarded, the largest first, until enough would be free.
   */
  async check(): Promise<void> {
    const now = Date.now();
    for (const e of this.entries.values()) {
      if (e.state === 'idle' && e.active === 0 && now - e.readyAt > this.opts.idleMs) void this.discard(e, 'idle');
    }
    for (const e of [...this.entries.values()]) {
      if (e.state !== 'idle') continue;
      const stats = await (await e.sandbox).stats().catch(() => null);
      // A fork server's: its own and its spare's (the execution forked ahead, in a cgroup of its own).
      if (stats?.memoryPeakBytes != null) e.memoryBytes = stats.memoryPeakBytes + (await e.fork?.spareMemoryBytes() ?? 0);
    }
    if (this.opts.minAvailableBytes > 0) {
      let available = this.availableMemory(0);
      if (available !== null && available < this.opts.minAvailableBytes) {
        const idle = [...this.entries.values()].filter((e) => e.state === 'idle').sort((a, b) => b.memoryBytes - a.memoryBytes);
        for (const e of idle) {
          if (available >= this.opts.minAvailableBytes) break;
          void this.discard(e, 'memory_pressure');
          available += e.memoryBytes;
        }
        // Starting ones would only add to it.
        for (const e of this.entries.values()) if (e.state === 'starting') void this.discard(e, 'memory_pressure');
      }
    }
    this.report();
  }

  private discard(e: WarmEntry, reason: WarmDiscardReason): Promise<void> {
    if (this.entries.get(e.id) === e) this.entries.delete(e.id);
    this.observer.onDiscarded?.(reason);
    this.report();
    const end = () => e.sandbox.then(async (s) => {
      await e.fork?.close();
      s.kill();
      await s.exited.catch(() => undefined);
      await s.dispose();
    }).catch(() => undefined).finally(() => removeDir(e.dir));
    // A fork server's running executions are in its PID namespace: it ends after the last of them
    // (at shutdown or when it died, at once). It forks no spare meanwhile: its spare ends now.
    const deferred = e.active > 0 && reason !== 'shutdown' && reason !== 'died';
    if (deferred) void e.fork?.close();
    const work = deferred
      ? new Promise<void>((resolve) => {
        e.retired = resolve;
      }).then(end)
      : end();
    this.track(work);
    return work;
  }

  private track(work: Promise<void>): void {
    this.disposing.add(work);
    void work.finally(() => this.disposing.delete(work));
  }

  /** Resolves once every warm sandbox discarded or used so far is gone with its cgroup. */
  async settled(): Promise<void> {
    while (this.disposing.size > 0) await Promise.all([...this.disposing]);
  }

  private report(): void {
    this.observer.onCounts?.(this.counts());
  }

  /** Discard every warm sandbox and wait until they are gone; no new ones start. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const e of [...this.entries.values()]) void this.discard(e, 'shutdown');
    await this.settled();
    if (this.launchers !== null) fs.rmSync(this.launchers, { recursive: true, force: true });
    this.launchers = null;
  }

  /** Remove private /sandbox directories that a process no longer running left behind (a crash). */
  static clearLeftovers(dir: string, logger?: Logger): void {
    clearWarmLeftovers(dir, logger);
  }
}

/**
 * The entry's ready line, waited for while it starts: it is further along than a new spawn would be
 * (but no longer than the request's timeout, nor past its cancellation). null: it died, or the wait ended.
 */
async function readyWithin(entry: WarmEntry, req: RunRequest): Promise<ReadyInfo | null> {
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const giveUp = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), req.timeoutMs);
    onAbort = () => resolve(null);
    if (req.signal?.aborted) resolve(null);
    req.signal?.addEventListener('abort', onAbort, { once: true });
  });
  return Promise.race([entry.ready, giveUp]).finally(() => {
    clearTimeout(timer);
    if (onAbort) req.signal?.removeEventListener('abort', onAbort);
  });
}

/**
 * The variables to send with a request to a fork server: null when they are the server's; false
 * when a started interpreter cannot take them (a script in an environment that preloads, or one
 * whose variables change what the interpreter reads at start): the run goes cold.
 */
function requestEnv(entry: WarmEntry, req: RunRequest): Record<string, string> | null | false {
  const wanted = { ...baseEnvironment(req.environment), ...req.env };
  if (sameEnv(wanted, entry.env)) return null;
  const changed = [...new Set([...Object.keys(wanted), ...Object.keys(entry.env)])].filter((k) => wanted[k] !== entry.env[k]);
  const preloads = req.environment?.preload ?? [];
  if (req.program.kind === 'script' && (preloads.length > 0 || changed.some((k) => STARTUP_VARIABLE.test(k)))) return false;
  return wanted;
}
