// The service's side of the spawn helper (src/sandbox/exec-helper/bubble-sandbox-spawner.c): one
// small process, started once and owned by the Sandbox, that forks and execs the exec helper for
// every sandbox, so the ~150 MB service is no longer forked on its event loop for each one.
//
// It is spoken to over Node's IPC channel ('json' lines). The spawner hands back the parent ends
// of the sandbox's stdio and extra pipes as descriptors (Node turns each into a net.Socket, so
// they behave as libuv's own 'pipe' stdio, which are socketpairs too), then the pid, later the
// exit. If it dies, the sandboxes it started die with it (bwrap --die-with-parent) and are
// reported killed; the next spawn starts a new spawner, and a spawn that cannot be made fails.
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import os from 'node:os';
import path from 'node:path';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';

export type SpawnerFd = { kind: 'socket' } | { kind: 'payload'; data: Buffer } | { kind: 'directory'; path: string };

export interface SpawnerRequest {
  /** argv[0] is the exec helper's absolute path. */
  argv: string[];
  /** Descriptors 3, 4, ... in the child; 0, 1, 2 are always sockets. */
  fds: SpawnerFd[];
}

/** A process started by the spawner: the part of ChildProcess its users need. */
export class SpawnerProcess extends EventEmitter {
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;
  constructor(readonly pid: number, readonly sockets: Map<number, Socket>, private readonly signal: (sig: number) => void) {
    super();
  }
  /** Signals the process unless it has been reaped (the spawner checks again on its side). */
  kill(sig: NodeJS.Signals = 'SIGTERM'): boolean {
    if (this.exitCode !== null || this.signalCode !== null) return false;
    this.signal(os.constants.signals[sig]);
    return true;
  }
  /** @internal */
  exited(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.exitCode !== null || this.signalCode !== null) return;
    this.exitCode = code;
    this.signalCode = signal;
    this.emit('exit', code, signal);
  }
}

interface Pending {
  sockets: Map<number, Socket>;
  resolve: (p: SpawnerProcess) => void;
  reject: (err: Error) => void;
}

type Message = { id: number; fd?: number; pid?: number; error?: string; errno?: number; code?: number; signal?: number };

const signalNames = new Map<number, NodeJS.Signals>(Object.entries(os.constants.signals).map(([name, n]) => [n, name as NodeJS.Signals]));

/** The spawner is built beside the exec helper (scripts/build-exec-helper.sh). */
export function spawnerPathFor(execHelperPath: string): string {
  return path.join(path.dirname(execHelperPath), 'bubble-sandbox-spawner');
}

export interface Spawner {
  spawn(req: SpawnerRequest): Promise<SpawnerProcess>;
  /** The running spawner's pid, if one runs (for tests and the log). */
  readonly pid: number | undefined;
  /** Ends the spawner (and with it anything it still runs); waits until it is gone. */
  close(): Promise<void>;
}

