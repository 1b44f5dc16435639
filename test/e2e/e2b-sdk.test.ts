// The real E2B SDKs from npm (@e2b/code-interpreter 2.8.0 over e2b 2.51.0, pinned in
// devDependencies), unchanged, against the real service process, configured only by the
// environment variables their users would set: E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY.
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { Sandbox } from '@e2b/code-interpreter';
import { CommandExitError, InvalidArgumentError, NotFoundError, Sandbox as BaseSandbox } from 'e2b';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { PROJECT_ROOT, cleanEnv } from '../helpers/host-env.js';
import { makeTempDir, removeTempDir, startServer, useWorkspaceDir, type ServerProcess } from '../helpers/server-process.js';

const KEY = 'e2b-test-key-0123456789abcdef';

const workspace = useWorkspaceDir('bs-e2b-', 'all');
let server: ServerProcess;
const saved: Record<string, string | undefined> = {};

beforeAll(async () => {
  server = await startServer({
    workspaceDir: workspace.path,
    env: {
      BUBBLE_SANDBOX_API_KEY: KEY,
      BUBBLE_SANDBOX_MAX_SESSIONS: '8',
      BUBBLE_SANDBOX_MAX_CONCURRENT_EXECUTIONS: '4',
      BUBBLE_SANDBOX_MAX_QUEUED_EXECUTIONS: '16',
      BUBBLE_SANDBOX_WORKSPACE_POOL_SIZE: '1',
      BUBBLE_SANDBOX_E2B_DEFAULT_ENVIRONMENT: 'pandas-exec',
    },
  });
  for (const [k, v] of Object.entries({ E2B_API_URL: server.baseUrl, E2B_SANDBOX_URL: server.baseUrl, E2B_API_KEY: KEY })) {
    saved[k] = process.env[k];
    process.env[k] = v;
  }
});

