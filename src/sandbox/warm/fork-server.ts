// The service's side of a session's fork server (fork-body.py, run by warm-launch.py): one sandbox built
// for the session, its interpreter started and its preload imported, that forks a process tree per
// execution instead of a sandbox being built for each (a fork costs a few milliseconds of CPU where
// bwrap and an interpreter's start cost tens).
//
// Per execution, ahead of its program (one is kept forked ahead, the "spare"): a fork request on the
// IPC channel; the server hands back the execution's five sockets (stdin, stdout, stderr, report,
// control) and the pid of its first process in the sandbox's PID namespace; the service finds that
// process's host pid among the server's children (/proc/<server>/task/<server>/children, each
// one's NSpid), writes it into a cgroup of the execution's own, and only then writes 'p' on the
// control socket: nothing of the execution happens before it is in its cgroup. It then builds its
// namespaces and mounts and waits; the program goes on the control socket at the claim. The exit
// status comes back there too; a first process that dies without one (a timeout's cgroup kill) is
// reported SIGKILL, as a killed bwrap is. fork-body.py has the protocol.
import fs from 'node:fs';
import type { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import type { CgroupManager, ExecutionCgroup } from '../cgroups.js';
import { closedAfterExit, type IpcChannel, type SandboxChild, type SpawnedSandbox } from '../spawn.js';
import type { Program } from '../types.js';
import { isSettled } from './warm-rules.js';

/** What the server says once its preload is done (as a warm sandbox's ready line, plus its pid inside). */
export interface ForkReady {
  pid: number;
  modules: string[];
  rssBytes: number | null;
  suffixes: string[] | null;
}

/** What an execution forked ahead is made for: its cgroup (a name and the limits) and its /tmp's size. */
export interface ForkTarget {
  limits: Parameters<CgroupManager['create']>[1] & { tmpSizeBytes: number };
  cgroupName: () => string;
}

export interface ForkRequest {
  program: Program;
  /** The program's variables when they differ from the server's; null: the server's. */
  env: Record<string, string> | null;
  cpuSeconds: number;
}

/** A forked execution: its program let go by start(). */
export interface ForkedExecution {
  sandbox: SpawnedSandbox;
  report: Readable & Writable;
  start(): void;
}

interface Sockets { stdin: Socket; stdout: Socket; stderr: Socket; report: Socket; control: Socket }

/** An execution forked ahead and placed in its cgroup, waiting for its program (its status is watched from then on). */
interface Prepared {
  sandbox: SpawnedSandbox;
  sockets: Sockets;
}

const MAX_STATUS_BYTES = 64;
/** How long a fork request, or the forked execution's set-up, may take before the claim gives up and the run goes cold. */
const FORK_TIMEOUT_MS = 10_000;

type Pending = {
  sockets: Map<number, Socket>;
  resolve: (r: { pid: number; sockets: Map<number, Socket> }) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
};

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null;
}

/** The pid namespace ids of a host process, outermost first (NSpid of /proc/<pid>/status); [] when gone. */
function nsPids(hostPid: number): number[] {
  try {
    const status = fs.readFileSync(`/proc/${hostPid}/status`, 'utf8');
    const line = /^NSpid:\s*(.*)$/m.exec(status)?.[1];
    return line === undefined ? [] : line.trim().split(/\s+/).map(Number);
  } catch {
    return [];
  }
}