export function createSpawner(binaryPath: string, logger?: Logger): Spawner {
  let child: ChildProcess | null = null;
  let closed = false;
  let nextId = 1;
  const pending = new Map<number, Pending>();
  const running = new Map<number, SpawnerProcess>();

  // The spawner keeps the service's event loop alive only while it has work for us: an idle one
  // must not stop a process that is otherwise done from exiting (it ends with us anyway).
  function updateRef(): void {
    if (child === null) return;
    const busy = pending.size + running.size > 0;
    const stderr = child.stderr as Socket | null; // a pipe: a net.Socket
    for (const h of [child, child.channel, stderr]) {
      if (h) { if (busy) h.ref(); else h.unref(); }
    }
  }

  function start(): ChildProcess {
    const c = spawn(binaryPath, [], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'], serialization: 'json', env: {} });
    let stderr = '';
    c.stderr?.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-2000); });
    c.on('error', (err) => logger?.error({ err }, 'spawn helper error'));
    c.on('message', (msg: Message, handle?: Socket) => {
      if (handle !== undefined && msg.fd !== undefined) {
        const p = pending.get(msg.id);
        if (p) p.sockets.set(msg.fd, handle);
        else handle.destroy();
        return;
      }
      if (msg.pid !== undefined) {
        const p = pending.get(msg.id);
        if (!p) return;
        pending.delete(msg.id);
        const id = msg.id;
        const proc = new SpawnerProcess(msg.pid, p.sockets, (sig) => { if (child === c && c.connected) c.send({ k: id, sig }); });
        running.set(id, proc);
        p.resolve(proc);
        updateRef();
      } else if (msg.error !== undefined) {
        const p = pending.get(msg.id);
        pending.delete(msg.id);
        const code = Object.entries(os.constants.errno).find(([, n]) => n === msg.errno)?.[0];
        const err = new Error(`${code ?? 'E?'}: the spawn helper could not start the sandbox: ${msg.error}`) as NodeJS.ErrnoException;
        if (code !== undefined) err.code = code;
        if (msg.errno !== undefined) err.errno = msg.errno;
        p?.reject(err);
        updateRef();
      } else if (msg.code !== undefined) {
        const proc = running.get(msg.id);
        running.delete(msg.id);
        proc?.exited(msg.code >= 0 ? msg.code : null, msg.signal ? (signalNames.get(msg.signal) ?? 'SIGKILL') : null);
        updateRef();
      }
    });
    c.once('exit', (code, signal) => {
      if (child === c) child = null;
      if (!closed) logger?.error({ code, signal, stderr: stderr.trim() }, 'the spawn helper died; its sandboxes were killed with it, the next spawn starts a new one');
      const gone = new Error('the spawn helper died');
      for (const [id, p] of pending) { pending.delete(id); for (const s of p.sockets.values()) s.destroy(); p.reject(gone); }
      // bwrap --die-with-parent: every sandbox it started is gone too.
      for (const [id, proc] of running) { running.delete(id); proc.exited(null, 'SIGKILL'); }
    });
    return c;
  }

  return {
    get pid() { return child?.pid; },
    spawn: (req) => new Promise<SpawnerProcess>((resolve, reject) => {
      if (closed) { reject(new Error('the spawn helper is closed')); return; }
      if (child === null || !child.connected) child = start();
      const id = nextId++;
      pending.set(id, { sockets: new Map(), resolve, reject });
      updateRef();
      child.send({ s: encodeRequest(id, req).toString('base64') }, (err: Error | null) => {
        if (err && pending.delete(id)) reject(err);
      });
    }),
    close: async () => {
      closed = true;
      const c = child;
      if (c === null || c.exitCode !== null || c.signalCode !== null) return;
      const gone = new Promise<void>((resolve) => c.once('exit', () => resolve()));
      // EOF on the channel: the spawner kills what it runs and exits.
      c.disconnect();
      const timer = setTimeout(() => c.kill('SIGKILL'), 2_000);
      await gone;
      clearTimeout(timer);
    },
  };
}

/** The binary request the spawner reads (layout in bubble-sandbox-spawner.c's header). */
export function encodeRequest(id: number, req: SpawnerRequest): Buffer {
  const parts: Buffer[] = [];
  const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); parts.push(b); };
  const str = (s: string) => {
    if (s.includes('\0')) throw new Error('an argument contains a NUL byte');
    parts.push(Buffer.from(`${s}\0`, 'utf8'));
  };
  u32(id);
  u32(req.argv.length);
  for (const a of req.argv) str(a);
  u32(req.fds.length);
  for (const fd of req.fds) {
    parts.push(Buffer.from([fd.kind === 'socket' ? 0 : fd.kind === 'payload' ? 1 : 2]));
    if (fd.kind === 'payload') { u32(fd.data.length); parts.push(fd.data); }
    if (fd.kind === 'directory') str(fd.path);
  }
  return Buffer.concat(parts);
}