afterAll(() => {
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

describe('code interpreter SDK', () => {
  let sbx: Sandbox;
  beforeAll(async () => {
    sbx = await Sandbox.create();
  });
  afterAll(async () => {
    await sbx.kill().catch(() => undefined);
  });

  test('create answers a sandbox that is a session of the service', async () => {
    expect(sbx.sandboxId).toMatch(/^[0-9a-f]{32}$/);
    const res = await fetch(`${server.baseUrl}/v1/sessions/${sbx.sandboxId}`, { headers: { authorization: `Bearer ${KEY}` } });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { environment: string }).environment).toBe('pandas-exec');
  });

  test('runCode keeps state across calls, streams stdout and gives the last expression as text', async () => {
    const lines: string[] = [];
    await sbx.runCode('x = 41\nprint("hello")');
    const second = await sbx.runCode('print("again")\nx + 1', { onStdout: (m) => void lines.push(m.line) });
    expect(second.error).toBeUndefined();
    expect(second.text).toBe('42');
    expect(lines.join('')).toBe('again\n');
    expect(second.logs.stdout.join('')).toBe('again\n');
  });

  test('an exception is an ExecutionError with its name, value and traceback', async () => {
    const exec = await sbx.runCode('def f():\n    return 1/0\nf()');
    expect(exec.error?.name).toBe('ZeroDivisionError');
    expect(exec.error?.value).toBe('division by zero');
    expect(exec.error?.traceback).toContain('ZeroDivisionError');
    // The interpreter survives an exception.
    expect((await sbx.runCode('x')).text).toBe('41');
  });

  test('a DataFrame comes back as HTML (the main result) and a chart as PNG', async () => {
    const df = await sbx.runCode('import pandas as pd\npd.DataFrame({"a": [1, 2], "b": [3, 4]})');
    expect(df.error).toBeUndefined();
    const main = df.results.find((r) => r.isMainResult);
    expect(main?.html).toContain('<table');
    expect(main?.text).toContain('a  b');
    const chart = await sbx.runCode('import matplotlib\nmatplotlib.use("Agg")\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()\nprint("drawn")');
    expect(chart.error).toBeUndefined();
    expect(chart.logs.stdout.join('')).toBe('drawn\n');
    const png = chart.results.find((r) => r.png !== undefined);
    expect(png?.isMainResult).toBe(false);
    expect(Buffer.from(png?.png ?? '', 'base64').subarray(1, 4).toString()).toBe('PNG');
  });

  test('contexts: created, listed, with state of their own, removed', async () => {
    const ctx = await sbx.createCodeContext({ language: 'python' });
    expect(ctx).toMatchObject({ language: 'python', cwd: '/home/user' });
    expect((await sbx.listCodeContexts()).map((c) => c.id)).toContain(ctx.id);
    await sbx.runCode('only_here = 5', { context: ctx });
    expect((await sbx.runCode('only_here', { context: ctx })).text).toBe('5');
    expect((await sbx.runCode('only_here')).error?.name).toBe('NameError');
    await sbx.removeCodeContext(ctx);
    expect((await sbx.listCodeContexts()).map((c) => c.id)).not.toContain(ctx.id);
    await expect(sbx.runCode('1', { context: ctx })).rejects.toBeInstanceOf(NotFoundError);
    await expect(sbx.createCodeContext({ language: 'r' })).rejects.toThrow(/400/);
  });

  test('a client that gives up on a cell interrupts it: the interpreter is free for the next call', async () => {
    const err = await sbx.runCode('import time\nwhile True:\n    time.sleep(0.05)', { timeoutMs: 1000 }).catch((e: unknown) => e);
    expect((err as Error).name).toBe('TimeoutError');
    // Were the loop still running, this call would wait behind it (up to MAX_EXECUTION_TIMEOUT_SECONDS).
    const next = await sbx.runCode('1 + 1', { timeoutMs: 20_000 });
    expect(next.text).toBe('2');
  });

  test('a language other than Python is an error the SDK reports, not a hang', async () => {
    const exec = await sbx.runCode('console.log(1)', { language: 'javascript' });
    expect(exec.error?.name).toBe('NotSupportedError');
    expect(exec.error?.value).toMatch(/javascript/);
  });

  test('files write, read, list, stat, makeDir, rename and remove under /home/user', async () => {
    const info = await sbx.files.write('/home/user/data/a.txt', 'alpha');
    expect(info).toMatchObject({ name: 'a.txt', path: '/home/user/data/a.txt' });
    expect(await sbx.files.read('/home/user/data/a.txt')).toBe('alpha');
    await sbx.files.write('notes.txt', 'relative');
    expect(await sbx.files.read('/home/user/notes.txt')).toBe('relative');
    // The code sees the same files (the workspace is its working directory).
    expect((await sbx.runCode('open("data/a.txt").read()')).text).toBe("'alpha'");

    const names = (await sbx.files.list('/home/user')).map((e) => `${e.name}:${e.type}`);
    expect(names).toEqual(expect.arrayContaining(['data:dir', 'notes.txt:file']));
    const stat = await sbx.files.getInfo('/home/user/data/a.txt');
    expect(stat).toMatchObject({ type: 'file', size: 5, path: '/home/user/data/a.txt' });

    expect(await sbx.files.makeDir('/home/user/made/deep')).toBe(true);
    expect(await sbx.files.makeDir('/home/user/made/deep')).toBe(false);
    const moved = await sbx.files.rename('/home/user/data/a.txt', '/home/user/made/b.txt');
    expect(moved.path).toBe('/home/user/made/b.txt');
    expect(await sbx.files.exists('/home/user/data/a.txt')).toBe(false);
    await sbx.files.remove('/home/user/made');
    expect(await sbx.files.exists('/home/user/made')).toBe(false);
    await expect(sbx.files.read('/home/user/missing.txt')).rejects.toBeInstanceOf(NotFoundError);

    // Several files in one write, and a listing two levels deep.
    const many = await sbx.files.write([{ path: '/home/user/multi/one.txt', data: '1' }, { path: 'multi/two.txt', data: '2' }]);
    expect(many.map((w) => w.path)).toEqual(['/home/user/multi/one.txt', '/home/user/multi/two.txt']);
    const deep = (await sbx.files.list('/home/user', { depth: 2 })).map((e) => e.path);
    expect(deep).toEqual(expect.arrayContaining(['/home/user/multi', '/home/user/multi/one.txt', '/home/user/multi/two.txt']));
    // A command's cwd is an E2B path too.
    expect((await sbx.commands.run('cat one.txt two.txt', { cwd: '/home/user/multi' })).stdout).toBe('12');
  });

  test('a path outside /home/user is refused with E2B\'s InvalidArgumentError, for files and commands', async () => {
    await expect(sbx.files.read('/etc/passwd')).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(sbx.files.write('/tmp/x.txt', 'x')).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(sbx.files.list('/')).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(sbx.files.read('/home/user/../../etc/passwd')).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(sbx.commands.run('pwd', { cwd: '/etc' })).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});

describe('commands through the base SDK', () => {
  let sbx: BaseSandbox;
  beforeAll(async () => {
    sbx = await BaseSandbox.create({ metadata: { suite: 'e2b-commands' }, envs: { GREETING: 'hi from envVars' } });
  });
  afterAll(async () => {
    await sbx.kill().catch(() => undefined);
  });

  test('commands.run streams stdout, collects stderr and the exit code', async () => {
    const seen: string[] = [];
    const result = await sbx.commands.run('echo one; echo two >&2; echo "$GREETING"', { onStdout: (d) => void seen.push(d) });
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toBe('one\nhi from envVars\n');
    expect(result.stderr).toBe('two\n');
    expect(seen.join('')).toBe('one\nhi from envVars\n');
  });

  test('a nonzero exit raises CommandExitError with the code and output', async () => {
    const err = await sbx.commands.run('echo bad >&2; exit 3').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandExitError);
    expect((err as CommandExitError).exitCode).toBe(3);
    expect((err as CommandExitError).stderr).toBe('bad\n');
  });

  test('a background command is listed, takes stdin, and is killed', async () => {
    const out: string[] = [];
    const handle = await sbx.commands.run('read line; echo "got $line"; sleep 600', { background: true, stdin: true, onStdout: (d) => void out.push(d) });
    expect((await sbx.commands.list()).map((p) => p.pid)).toContain(handle.pid);
    await sbx.commands.sendStdin(handle.pid, 'ping\n');
    for (let i = 0; i < 100 && !out.join('').includes('got ping'); i++) await new Promise((r) => setTimeout(r, 50));
    expect(out.join('')).toBe('got ping\n');
    expect(await handle.kill()).toBe(true);
    const err = await handle.wait().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandExitError);
    expect((err as CommandExitError).exitCode).toBe(-1);
    expect((await sbx.commands.list()).map((p) => p.pid)).not.toContain(handle.pid);
    expect(await sbx.commands.kill(handle.pid)).toBe(false);
  });

  test('a background command outlives its client\'s disconnect and can be connected to again', async () => {
    const handle = await sbx.commands.run('i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.1; done', { background: true });
    await handle.disconnect();
    const seen: string[] = [];
    const again = await sbx.commands.connect(handle.pid, { onStdout: (d) => void seen.push(d) });
    for (let i = 0; i < 100 && !seen.join('').includes('tick'); i++) await new Promise((r) => setTimeout(r, 50));
    expect(seen.join('')).toMatch(/tick \d+/);
    expect(await again.kill()).toBe(true);
    await expect(again.wait()).rejects.toBeInstanceOf(CommandExitError);
  });

  test('connect, list, getInfo and setTimeout on the control plane', async () => {
    const again = await BaseSandbox.connect(sbx.sandboxId);
    expect((await again.commands.run('echo connected')).stdout).toBe('connected\n');
    const listed = await BaseSandbox.list({ query: { metadata: { suite: 'e2b-commands' } } }).nextItems();
    expect(listed.map((s) => s.sandboxId)).toEqual([sbx.sandboxId]);
    await sbx.setTimeout(120_000);
    const info = await sbx.getInfo();
    expect(info.metadata).toEqual({ suite: 'e2b-commands' });
    expect(info.templateId).toBe('base');
    const left = info.endAt.getTime() - Date.now();
    expect(left).toBeGreaterThan(100_000);
    expect(left).toBeLessThanOrEqual(120_000);
  });
  test('links the sandbox planted are never followed by the file calls', async () => {
    await sbx.commands.run('ln -s /etc/passwd link.txt && ln -s /etc etcdir');
    const listed = await sbx.files.list('/home/user');
    expect(listed.find((e) => e.name === 'etcdir')).toMatchObject({ type: 'symlink', symlinkTarget: '/etc' });
    await expect(sbx.files.read('/home/user/link.txt')).rejects.toBeInstanceOf(NotFoundError);
    await expect(sbx.files.list('/home/user/etcdir')).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(sbx.files.getInfo('/home/user/etcdir/passwd')).rejects.toBeInstanceOf(NotFoundError);
    await expect(sbx.files.write('/home/user/etcdir/x.txt', 'x')).rejects.toBeInstanceOf(InvalidArgumentError);
    // A rename moves the link itself, never its target.
    const moved = await sbx.files.rename('/home/user/link.txt', '/home/user/moved.txt');
    expect(moved).toMatchObject({ type: 'symlink', symlinkTarget: '/etc/passwd' });
    await sbx.files.remove('/home/user/moved.txt');
    await sbx.files.remove('/home/user/etcdir');
    expect((await sbx.commands.run('test -e /etc/passwd && test -d /etc && echo intact')).stdout).toBe('intact\n');
  });

  test('a terminal: pty.create, input, resize and exit', async () => {
    let out = '';
    const term = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => void (out += new TextDecoder().decode(d)) });
    await sbx.pty.sendInput(term.pid, new TextEncoder().encode('echo $((6*7))\n'));
    for (let i = 0; i < 100 && !out.includes('42'); i++) await new Promise((r) => setTimeout(r, 50));
    await sbx.pty.resize(term.pid, { cols: 100, rows: 30 });
    await sbx.pty.sendInput(term.pid, new TextEncoder().encode('stty size; exit\n'));
    const result = await term.wait();
    expect(result.exitCode).toBe(0);
    expect(out).toContain('42');
    expect(out).toContain('30 100');
  });
});