/** Whether a host process exists and has not exited (a zombie has). */
function isAlive(hostPid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${hostPid}/stat`, 'latin1');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false;
  }
}

function childrenOf(hostPid: number): number[] {
  try {
    return fs.readFileSync(`/proc/${hostPid}/task/${hostPid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** The host pid of the process that is `innerPid` in its own PID namespace, among `root`'s descendants (a few levels down). */
export function findDescendant(root: number, innerPid: number, depth = 4): number | null {
  let level = [root];
  for (let d = 0; d < depth && level.length > 0; d++) {
    const next: number[] = [];
    for (const p of level) {
      for (const c of childrenOf(p)) {
        if (nsPids(c).at(-1) === innerPid) return c;
        next.push(c);
      }
    }
    level = next;
  }
  return null;
}

export class ForkServer {
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  /** The execution forked ahead, or being forked. */
  private spare: Promise<Prepared> | null = null;
  /** The spare has been forked and set up (or there is none being forked). */
  private spareReady = true;
  /** Told whenever a spare starts or stops being forked (the pool counts them for /metrics). */
  onSpareChange: (() => void) | null = null;
  private closed = false;
  /** The server's sandbox has exited (as the service has seen it): nothing more is forked. */
  private gone = false;
  /** The server process's host pid, once found. */
  hostPid: number | null = null;
  private readonly channel: IpcChannel;
  readonly ready: Promise<ForkReady | null>;

  constructor(readonly sandbox: SpawnedSandbox, private readonly cgroups: CgroupManager) {
    if (sandbox.ipc === undefined) throw new Error('a fork server needs its IPC channel');
    this.channel = sandbox.ipc;
    // What the server itself prints (a failure) is not any execution's.
    sandbox.stdout.resume();
    sandbox.stderr.resume();
    let onReady: (r: ForkReady | null) => void = () => undefined;
    this.ready = new Promise((resolve) => {
      onReady = resolve;
    });
    this.channel.on('message', (message, handle) => this.onMessage(message, handle, onReady));
    const onGone = () => {
      this.gone = true;
      onReady(null);
      for (const [id, p] of this.pending) this.fail(id, p, new Error('the fork server exited'));
    };
    void sandbox.exited.then(onGone, onGone);
  }

  private onMessage(message: unknown, handle: unknown, onReady: (r: ForkReady | null) => void): void {
    if (!isObject(message)) return;
    if (message.ready === true) {
      const inner = typeof message.pid === 'number' ? message.pid : -1;
      const host = this.sandbox.child.pid === undefined ? null : findDescendant(this.sandbox.child.pid, inner);
      if (host === null) {
        onReady(null);
        return;
      }
      this.hostPid = host;
      const modules = Array.isArray(message.modules) ? message.modules.filter((m): m is string => typeof m === 'string') : [];
      const suffixes = Array.isArray(message.suffixes) && message.suffixes.length <= 32
        && message.suffixes.every((x) => typeof x === 'string' && /^\.[A-Za-z0-9_.-]{1,80}$/.test(x)) ? message.suffixes as string[] : null;
      onReady({ pid: inner, modules, suffixes, rssBytes: typeof message.rss_bytes === 'number' ? message.rss_bytes : null });
      return;
    }
    const id = typeof message.id === 'number' ? message.id : -1;
    const p = this.pending.get(id);
    if (p === undefined) {
      if (isObject(handle) && typeof handle.destroy === 'function') (handle as unknown as Socket).destroy();
      return;
    }
    if (typeof message.fd === 'number' && handle !== undefined) {
      const socket = handle as Socket;
      socket.on('error', () => undefined);
      p.sockets.set(message.fd, socket);
    } else if (typeof message.pid === 'number') {
      if (p.sockets.size !== 5) {
        this.fail(id, p, new Error('the fork server handed back too few descriptors'));
        return;
      }
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.resolve({ pid: message.pid, sockets: p.sockets });
    } else {
      this.fail(id, p, new Error(`the fork server could not fork: ${typeof message.error === 'string' ? message.error : 'unknown'}`));
    }
  }

  private fail(id: number, p: Pending, err: Error): void {
    this.pending.delete(id);
    clearTimeout(p.timer);
    for (const s of p.sockets.values()) s.destroy();
    p.reject(err);
  }

  /**
   * The next execution: the one forked ahead when there is one (or is being forked: it is further
   * along than a new fork), else forked now; another is forked ahead after it. Its program runs
   * once start() is called. Rejects when the server cannot fork.
   */
  async take(target: ForkTarget, req: ForkRequest): Promise<ForkedExecution> {
    const spare = this.spare;
    this.setSpare(null);
    let prepared = await (spare ?? this.prepare(target));
    // The spare may have ended since it was forked: killed, unable to make its namespaces, or gone
    // with the server before the service has seen the exit (the event loop busy). Taken, it would
    // answer as a run killed that never ran. A new fork instead; on a dead server that fails and
    // the run goes cold.
    const child = prepared.sandbox.child;
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined || !isAlive(child.pid)) {
      for (const sock of Object.values(prepared.sockets) as Socket[]) sock.destroy();
      await prepared.sandbox.dispose();
      prepared = await this.prepare(target);
    }
    setImmediate(() => this.prestart(target));
    const { program } = req;
    const body = Buffer.from(JSON.stringify({
      kind: program.kind,
      ...(program.kind === 'script' ? { script: program.source } : program.kind === 'command' ? { command: program.command } : { argv: program.argv }),
      env: req.env,
      cpu: Math.max(1, Math.ceil(req.cpuSeconds)),
    }), 'utf8');
    const head = Buffer.alloc(5);
    head.write('g', 0, 'latin1');
    head.writeUInt32BE(body.length, 1);
    const { sandbox, sockets } = prepared;
    return { sandbox, report: sockets.report, start: () => sockets.control.write(Buffer.concat([head, body])) };
  }

  /** The memory the spare's cgroup holds (its peak; its processes' copies of the server's pages); 0 without a ready spare. */
  async spareMemoryBytes(): Promise<number> {
    const spare = this.spare;
    if (spare === null || !(await isSettled(spare))) return 0;
    const p = await spare.catch(() => null);
    return p === null ? 0 : ((await p.sandbox.stats().catch(() => null))?.memoryPeakBytes ?? 0);
  }

  /** Forks an execution ahead (the spare), so the next take() finds it ready. */
  prestart(target: ForkTarget): void {
    if (!this.closed && this.spare === null) this.setSpare(this.prepare(target));
  }

  /** Whether a spare is being forked and set up now (background work the pool counts as starting). */
  get forkingSpare(): boolean {
    return this.spare !== null && !this.spareReady;
  }

  /**
   * The spare from now on. One that fails is forgotten (the next take() forks anew), never an
   * unhandled rejection; every change of whether one is being forked is told to onSpareChange.
   */
  private setSpare(p: Promise<Prepared> | null): void {
    this.spare = p;
    this.spareReady = p === null;
    if (p !== null) {
      p.then(() => {
        if (this.spare !== p) return;
        this.spareReady = true;
        this.onSpareChange?.();
      }, () => {
        if (this.spare !== p) return;
        this.setSpare(null);
      });
    }
    this.onSpareChange?.();
  }

  /** Ends the spare (its first process exits when its control socket closes) and its cgroup; no more are forked. */
  async close(): Promise<void> {
    this.closed = true;
    const spare = this.spare;
    this.setSpare(null);
    const p: Prepared | null = spare === null ? null : await spare.catch(() => null);
    if (p !== null) {
      for (const sock of Object.values(p.sockets) as Socket[]) sock.destroy();
      await p.sandbox.dispose();
    }
  }

  private async prepare(target: ForkTarget): Promise<Prepared> {
    const id = ++this.nextId;
    const forked = new Promise<{ pid: number; sockets: Map<number, Socket> }>((resolve, reject) => {
      const timer = setTimeout(() => {
        const p = this.pending.get(id);
        if (p) this.fail(id, p, new Error('the fork server did not answer'));
      }, FORK_TIMEOUT_MS);
      this.pending.set(id, { sockets: new Map(), resolve, reject, timer });
    });
    const gone = () => {
      const p = this.pending.get(id);
      if (p) this.fail(id, p, new Error('the fork server is gone'));
    };
    // With a callback, a channel that broke before the service saw the server exit (EPIPE) fails
    // this request; without one it is an 'error' on the child, which rejects its `exited`.
    if (this.closed || this.gone || !this.channel.connected || !this.channel.send({ fork: id, tmp_bytes: target.limits.tmpSizeBytes }, (err) => {
      if (err) gone();
    })) gone();
    // The cgroup is made (or taken from the pool) while the server forks.
    const cgroupMade = this.cgroups.create(target.cgroupName(), target.limits);
    let cgroup: ExecutionCgroup | null;
    let got: { pid: number; sockets: Map<number, Socket> };
    try {
      [cgroup, got] = await Promise.all([cgroupMade, forked]);
    } catch (err) {
      await cgroupMade.then((c) => c?.destroy(), () => undefined);
      throw err;
    }
    const sock = (k: number) => {
      const s = got.sockets.get(k);
      if (s === undefined) throw new Error(`the fork server did not hand back descriptor ${k}`);
      return s;
    };
    try {
      const [stdin, stdout, stderr, report, control] = [0, 1, 2, 3, 4].map(sock) as [Socket, Socket, Socket, Socket, Socket];
      if (cgroup === null) throw new Error('no cgroup for a forked execution');
      const hostPid = this.hostPid === null ? null : findChildWithInnerPid(this.hostPid, got.pid);
      if (hostPid === null) throw new Error('the forked execution is not among the fork server\'s children');
      // Off the event loop: moving a process into a cgroup v1 hierarchy waits for an RCU grace
      // period (0.5-20 ms here), which is why an execution is forked ahead.
      for (const f of cgroup.procsFiles) await fs.promises.writeFile(f, String(hostPid));
      // Placed: it makes its namespaces, mounts and processes now, and its program's process waits.
      control.write('p');
      const sockets = { stdin, stdout, stderr, report, control };
      const made = execution(hostPid, sockets, cgroup);
      // Handed out only once its setup succeeded: a host where the namespaces or mounts cannot be
      // made fails here (the server is discarded, runs go cold), never in a user's execution.
      let timer: NodeJS.Timeout | undefined;
      const setUp = await Promise.race([made.ready, new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), FORK_TIMEOUT_MS);
      })]).finally(() => clearTimeout(timer));
      // Not set up (in time): the catch below ends it with its cgroup.
      if (!setUp) throw new Error('a forked execution could not set itself up (namespaces, mounts)');
      return { sandbox: made.sandbox, sockets };
    } catch (err) {
      for (const s of got.sockets.values()) s.destroy(); // its first process exits without running anything
      await cgroup?.destroy();
      throw err;
    }
  }
}

