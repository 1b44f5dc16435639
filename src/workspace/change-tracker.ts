// Which names changed in a workspace since the last look, told by the kernel (fanotify) instead
// of found by a scan: a scan lstats every file, about 10 µs each here, so 10,000 files cost about
// 100 ms per execution whatever the execution did. The helper (change-watcher.py) runs as
// root beside the service; it needs a workspace that is a file system of its own (a quota image)
// and CAP_SYS_ADMIN. Anything it cannot vouch for comes back as "rescan" and the caller scans,
// so the tracker only ever saves work: it never makes a report less exact than a scan.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import fs from 'node:fs';
import type { Writable } from 'node:stream';
import type { Logger } from 'pino';
import { MAX_PATH_BYTES } from './safe-open.js';

/** Entries of one directory (a path below the workspace root, as bytes) that changed. */
export interface DirtyDir { dir: Buffer; names: Buffer[] }

/** dirs: the names that changed; inos: inode numbers of the files touched (through any name). */
export type DrainResult = { rescan: true } | { rescan: false; dirs: DirtyDir[]; inos: number[] };

export interface ChangeTrackerOptions {
  logger: Pick<Logger, 'warn' | 'error'>;
  /** (directory, name) pairs one workspace may collect between drains before it is rescanned instead. */
  maxPairs?: number;
  /** Called once when the helper stops working (not on close). */
  onFailure?: (reason: string) => void;
}

interface Pending {
  resolve: (v: Record<string, unknown>) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  /** Runs as the answer line is read, before any later line (a drain marks its key quiet). */
  onAnswer?: ((v: Record<string, unknown>) => void) | undefined;
}

const HOST_PYTHON = '/usr/bin/python3';
/** The helper's source (change-watcher.py beside this module; the build copies it to dist). */
const WATCHER_SOURCE = fs.readFileSync(new URL('./change-watcher.py', import.meta.url), 'utf8');
const LOADER = "import os; f = os.fdopen(3, 'rb'); src = f.read(); f.close(); exec(compile(src, 'bubble-sandbox-change-watcher', 'exec'))";
const RESCAN: DrainResult = { rescan: true };
const MAX_ANSWER_CHARS = 16 << 20;
const DEFAULT_MAX_PAIRS = 50_000;
const REQUEST_TIMEOUT_MS = 10_000;