describe('lifecycle and refusals', () => {
  test('kill() ends the session; a second kill answers false and a connect SandboxNotFoundError', async () => {
    const sbx = await BaseSandbox.create();
    expect(await sbx.isRunning()).toBe(true);
    expect(await sbx.kill()).toBe(true);
    expect(await sbx.isRunning()).toBe(false);
    const res = await fetch(`${server.baseUrl}/v1/sessions/${sbx.sandboxId}`, { headers: { authorization: `Bearer ${KEY}` } });
    expect(res.status).toBe(404);
    expect(await BaseSandbox.kill(sbx.sandboxId)).toBe(false);
    await expect(BaseSandbox.connect(sbx.sandboxId)).rejects.toThrow(/not found/i);
  });

  test('a wrong API key is refused on create; a wrong access token on the sandbox side', async () => {
    await expect(BaseSandbox.create({ apiKey: 'not-the-key' })).rejects.toThrow(/Unauthorized/);
    const sbx = await BaseSandbox.create();
    try {
      const res = await fetch(`${server.baseUrl}/files?path=x.txt`, { headers: { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '49983', 'X-Access-Token': 'wrong' } });
      expect(res.status).toBe(401);
      expect(await res.json()).toEqual({ code: 401, message: expect.stringMatching(/access token/i) as unknown });
      const none = await fetch(`${server.baseUrl}/files?path=x.txt`, { headers: { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '49983' } });
      expect(none.status).toBe(401);
      const execute = await fetch(`${server.baseUrl}/execute`, { method: 'POST', headers: { 'content-type': 'application/json', 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '49999' }, body: '{"code":"1"}' });
      expect(execute.status).toBe(401);
      // Contexts pass without a token (the SDK sends none there), never with a wrong one.
      const contexts = await fetch(`${server.baseUrl}/contexts`, { headers: { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '49999', 'X-Access-Token': 'wrong' } });
      expect(contexts.status).toBe(401);
    } finally {
      await sbx.kill();
    }
  });

  test('the older POST /sandboxes route creates too, and answers E2B\'s error shape', async () => {
    const res = await fetch(`${server.baseUrl}/sandboxes`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': KEY }, body: JSON.stringify({ templateID: 'bare', timeout: 60 }),
    });
    expect(res.status).toBe(201);
    const body = (await res.json()) as { sandboxID: string; templateID: string; envdVersion: string; envdAccessToken: string };
    expect(body.templateID).toBe('bare');
    expect(body.envdVersion).toMatch(/^\d+\.\d+\.\d+$/);
    expect(body.envdAccessToken).toMatch(/^[0-9a-f]{64}$/);
    expect(body.envdAccessToken).not.toContain(KEY);
    const connected = await fetch(`${server.baseUrl}/sandboxes/${body.sandboxID}/connect`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': KEY }, body: JSON.stringify({ timeout: 120 }),
    });
    expect(connected.status).toBe(200);
    expect(((await connected.json()) as { envdAccessToken: string }).envdAccessToken).toBe(body.envdAccessToken);
    const sbx = await BaseSandbox.connect(body.sandboxID);
    expect((await sbx.commands.run('echo old route')).stdout).toBe('old route\n');
    await sbx.kill();

    const missing = await fetch(`${server.baseUrl}/sandboxes`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': KEY }, body: JSON.stringify({ templateID: 'no-such-env' }),
    });
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({ code: 404, message: expect.stringMatching(/no-such-env/) as unknown });
    const gone = (await (await fetch(`${server.baseUrl}/sandboxes`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': KEY }, body: JSON.stringify({ templateID: 'bare', timeout: 1 }),
    })).json()) as { sandboxID: string };
    // The E2B timeout is a deadline: the session is deleted when it passes (checked every second).
    let status = 200;
    for (let i = 0; i < 100 && status === 200; i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = (await fetch(`${server.baseUrl}/v1/sessions/${gone.sandboxID}`, { headers: { authorization: `Bearer ${KEY}` } })).status;
    }
    expect(status).toBe(404);
    const paused = await fetch(`${server.baseUrl}/sandboxes/anything/pause`, { method: 'POST', headers: { 'x-api-key': KEY } });
    expect(paused.status).toBe(501);
  });

  test('the REST API is not affected: a /v1 path with E2B headers is not served, /v1 stays under its own key', async () => {
    const routed = await fetch(`${server.baseUrl}/v1/sessions`, { headers: { authorization: `Bearer ${KEY}`, 'E2b-Sandbox-Id': 'x', 'E2b-Sandbox-Port': '49983' } });
    // Routed to the sandbox side, whose token check refuses it in E2B's shape: never the REST answer.
    expect(routed.status).toBe(401);
    expect(Object.keys((await routed.json()) as object).sort()).toEqual(['code', 'message']);
    const rest = await fetch(`${server.baseUrl}/v1/sessions`, { headers: { 'x-api-key': KEY } });
    expect(rest.status).toBe(401);
    const doc = (await (await fetch(`${server.baseUrl}/openapi.json`)).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(doc.paths).filter((p) => /sandboxes|_e2b|execute$|^\/files/.test(p) && !p.startsWith('/v1'))).toEqual([]);
  });

  test('a command stream whose client reads nothing holds the command\'s output back: the service\'s memory stays flat', async () => {
    const created = (await (await fetch(`${server.baseUrl}/v2/sandboxes`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': KEY }, body: '{"templateID":"bare"}' })).json()) as { sandboxID: string; envdAccessToken: string };
    const rss = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${server.pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
    const before = rss();
    const msg = Buffer.from(JSON.stringify({ process: { cmd: '/bin/sh', args: ['-c', 'timeout 4 yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'] } }));
    const req = http.request(`${server.baseUrl}/process.Process/Start`, {
      method: 'POST',
      headers: { 'content-type': 'application/connect+json', 'E2b-Sandbox-Id': created.sandboxID, 'E2b-Sandbox-Port': '49983', 'X-Access-Token': created.envdAccessToken },
    });
    // The answer is never read: only what the sockets' buffers take gets out of the service.
    const response = new Promise<http.IncomingMessage>((resolve) => req.once('response', resolve));
    req.end(Buffer.concat([Buffer.from([0, 0, 0, 0, msg.length]), msg]));
    (await response).pause();
    let peak = 0;
    for (let i = 0; i < 45; i++) {
      await new Promise((r) => setTimeout(r, 100));
      peak = Math.max(peak, rss());
    }
    req.destroy();
    // Unbounded, `yes` fills hundreds of MB in these 4.5 s; held back, the ring (1 MiB) and the buffers.
    expect(peak - before).toBeLessThan(150 * 1024 * 1024);
    expect((await fetch(`${server.baseUrl}/sandboxes/${created.sandboxID}`, { method: 'DELETE', headers: { 'x-api-key': KEY } })).status).toBe(204);
  });

  test('a killed sandbox on the sandbox side is Connect\'s not_found, for a unary call and a stream', async () => {
    const res = await fetch(`${server.baseUrl}/v2/sandboxes`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': KEY }, body: '{"templateID":"bare"}' });
    const { sandboxID, envdAccessToken } = (await res.json()) as { sandboxID: string; envdAccessToken: string };
    expect((await fetch(`${server.baseUrl}/sandboxes/${sandboxID}`, { method: 'DELETE', headers: { 'x-api-key': KEY } })).status).toBe(204);
    const headers = { 'E2b-Sandbox-Id': sandboxID, 'E2b-Sandbox-Port': '49983', 'X-Access-Token': envdAccessToken, 'Connect-Protocol-Version': '1' };
    const stat = await fetch(`${server.baseUrl}/filesystem.Filesystem/Stat`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: '{"path":"/home/user"}' });
    expect(stat.status).toBe(404);
    expect(await stat.json()).toEqual({ code: 'not_found', message: expect.stringMatching(/not found/) as unknown });
    // A server stream answers 200 with an end-of-stream frame carrying the error.
    const msg = Buffer.from('{"process":{"cmd":"/bin/true"}}');
    const envelope = Buffer.concat([Buffer.from([0, 0, 0, 0, msg.length]), msg]);
    const start = await fetch(`${server.baseUrl}/process.Process/Start`, { method: 'POST', headers: { ...headers, 'content-type': 'application/connect+json' }, body: envelope });
    expect(start.status).toBe(200);
    const bytes = Buffer.from(await start.arrayBuffer());
    expect(bytes[0]).toBe(2);
    expect(JSON.parse(bytes.subarray(5).toString())).toEqual({ error: { code: 'not_found', message: expect.stringMatching(/not found/) as unknown } });
  });
});

test('the README\'s E2B example runs as written, with only the environment variables it names', () => {
  const readme = fs.readFileSync(path.join(PROJECT_ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('### E2B SDKs'), readme.indexOf('## Security model'));
  const example = /```js\n([\s\S]*?)```/.exec(section)?.[1];
  expect(example).toContain('Sandbox.create');
  const dir = makeTempDir('bs-e2b-readme-');
  try {
    // The example's own directory, with the project's node_modules (where the pinned SDKs are).
    fs.symlinkSync(path.join(PROJECT_ROOT, 'node_modules'), path.join(dir, 'node_modules'));
    fs.writeFileSync(path.join(dir, 'example.mjs'), example ?? '');
    const r = spawnSync(process.execPath, ['example.mjs'], {
      cwd: dir, encoding: 'utf8', timeout: 60_000,
      env: cleanEnv({ E2B_API_URL: server.baseUrl, E2B_SANDBOX_URL: server.baseUrl, E2B_API_KEY: KEY }),
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe('an HTML table\nlines: 3\nexit code 0\n');
  } finally {
    removeTempDir(dir);
  }
});