/** The host pid of the server's child that is `innerPid` in the sandbox's PID namespace. */
function findChildWithInnerPid(serverHostPid: number, innerPid: number): number | null {
  for (const c of childrenOf(serverHostPid)) if (nsPids(c).at(-1) === innerPid) return c;
  return null;
}

/** A forked execution as a SpawnedSandbox: exit status from the control socket, the cgroup's kill and statistics. */
function execution(hostPid: number, s: Sockets, cgroup: ExecutionCgroup): { sandbox: SpawnedSandbox; ready: Promise<boolean> } {
  const child: SandboxChild & { exitCode: number | null; signalCode: NodeJS.Signals | null } = { pid: hostPid, exitCode: null, signalCode: null };
  let onReady: (ok: boolean) => void = () => undefined;
  const ready = new Promise<boolean>((resolve) => {
    onReady = resolve;
  });
  // 'r' once the program's process waits with its namespaces and mounts made; then the init's
  // status line (everything of the execution is dead by then), or the control socket closing
  // without one (its processes were killed: a timeout, a cancellation, a discard).
  const exitedOnly = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    let text = '';
    const settle = (status: { code: number | null; signal: NodeJS.Signals | null }) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.exitCode = status.code;
      child.signalCode = status.signal;
      s.control.destroy();
      onReady(false);
      resolve(status);
    };
    s.control.on('data', (c: Buffer) => {
      if (text.length < MAX_STATUS_BYTES) text += c.toString('latin1');
      if (text.startsWith('r')) {
        text = text.slice(1);
        onReady(true);
      }
      const m = /^(\d{1,3})\n/.exec(text);
      if (m) settle({ code: Number(m[1]), signal: null });
    });
    s.control.once('close', () => settle({ code: null, signal: 'SIGKILL' }));
  });
  const exited = closedAfterExit(exitedOnly, [s.stdout, s.stderr, s.report], s.stdin);
  // Every process of the execution is in its cgroup (the first one was placed there before it ran
  // anything); the namespace's init and the program also die with the first one (PDEATHSIG).
  const kill = () => void cgroup.killAll();
  const sandbox: SpawnedSandbox = {
    child,
    stdin: s.stdin,
    stdout: s.stdout,
    stderr: s.stderr,
    extra: [],
    kill,
    exited,
    stats: async () => cgroup.stats(),
    dispose: async () => {
      if (child.exitCode === null && child.signalCode === null) kill();
      await exitedOnly;
      await cgroup.destroy();
    },
  };
  return { sandbox, ready };
}

