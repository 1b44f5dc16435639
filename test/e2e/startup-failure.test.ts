// A start that fails, as a real process: it exits by itself, non-zero, within seconds, with one
// line saying why, and leaves nothing behind: no mount below its workspace dir, no loop device
// on its images, no change-tracking helper, no uid-range record. A supervisor that sees the
// process gone can trust that it is gone. A stop asked for while starting is a clean stop.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import readline from 'node:readline';
import { afterAll, afterEach, expect, test } from 'vitest';
import { BIN, PROJECT_ROOT, cleanEnv } from '../helpers/host-env.js';
import { descendantsOf, stillRunning, type HostProcess } from '../helpers/host-processes.js';
import { loopBackingFiles, mountsUnder } from '../helpers/mounts.js';
import { freePort, makeTempDir, removeTempDir, sleep } from '../helpers/server-process.js';

const IS_ROOT = process.getuid?.() === 0;
const WATCHER = 'bubble-sandbox-change-watcher';

const dirs: string[] = [];
const children: ChildProcess[] = [];
const holders: net.Server[] = [];
function tempDir(prefix: string, mode = 0o711): string {
  const d = fs.realpathSync(makeTempDir(prefix, mode));
  dirs.push(d);
  return d;
}
afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await Promise.all(holders.splice(0).map((h) => new Promise((resolve) => h.close(resolve))));
});
afterAll(() => {
  for (const d of dirs) removeTempDir(d);
});

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Whether it ended by itself, before the test's own stop (SIGTERM, as a supervisor would). */
  exitedByItself: boolean;
  ms: number;
  stderr: string[];
  /** Change-tracking helpers seen while it ran, child processes of the service. */
  watchers: HostProcess[];
  /** Whether a uid-range record and a mount below the workspace dir were seen while it ran. */
  sawLock: boolean;
}

/**
 * Runs `serve` until it exits; `act` runs once it has started. A process still running after
 * `limitMs` gets a SIGTERM (a supervisor's stop), then a SIGKILL 10 s later.
 */
async function runServe(env: Record<string, string>, lockDir: string, limitMs: number, act?: (child: ChildProcess) => void): Promise<Run> {
  const started = Date.now();
  const child = spawn(process.execPath, [BIN, 'serve'], { cwd: PROJECT_ROOT, env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const stderr: string[] = [];
  readline.createInterface({ input: child.stderr }).on('line', (l) => stderr.push(l));
  child.stdout.resume();
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
  let exitedAt: number | null = null;
  child.once('exit', () => (exitedAt = Date.now()));

  const watchers = new Map<number, HostProcess>();
  let sawLock = false;
  let stopSent = false;
  let acted = act === undefined;
  const pid = child.pid ?? -1;
  while (exitedAt === null) {
    for (const p of descendantsOf(pid)) if (p.command.includes(WATCHER)) watchers.set(p.pid, p);
    if (fs.readdirSync(lockDir).some((n) => n.endsWith('.json'))) sawLock = true;
    if (!acted && sawLock && act) {
      acted = true;
      act(child);
    }
    const elapsed = Date.now() - started;
    if (!stopSent && elapsed > limitMs) {
      stopSent = true;
      child.kill('SIGTERM');
    }
    if (elapsed > limitMs + 10_000) child.kill('SIGKILL');
    await sleep(20);
  }
  const { code, signal } = await closed;
  return { code, signal, exitedByItself: !stopSent, ms: (exitedAt ?? Date.now()) - started, stderr, watchers: [...watchers.values()], sawLock };
}

function leftovers(workspaceDir: string, lockDir: string, watchers: HostProcess[]) {
  return {
    mounts: mountsUnder(workspaceDir).map((m) => m.point),
    loopDevices: loopBackingFiles().filter((f) => f.startsWith(`${workspaceDir}/`)),
    helpers: stillRunning(watchers).map((p) => p.pid),
    lockDir: fs.readdirSync(lockDir),
  };
}

const NOTHING = { mounts: [], loopDevices: [], helpers: [], lockDir: [] };

test.runIf(IS_ROOT)('the port is taken: exits non-zero within seconds naming the port, and leaves nothing behind', async () => {
  const holder = net.createServer();
  holders.push(holder);
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  const port = (holder.address() as net.AddressInfo).port;
  const workspaceDir = tempDir('bs-e2e-portfail-');
  const lockDir = tempDir('bs-e2e-portfail-locks-', 0o755);

  const run = await runServe({
    BUBBLE_SANDBOX_HOST: '127.0.0.1', BUBBLE_SANDBOX_PORT: String(port), BUBBLE_SANDBOX_WORKSPACE_DIR: workspaceDir,
    BUBBLE_SANDBOX_UID_LOCK_DIR: lockDir, BUBBLE_SANDBOX_SELF_TEST_ON_START: 'false', BUBBLE_SANDBOX_LOG_LEVEL: 'info',
  }, lockDir, 15_000);
  // What the start made before it failed (so that there was something to release).
  expect(run.sawLock).toBe(true);
  expect(run.watchers.length).toBe(1);

  expect({ exitedByItself: run.exitedByItself, signal: run.signal, failed: run.code !== 0 && run.code !== null, ...leftovers(workspaceDir, lockDir, run.watchers) })
    .toEqual({ exitedByItself: true, signal: null, failed: true, ...NOTHING });
  expect(run.ms).toBeLessThan(10_000);
  expect(run.stderr).toEqual([`bubble-sandbox: cannot listen on 127.0.0.1:${port}: port ${port} is already in use by another process (stop it, or set BUBBLE_SANDBOX_PORT)`]);
  console.log(`failed start (port in use) exited with ${String(run.code)} after ${run.ms} ms`);
}, 60_000);

test.runIf(IS_ROOT)('SIGTERM while starting: a clean stop (exit 0) that leaves nothing behind', async () => {
  const workspaceDir = tempDir('bs-e2e-termstart-');
  const lockDir = tempDir('bs-e2e-termstart-locks-', 0o755);
  // The signal comes as soon as the uid range is recorded, the first thing a start does.
  const run = await runServe({
    BUBBLE_SANDBOX_HOST: '127.0.0.1', BUBBLE_SANDBOX_PORT: String(await freePort()), BUBBLE_SANDBOX_WORKSPACE_DIR: workspaceDir,
    BUBBLE_SANDBOX_UID_LOCK_DIR: lockDir, BUBBLE_SANDBOX_SELF_TEST_ON_START: 'false', BUBBLE_SANDBOX_LOG_LEVEL: 'info',
    BUBBLE_SANDBOX_SHUTDOWN_DRAIN_SECONDS: '0',
  }, lockDir, 15_000, (child) => child.kill('SIGTERM'));
  expect({ code: run.code, signal: run.signal, ...leftovers(workspaceDir, lockDir, run.watchers) }).toEqual({ code: 0, signal: null, ...NOTHING });
  expect(run.ms).toBeLessThan(10_000);
}, 60_000);
