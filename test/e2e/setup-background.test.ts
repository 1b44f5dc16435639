// ./setup.sh as the README's Quick start uses it: its syntax, and --background / --stop against
// this tree (the other settings through the environment, so it runs beside anything else): the
// service starts detached, answers /healthz before setup.sh returns, and --stop ends it cleanly.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { PROJECT_ROOT, cleanEnv } from '../helpers/host-env.js';
import { isRunning, readHostProcess } from '../helpers/host-processes.js';
import { api, freePort, makeTempDir, removeTempDir } from '../helpers/server-process.js';

const SETUP = path.join(PROJECT_ROOT, 'setup.sh');
const IS_ROOT = process.getuid?.() === 0;
// setup.sh runs `npm ci` when package-lock.json is newer than the installed tree: that would
// replace node_modules under every other test running now, so this one waits for a tree in step.
const lockInStep = (() => {
  try {
    return fs.statSync(path.join(PROJECT_ROOT, 'package-lock.json')).mtimeMs <= fs.statSync(path.join(PROJECT_ROOT, 'node_modules', '.package-lock.json')).mtimeMs;
  } catch {
    return false;
  }
})();

const dirs: string[] = [];
const pids: number[] = [];
afterAll(() => {
  for (const pid of pids) if (isRunning(pid)) process.kill(pid, 'SIGKILL');
  for (const d of dirs) removeTempDir(d);
});

function runSetup(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [SETUP, ...args], { cwd: PROJECT_ROOT, env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), 240_000);
    child.once('error', reject);
    // 'exit', not 'close': the detached service keeps nothing of ours open, but do not depend on it.
    child.once('exit', (code) => {
      clearTimeout(timer);
      setTimeout(() => resolve({ code, stdout, stderr }), 50);
    });
  });
}

test('setup.sh and scripts/check-node.sh are valid bash', () => {
  for (const script of [SETUP, path.join(PROJECT_ROOT, 'scripts', 'check-node.sh')]) {
    const r = spawnSync('bash', ['-n', script], { encoding: 'utf8' });
    expect({ script, code: r.status, stderr: r.stderr }).toEqual({ script, code: 0, stderr: '' });
  }
});

test.runIf(IS_ROOT && lockInStep)('setup.sh --background returns with the service answering, detached; --stop stops it (exit 0 of the service)', async () => {
  const dir = makeTempDir('bs-e2e-setup-');
  dirs.push(dir);
  fs.mkdirSync(path.join(dir, 'ws'), { mode: 0o711 });
  fs.mkdirSync(path.join(dir, 'locks'), { mode: 0o755 });
  const port = await freePort();
  const logFile = path.join(dir, 'service.log');
  const pidFile = path.join(dir, 'service.pid');
  const env = {
    BUBBLE_SANDBOX_HOST: '127.0.0.1', BUBBLE_SANDBOX_PORT: String(port), BUBBLE_SANDBOX_WORKSPACE_DIR: path.join(dir, 'ws'),
    BUBBLE_SANDBOX_UID_LOCK_DIR: path.join(dir, 'locks'), BUBBLE_SANDBOX_SELF_TEST_ON_START: 'false', BUBBLE_SANDBOX_SHUTDOWN_DRAIN_SECONDS: '0',
    SETUP_LOG_FILE: logFile, SETUP_PID_FILE: pidFile,
  };

  const started = await runSetup(['--background'], env);
  expect(started.code, started.stderr).toBe(0);
  const pid = Number(fs.readFileSync(pidFile, 'utf8').trim());
  pids.push(pid);
  expect(started.stdout).toContain(`bubble-sandbox runs in the background at http://127.0.0.1:${port} (pid ${pid})`);
  expect(started.stdout).toContain(`kill $(cat ${pidFile})`);
  // setup.sh has returned; the service answers, is the pid in the file, and leads a session of its own.
  expect((await api(`http://127.0.0.1:${port}`, 'GET', '/healthz')).status).toBe(200);
  const proc = readHostProcess(pid);
  expect(proc?.argv.slice(1)).toEqual(['bin/bubble-sandbox.js', 'serve']);
  const sid = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ')[3];
  expect(sid).toBe(String(pid));
  expect(fs.readFileSync(logFile, 'utf8')).toContain(`Server listening at http://127.0.0.1:${port}`);

  // A second --background refuses while it runs.
  const again = await runSetup(['--background'], env);
  expect(again.code).toBe(1);
  expect(again.stderr).toContain(`bubble-sandbox already runs (pid ${pid})`);

  const stopped = await runSetup(['--stop'], env);
  expect(stopped.code, stopped.stderr).toBe(0);
  expect(stopped.stdout).toContain('bubble-sandbox stopped');
  expect(isRunning(pid)).toBe(false);
  expect(fs.existsSync(pidFile)).toBe(false);
  const log = fs.readFileSync(logFile, 'utf8');
  expect(log).toContain('"msg":"stopped"');
  expect(fs.readdirSync(path.join(dir, 'locks'))).toEqual([]);
}, 300_000);