export class ChangeTracker {
  private readonly queue: Pending[] = [];
  /** Chunks of the answer line being received: joined once, when its newline arrives. */
  private partial: string[] = [];
  private partialLength = 0;
  private broken: string | null = null;
  private closing = false;
  /**
   * Keys drained since the helper last said {"dirty":K}: nothing the helper has read since
   * touched their file system. Updated as lines are read, so a "dirty" right after a drain's
   * answer is never lost to the order in which promises settle.
   */
  private readonly quiet = new Set<string>();

  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    private readonly opts: ChangeTrackerOptions,
  ) {
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => this.onData(chunk));
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text: string) => opts.logger.warn({ detail: text.slice(0, 2000) }, 'change tracker: helper wrote to stderr'));
    child.on('exit', (code, signal) => this.fail(`helper exited (${signal ?? code})`));
    child.on('error', (err) => this.fail(`helper failed: ${err.message}`));
    child.stdin.on('error', () => undefined); // a dead helper shows through 'exit'
  }

  /** Starts the helper; null (with the reason) when this host cannot track changes. */
  static async start(opts: ChangeTrackerOptions): Promise<{ tracker: ChangeTracker | null; reason: string | null }> {
    if (process.getuid?.() !== 0) return { tracker: null, reason: 'the service is not running as root' };
    if (!fs.existsSync(HOST_PYTHON)) return { tracker: null, reason: `${HOST_PYTHON} is not installed` };
    // The source goes in on fd 3, not in argv, so `ps` shows one short line for the helper.
    // A process group of its own: a SIGTERM or Ctrl-C sent to the service's group (supervisors,
    // terminals) must not kill it before the service's own shutdown closes it. It still ends with
    // the service whatever happens, since it exits when its stdin closes.
    const child = spawn(HOST_PYTHON, ['-I', '-S', '-c', LOADER, String(opts.maxPairs ?? DEFAULT_MAX_PAIRS), String(MAX_PATH_BYTES)], {
      env: {}, stdio: ['pipe', 'pipe', 'pipe', 'pipe'], windowsHide: true, detached: true,
    });
    const source = child.stdio[3] as Writable;
    source.on('error', () => undefined); // a helper that died early shows through 'exit'
    source.end(WATCHER_SOURCE);
    const first = await new Promise<string>((resolve) => {
      let out = '';
      const timer = setTimeout(() => resolve('{"ready":false,"error":"no answer"}'), REQUEST_TIMEOUT_MS);
      const onData = (chunk: Buffer) => {
        out += chunk.toString('utf8');
        const nl = out.indexOf('\n');
        if (nl < 0) return;
        clearTimeout(timer);
        child.stdout.off('data', onData);
        child.stdout.pause();
        resolve(out.slice(0, nl));
      };
      child.stdout.on('data', onData);
      child.once('error', (err) => resolve(JSON.stringify({ ready: false, error: err.message })));
      child.once('exit', () => resolve(out.split('\n')[0] || '{"ready":false,"error":"helper exited"}'));
    });
    let hello: { ready?: boolean; error?: string };
    try {
      hello = JSON.parse(first) as typeof hello;
    } catch {
      hello = { ready: false, error: 'unreadable answer' };
    }
    if (hello.ready !== true) {
      child.kill('SIGKILL');
      return { tracker: null, reason: `fanotify unavailable: ${hello.error ?? 'unknown'}` };
    }
    const tracker = new ChangeTracker(child, opts);
    child.stdout.resume();
    return { tracker, reason: null };
  }

  /** The helper's pid (tests kill it to prove the fallback). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  get available(): boolean {
    return this.broken === null;
  }

  /**
   * Whether nothing changed in `key`'s workspace since its last drain, as far as the helper has
   * read its events and told the service. A change made by the service itself (an upload) may not
   * have been told yet: the caller keeps track of those. One made in a sandbox a moment ago may
   * not have been either, just as it may come after a drain: it is then counted with the next
   * execution, as anything a background process does while one runs.
   */
  unchangedSinceDrain(key: string): boolean {
    return this.broken === null && this.quiet.has(key);
  }

  /** Starts collecting changes of the file system mounted at `dir`; false when it cannot. */
  async watch(key: string, dir: string): Promise<boolean> {
    this.quiet.delete(key);
    const r = await this.request({ op: 'watch', key, path: dir }).catch(() => null);
    if (r?.ok === true) return true;
    if (r !== null) this.opts.logger.warn({ key, error: r.error }, 'change tracker: cannot watch this workspace, it is scanned instead');
    return false;
  }

  /** What changed since the last drain (or the watch); rescan when that cannot be told exactly. */
  async drain(key: string, dir: string): Promise<DrainResult> {
    const r = await this.request({ op: 'drain', key, path: dir }, (answer) => {
      if (answer.ok === true) this.quiet.add(key);
    }).catch(() => null);
    if (r?.ok !== true || r.rescan !== false || !Array.isArray(r.dirs) || !Array.isArray(r.inos)) return RESCAN;
    const inos = r.inos as unknown[];
    if (!inos.every((n): n is number => Number.isSafeInteger(n))) return RESCAN;
    const dirs: DirtyDir[] = [];
    for (const item of r.dirs as unknown[]) {
      if (!Array.isArray(item) || typeof item[0] !== 'string' || !Array.isArray(item[1])) return RESCAN;
      dirs.push({
        dir: Buffer.from(item[0], 'base64'),
        names: (item[1] as unknown[]).map((n) => Buffer.from(typeof n === 'string' ? n : '', 'base64')),
      });
    }
    return { rescan: false, dirs, inos };
  }

  async unwatch(key: string, dir: string): Promise<void> {
    this.quiet.delete(key);
    await this.request({ op: 'unwatch', key, path: dir }).catch(() => undefined);
  }

  async close(): Promise<void> {
    this.closing = true;
    this.fail('closed');
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 2000);
    await exited;
    clearTimeout(timer);
  }

  private async request(req: Record<string, string>, onAnswer?: Pending['onAnswer']): Promise<Record<string, unknown>> {
    if (this.broken !== null) throw new Error(this.broken);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.fail('helper did not answer in time'), REQUEST_TIMEOUT_MS);
      this.queue.push({ resolve, reject, timer, onAnswer });
      this.child.stdin.write(`${JSON.stringify(req)}\n`);
    });
  }

  private onData(chunk: string): void {
    let rest = chunk;
    for (let nl = rest.indexOf('\n'); nl >= 0; nl = rest.indexOf('\n')) {
      const line = this.partial.join('') + rest.slice(0, nl);
      this.partial = [];
      this.partialLength = 0;
      rest = rest.slice(nl + 1);
      let message: Record<string, unknown>;
      try {
        message = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return this.fail('helper answer unreadable');
      }
      if (typeof message.dirty === 'string') {
        this.quiet.delete(message.dirty);
        continue;
      }
      const waiter = this.queue.shift();
      if (!waiter) return this.fail('helper answered what was not asked');
      clearTimeout(waiter.timer);
      waiter.onAnswer?.(message);
      waiter.resolve(message);
    }
    if (rest === '') return;
    this.partial.push(rest);
    this.partialLength += rest.length;
    // The helper caps its answers at 4 MiB; anything far past that is not one of them.
    if (this.partialLength > MAX_ANSWER_CHARS) this.fail('helper answer too long');
  }

  /** From now on every workspace is scanned; the helper is stopped. */
  private fail(reason: string): void {
    if (this.broken !== null) return;
    this.broken = reason;
    this.quiet.clear();
    if (!this.closing) {
      this.opts.logger.error({ reason }, 'change tracker stopped: workspaces are scanned until it is back');
      this.opts.onFailure?.(reason);
    }
    for (const w of this.queue.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new Error(reason));
    }
    if (!this.closing && this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}
