// Runs the real service (node bin/bubble-sandbox.js serve) as a child process for end-to-end
// tests, plus host-side helpers: the CLI as a process, and HTTP calls to the service. What runs
// on the host is in host-processes.ts.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import readline from 'node:readline';
import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';
import { BIN, PROJECT_ROOT, cleanEnv, freePort, makeTempDir, removeTempDir, sleep } from './host-env.js';
import { descendantsOf, readHostProcess, stillRunning, waitUntil } from './host-processes.js';

export { freePort, makeTempDir, removeTempDir, sleep } from './host-env.js';


export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ServerLogs {
  stdout: string[];
  stderr: string[];
}

export interface ServerProcess {
  baseUrl: string;
  port: number;
  pid: number;
  /** Sends the signal (SIGTERM by default; to its whole process group when started with processGroup) and resolves when the process has exited. */
  stop(signal?: NodeJS.Signals): Promise<ExitInfo>;
  waitForExit(): Promise<ExitInfo>;
  /** Whether the process is still running. */
  readonly running: boolean;
  logs(): ServerLogs;
  /** The stdout lines that parse as JSON objects (the service logs JSON lines on stdout). */
  jsonLogs(): Record<string, unknown>[];
}

export interface StartServerOptions {
  workspaceDir: string;
  /** Extra variables, full names (BUBBLE_SANDBOX_...); they win over the defaults set here. */
  env?: Record<string, string>;
  /** How long to wait for GET /healthz; 15 s by default. */
  readyTimeoutMs?: number;
  /** Start it as the leader of a process group of its own, so stop() can signal the whole group (as a terminal's Ctrl-C or a supervisor does). */
  processGroup?: boolean;
  /** The port to listen on (a restart on the same address); a free one by default. */
  port?: number;
}

const live = new Set<ChildProcess>();

/**
 * A fresh workspace directory (makeTempDir) for each test, or with 'all' one for all the tests of
 * the file or describe block this is called in. At the end every server still running is killed,
 * then the directory is removed (a killed server leaves its quota images mounted there). Call it
 * before the hooks that start servers in the directory, so that they run after it is made.
 */
export function useWorkspaceDir(prefix: string, scope: 'each' | 'all' = 'each'): { readonly path: string } {
  let dir: string | null = null;
  const [before, after] = scope === 'each' ? [beforeEach, afterEach] : [beforeAll, afterAll];
  before(() => {
    dir = makeTempDir(prefix);
  });
  after(async () => {
    await killAllServers();
    if (dir !== null) removeTempDir(dir);
    dir = null;
  });
  return {
    get path() {
      if (dir === null) throw new Error('the workspace directory exists only while tests run');
      return dir;
    },
  };
}

/**
 * Temporary directories made on demand by the tests of a file (makeTempDir), all removed after
 * the last of them; every server still running is killed after each test.
 */
export function useTempDirs(): (prefix: string, mode?: number) => string {
  const dirs: string[] = [];
  afterEach(async () => {
    await killAllServers();
  });
  afterAll(() => {
    for (const d of dirs.splice(0)) removeTempDir(d);
  });
  return (prefix, mode = 0o711) => {
    const d = makeTempDir(prefix, mode);
    dirs.push(d);
    return d;
  };
}

export async function startServer(opts: StartServerOptions): Promise<ServerProcess> {
  const port = opts.port ?? (await freePort());
  // A uid-range lock dir of its own, removed once the server has exited (unless the test names
  // one): servers of parallel tests share the default uid range, maybe beside a running service.
  const uidLockDir = opts.env?.BUBBLE_SANDBOX_UID_LOCK_DIR === undefined ? makeTempDir('bs-uid-locks-', 0o755) : null;
  const env = cleanEnv({
    BUBBLE_SANDBOX_HOST: '127.0.0.1',
    BUBBLE_SANDBOX_PORT: String(port),
    BUBBLE_SANDBOX_WORKSPACE_DIR: opts.workspaceDir,
    BUBBLE_SANDBOX_LOG_LEVEL: 'info',
    BUBBLE_SANDBOX_SELF_TEST_ON_START: 'false',
    // A SIGTERM closes the listener at once; the drain is tested where a test names it.
    BUBBLE_SANDBOX_SHUTDOWN_DRAIN_SECONDS: '0',
    ...(uidLockDir !== null ? { BUBBLE_SANDBOX_UID_LOCK_DIR: uidLockDir } : {}),
    ...opts.env,
  });
  const child = spawn(process.execPath, [BIN, 'serve'], { cwd: PROJECT_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: opts.processGroup === true });
  live.add(child);
  if (uidLockDir !== null) child.once('exit', () => fs.rmSync(uidLockDir, { recursive: true, force: true }));
  const logs: ServerLogs = { stdout: [], stderr: [] };
  readline.createInterface({ input: child.stdout }).on('line', (l) => logs.stdout.push(l));
  readline.createInterface({ input: child.stderr }).on('line', (l) => logs.stderr.push(l));

  let exitInfo: ExitInfo | null = null;
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      live.delete(child);
      resolve(exitInfo);
    });
  });
  // 'exit' may fire before the last lines are read; 'close' waits for the pipes too.
  const closed = new Promise<ExitInfo>((resolve) => child.once('close', () => resolve(exitInfo ?? { code: null, signal: null })));
  const waitForExit = async () => {
    await exited;
    return closed;
  };

  const baseUrl = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 15_000);
  for (;;) {
    if (exitInfo !== null) {
      const info = await waitForExit();
      throw new Error(`server exited before it answered /healthz (code ${String(info.code)}, signal ${String(info.signal)}):\n${logs.stderr.join('\n')}\n${logs.stdout.join('\n')}`);
    }
    try {
      const res = await fetch(`${baseUrl}/healthz`, { signal: AbortSignal.timeout(1000) });
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      await waitForExit();
      throw new Error(`server did not answer /healthz within the timeout:\n${logs.stderr.join('\n')}\n${logs.stdout.join('\n')}`);
    }
    await sleep(100);
  }

  if (child.pid === undefined) throw new Error('server has no pid');
  const pid = child.pid;
  return {
    baseUrl,
    port,
    pid,
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (exitInfo === null) {
        if (opts.processGroup === true) process.kill(-pid, signal);
        else child.kill(signal);
      }
      return waitForExit();
    },
    waitForExit,
    get running() {
      return exitInfo === null;
    },
    logs: () => ({ stdout: [...logs.stdout], stderr: [...logs.stderr] }),
    jsonLogs: () => logs.stdout.flatMap(parseJsonLine),
  };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function parseJsonLine(line: string): Record<string, unknown>[] {
  try {
    const v: unknown = JSON.parse(line);
    return isRecord(v) ? [v] : [];
  } catch {
    return [];
  }
}

