// `bubble-sandbox run` with pipes (stdin not a terminal) and --forward-port: output and exit status
// passed through, bad port values are one-line usage errors, and a forwarded port reaches a server
// in the sandbox until a stop signal ends program and CLI with nothing left behind. Real processes
// of bin/bubble-sandbox.js (the built dist/), real sandboxes; traffic only on 127.0.0.1 and inside
// the run's own network namespace.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { BIN, cleanEnv, freePort, makeTempDir, PROJECT_ROOT, removeTempDir, sleep } from '../helpers/host-env.js';
import { descendantsOf, stillRunning, waitUntil, type HostProcess } from '../helpers/host-processes.js';
import { runCli } from '../helpers/server-process.js';

const IS_ROOT = process.getuid?.() === 0;
const dirs: string[] = [];
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of dirs.splice(0)) removeTempDir(d);
});

describe('run with pipes', () => {
  test('echo hi | bubble-sandbox run -- cat prints hi, exit 0', async () => {
    const r = await runCli(['run', '--', 'cat'], { input: 'hi\n' });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('hi\n');
    expect(r.code).toBe(0);
  });

  test('stdout and stderr stay apart, the exit status is the program\'s, 128+N for a signal, options end at the program', async () => {
    const r = await runCli(['run', 'sh', '-c', 'echo out; echo err >&2; exit 7'], { input: '' });
    expect([r.stdout, r.stderr, r.code]).toEqual(['out\n', 'err\n', 7]);
    const killed = await runCli(['run', '--', 'sh', '-c', 'kill -9 $$'], { input: '' });
    expect(killed.code).toBe(137);
  });

  test('--timeout ends the program with status 124', async () => {
    const r = await runCli(['run', '--timeout', '1', 'sleep', '30'], { input: '' });
    expect(r.code).toBe(124);
    expect(r.stderr).toMatch(/timed out after 1 s/);
  });
});

describe('bad options', () => {
  test.each([
    [['--forward-port', '0:8080'], /--forward-port must be SANDBOX:HOST with ports 1-65535: got '0:8080'/],
    [['--forward-port', '70000:8080'], /--forward-port must be SANDBOX:HOST with ports 1-65535: got '70000:8080'/],
    [['--forward-port', '8080:0'], /got '8080:0'/],
    [['--forward-port', 'http:web'], /got 'http:web'/],
    [['--forward-port', '8080'], /got '8080'/],
    [['--forward-port', '1:8080', '--forward-port', '2:8080'], /host port 8080 is named twice/],
    [['--timeout', 'soon'], /--timeout must be a number of seconds/],
    [['--network', 'internet'], /--network must be none, allowlist or outbound/],
    [['--rootfs-overlay'], /--rootfs-overlay needs an environment of kind rootfs; 'bare' is a venv/],
    [[], /run needs a program/],
  ])('%j is a one-line usage error, exit 2, nothing run', async (opts, message) => {
    const r = await runCli(['run', ...opts, ...(opts.length ? ['echo', 'ran'] : [])], { input: '' });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(message);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });
});

/** Whether something accepts connections on 127.0.0.1:port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

async function get(url: string): Promise<{ status: number; text: string } | null> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    return { status: res.status, text: await res.text() };
  } catch {
    return null;
  }
}

describe.runIf(IS_ROOT)('--forward-port (root: the run gets a network namespace of its own)', () => {
  test.each(['SIGINT', 'SIGTERM'] as const)('python3 -m http.server in the sandbox answers on the host port; %s to the CLI ends both, the port closes, nothing is left', async (stopSignal) => {
    const dir = makeTempDir('bs-cli-fwd-', 0o755);
    dirs.push(dir);
    // A directory of its own: its name picks this run's processes out of the host's.
    const served = `srv-${path.basename(dir)}`;
    fs.mkdirSync(path.join(dir, served), { mode: 0o755 });
    fs.writeFileSync(path.join(dir, served, 'hello.txt'), 'hello from the sandbox\n', { mode: 0o644 });
    const hostPort = await freePort();
    const cli = spawn(process.execPath, [BIN, 'run', '-w', dir, '--forward-port', `8124:${hostPort}`, '--',
      'python3', '-m', 'http.server', '8124', '--bind', '127.0.0.1', '--directory', `/workspace/${served}`], {
      cwd: PROJECT_ROOT, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(cli);
    let stderr = '';
    cli.stderr?.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    cli.stdout?.resume();
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => cli.once('close', (code, signal) => resolve({ code, signal })));
    if (cli.pid === undefined) throw new Error('no pid');

    // The listener is up before the program; the server inside takes a moment: retry, bounded.
    const deadline = Date.now() + 20_000;
    let res = await get(`http://127.0.0.1:${hostPort}/hello.txt`);
    while (res?.status !== 200 && Date.now() < deadline) {
      await sleep(100);
      res = await get(`http://127.0.0.1:${hostPort}/hello.txt`);
    }
    expect(res, stderr).toEqual({ status: 200, text: 'hello from the sandbox\n' });
    // Several connections at once, each its own pipe.
    const many = await Promise.all(Array.from({ length: 5 }, () => get(`http://127.0.0.1:${hostPort}/hello.txt`)));
    expect(many.map((r) => r?.status)).toEqual([200, 200, 200, 200, 200]);

    const tree: HostProcess[] = descendantsOf(cli.pid);
    expect(tree.some((p) => p.command.includes(served))).toBe(true); // the server itself is in the CLI's tree

    const t0 = Date.now();
    cli.kill(stopSignal);
    const timer = setTimeout(() => cli.kill('SIGKILL'), 15_000);
    const end = await exited.finally(() => clearTimeout(timer));
    // SIGINT: http.server's KeyboardInterrupt exit (0); SIGTERM: it dies of the signal (128+15).
    expect(end, stderr).toEqual({ code: stopSignal === 'SIGINT' ? 0 : 143, signal: null });
    expect(Date.now() - t0).toBeLessThan(5000); // well before the kill that follows an ignored signal
    expect(await listening(hostPort)).toBe(false);
    const left = await waitUntil(() => stillRunning(tree), (l) => l.length === 0, 5000);
    expect(left.map((p) => p.command)).toEqual([]);
  }, 60_000);

  test('a port in use on the host is a one-line error before anything runs', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const r = await runCli(['run', '--forward-port', `8124:${port}`, 'echo', 'ran'], { input: '' });
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(new RegExp(`--forward-port 8124:${port}: cannot listen on 127.0.0.1:${port} \\(EADDRINUSE\\)`));
    } finally {
      blocker.close();
    }
  });
});