/**
 * SIGKILL every server this module started that is still running (for afterEach/afterAll), and
 * wait until the processes each had started have ended too, so its directory can be removed
 * (see killWithChildren).
 */
export async function killAllServers(): Promise<void> {
  const kills: Promise<void>[] = [];
  for (const child of live) {
    if (child.exitCode === null && child.signalCode === null) kills.push(killWithChildren(child));
  }
  await Promise.all(kills);
  live.clear();
}

/** How long a killed server's children get to end before the cleanup goes on without them. */
const CHILDREN_END_MS = 10_000;

/**
 * A SIGKILLed service's children outlive it for a moment: the mkfs or mount of a pool entry being
 * built (those tools are left to finish, never killed half-way), its sandboxes until their
 * die-with-parent signal lands. A mount that completed after removeTempDir had read the mount
 * table left a mounted pool workspace that rmdir refused (EBUSY). So the server is stopped
 * (SIGSTOP: a stopped process starts nothing, so the list of its descendants is complete), its
 * descendants are listed, it is killed, and they are waited for.
 */
async function killWithChildren(child: ChildProcess): Promise<void> {
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const pid = child.pid;
  if (pid === undefined) return;
  child.kill('SIGSTOP');
  await waitUntil(() => readHostProcess(pid)?.state, (state) => state === undefined || state === 'T', 2000, 1);
  const children = descendantsOf(pid);
  child.kill('SIGKILL');
  await exited;
  await waitUntil(() => stillRunning(children), (left) => left.length === 0, CHILDREN_END_MS, 20);
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `node bin/bubble-sandbox.js ...args` to completion. */
export async function runCli(args: string[], opts: { input?: string; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CliResult> {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: PROJECT_ROOT,
    env: cleanEnv(opts.env),
    stdio: [opts.input !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr?.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  if (opts.input !== undefined) child.stdin?.end(opts.input);
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
  const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c, s) => resolve({ code: c, signal: s }));
  }).finally(() => clearTimeout(timer));
  return { code, signal, stdout, stderr };
}

export interface JsonResponse<T = unknown> {
  status: number;
  headers: Headers;
  body: T;
  text: string;
}

/** A JSON request to the service; the body is parsed when the answer has one. */
export async function api<T = Record<string, unknown>>(baseUrl: string, method: string, route: string, body?: unknown, init: { signal?: AbortSignal } = {}): Promise<JsonResponse<T>> {
  const res = await fetch(`${baseUrl}${route}`, {
    method,
    ...(body !== undefined ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {}),
    ...(init.signal ? { signal: init.signal } : {}),
  });
  const text = await res.text();
  let parsed: unknown = null;
  if (text.length > 0) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = null;
    }
  }
  return { status: res.status, headers: res.headers, body: parsed as T, text };
}

/** Uploads files to a session as multipart/form-data (FormData + Blob, as a browser would). */
export async function uploadFiles(baseUrl: string, sessionId: string, files: { name: string; content: string | Uint8Array }[], dir?: string): Promise<JsonResponse<{ files: { path: string; size: number }[] }>> {
  const form = new FormData();
  for (const f of files) form.append('file', new Blob([typeof f.content === 'string' ? f.content : Buffer.from(f.content)]), f.name);
  const query = dir !== undefined ? `?dir=${encodeURIComponent(dir)}` : '';
  const res = await fetch(`${baseUrl}/v1/sessions/${sessionId}/files${query}`, { method: 'POST', body: form });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: JSON.parse(text) as { files: { path: string; size: number }[] }, text };
}

/** Downloads one file of a session as raw bytes. */
export async function downloadFile(baseUrl: string, sessionId: string, rel: string): Promise<{ status: number; headers: Headers; bytes: Buffer }> {
  const res = await fetch(`${baseUrl}/v1/sessions/${sessionId}/files/${rel.split('/').map(encodeURIComponent).join('/')}`);
  return { status: res.status, headers: res.headers, bytes: Buffer.from(await res.arrayBuffer()) };
}

/** The subset of an ExecutionResult the tests look at. */
export interface ExecResult {
  status: string;
  exit_code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  timed_out: boolean;
  files: { created: string[]; modified: string[]; deleted: string[] };
}
