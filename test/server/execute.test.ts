// Executions through the HTTP routes with the real sandbox: in a session and one-shot.
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, useTestApp } from '../helpers/app.js';
import {
  EXECUTION_RESULT_KEYS, createSession, execute, expectError, listPaths, upload, type ExecutionResultBody, type OneShotResultBody,
} from '../helpers/http.js';

const MAX_TIMEOUT = 60;
const t = useTestApp({
  MAX_EXECUTION_TIMEOUT_SECONDS: String(MAX_TIMEOUT),
  EXECUTION_TIMEOUT_SECONDS: '20',
  MAX_UPLOAD_SIZE_BYTES: '1000',
  MAX_OUTPUT_FILES: '2',
  MAX_OUTPUT_FILE_BYTES: '100',
});
beforeAll(async () => {
  await createSession(t.app, { session_id: 'run' });
});


function expectShape(r: ExecutionResultBody): void {
  expect(Object.keys(r).sort()).toEqual(EXECUTION_RESULT_KEYS);
  expect(Object.keys(r.files).sort()).toEqual(['created', 'deleted', 'modified']);
  expect(Object.keys(r.resources).sort()).toEqual(['cpu_ms', 'memory_peak_bytes']);
  expect(Number.isInteger(r.duration_ms)).toBe(true);
  expect(r.duration_ms).toBeGreaterThanOrEqual(0);
  expect(r.max_output_chars).toBe(100_000);
}

describe('POST /v1/sessions/{id}/execute', () => {
  it('runs a Python script: an ok result shaped per the contract', async () => {
    const r = await execute(t.app, 'run', { script: 'import sys\nprint("hello")\nprint("warn", file=sys.stderr)' });
    expectShape(r);
    expect(r).toMatchObject({
      status: 'ok', exit_code: 0, signal: null, stdout: 'hello\n', stderr: 'warn\n', truncated: false,
      timed_out: false, timeout_seconds: 20, error: null, files: { created: [], modified: [], deleted: [] },
    });
  });

  it('the script file does not appear in the workspace', async () => {
    await createSession(t.app, { session_id: 'noscript' });
    const r = await execute(t.app, 'noscript', { script: 'import os\nprint(sorted(os.listdir(".")))' });
    expect(r.stdout).toBe('[]\n');
    expect(await listPaths(t.app, 'noscript')).toEqual([]);
  });

  it('reports an uncaught Python exception as status error with type, message and line', async () => {
    const r = await execute(t.app, 'run', { script: 'x = 1\ny = 0\nprint(x / y)\n' });
    expectShape(r);
    expect(r.status).toBe('error');
    expect(r.exit_code).toBe(1);
    expect(r.signal).toBeNull();
    expect(r.stderr).toContain('ZeroDivisionError');
    expect(r.error).toMatchObject({ type: 'ZeroDivisionError', message: 'division by zero', line: 3 });
  });

  it('runs a shell command: non-zero exit is status error, streams are separate', async () => {
    const r = await execute(t.app, 'run', { command: 'echo out; echo err >&2; exit 3' });
    expectShape(r);
    expect(r).toMatchObject({ status: 'error', exit_code: 3, signal: null, stdout: 'out\n', stderr: 'err\n', error: null });
  });

  it('runs argv directly, without a shell', async () => {
    const r = await execute(t.app, 'run', { argv: ['/bin/echo', 'a  b', '$HOME', '*', ';', 'id'] });
    expectShape(r);
    expect(r.status).toBe('ok');
    expect(r.stdout).toBe('a  b $HOME * ; id\n');
  });

  it('runs in /workspace', async () => {
    expect((await execute(t.app, 'run', { command: 'pwd' })).stdout).toBe('/workspace\n');
    expect((await execute(t.app, 'run', { script: 'import os\nprint(os.getcwd())' })).stdout).toBe('/workspace\n');
    expect((await execute(t.app, 'run', { argv: ['/bin/pwd'] })).stdout).toBe('/workspace\n');
  });

  it('passes env variables through', async () => {
    const r = await execute(t.app, 'run', { command: 'printf "%s|%s" "$MY_VAR" "$OTHER"', env: { MY_VAR: 'hello world', OTHER: 'x=y' } });
    expect(r.stdout).toBe('hello world|x=y');
    const py = await execute(t.app, 'run', { script: 'import os\nprint(os.environ["MY_VAR"])', env: { MY_VAR: '42' } });
    expect(py.stdout).toBe('42\n');
  });

  it('feeds stdin', async () => {
    expect((await execute(t.app, 'run', { command: 'cat', stdin: 'line one\nline two\n' })).stdout).toBe('line one\nline two\n');
    const py = await execute(t.app, 'run', { script: 'name = input()\nprint("hi " + name)', stdin: 'bob\n' });
    expect(py.stdout).toBe('hi bob\n');
    expect((await execute(t.app, 'run', { command: 'cat' })).stdout).toBe('');
  });

  it('reports files created, modified and deleted across two executions', async () => {
    await createSession(t.app, { session_id: 'changes' });
    const first = await execute(t.app, 'changes', { command: 'echo 1 > a.txt; echo 1 > b.txt; mkdir -p sub && echo s > sub/s.txt' });
    expect(first.files).toEqual({ created: ['a.txt', 'b.txt', 'sub/s.txt'], modified: [], deleted: [] });
    const second = await execute(t.app, 'changes', { command: 'echo 2 >> a.txt; rm b.txt; echo c > c.txt' });
    expect(second.files).toEqual({ created: ['c.txt'], modified: ['a.txt'], deleted: ['b.txt'] });
    const third = await execute(t.app, 'changes', { command: 'cat a.txt' });
    expect(third.files).toEqual({ created: [], modified: [], deleted: [] });
    expect(third.stdout).toBe('1\n2\n');
    expect(await listPaths(t.app, 'changes')).toEqual(['a.txt', 'c.txt', 'sub/s.txt']);
  });

  it('a pandas-exec session reads an uploaded CSV and writes out.csv, which can be downloaded', async () => {
    await createSession(t.app, { session_id: 'pandas', environment: 'pandas-exec' });
    expect((await upload(t.app, 'pandas', [{ name: 'data.csv', content: 'name,score\nann,3\nbob,5\ncid,7\n' }])).statusCode).toBe(201);
    const r = await execute(t.app, 'pandas', {
      script: [
        'import pandas as pd',
        'df = pd.read_csv("data.csv")',
        'print(df.shape)',
        'df["double"] = df["score"] * 2',
        'df.to_csv("out.csv", index=False)',
      ].join('\n'),
    });
    expect(r.status, r.stderr).toBe('ok');
    expect(r.stdout).toBe('(3, 2)\n');
    expect(r.files.created).toEqual(['out.csv']);
    const dl = await t.app.inject({ method: 'GET', url: '/v1/sessions/pandas/files/out.csv' });
    expect(dl.statusCode).toBe(200);
    expect(dl.body).toBe('name,score,double\nann,3,6\nbob,5,10\ncid,7,14\n');
  });

  it('pandas is not available in the bare environment (environments are really different)', async () => {
    const r = await execute(t.app, 'run', { script: 'import pandas' });
    expect(r.status).toBe('error');
    expect(r.error?.type).toBe('ModuleNotFoundError');
  });

  it('times out: status timeout, timed_out true, within a few seconds, output so far kept', async () => {
    const started = Date.now();
    const r = await execute(t.app, 'run', { command: 'echo before; sleep 30', timeout_seconds: 1 });
    const elapsed = Date.now() - started;
    expectShape(r);
    expect(r.status).toBe('timeout');
    expect(r.timed_out).toBe(true);
    expect(r.timeout_seconds).toBe(1);
    expect(r.exit_code).toBeNull();
    expect(r.stdout).toBe('before\n');
    expect(elapsed).toBeLessThan(6000);
    expect(r.duration_ms).toBeGreaterThanOrEqual(900);
  });

  it('on timeout every process the execution started is gone', async () => {
    await createSession(t.app, { session_id: 'bg' });
    const r = await execute(t.app, 'bg', { command: '(while true; do echo x >> bg.txt; sleep 0.05; done) & sleep 30', timeout_seconds: 1 });
    expect(r.status).toBe('timeout');
    const file = path.join(t.sessions.workspaceDir('bg'), 'bg.txt');
    const size = fs.statSync(file).size;
    expect(size).toBeGreaterThan(0);
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(fs.statSync(file).size).toBe(size);
  });

  it('a background process does not outlive a normal execution either', async () => {
    await createSession(t.app, { session_id: 'bg2' });
    const r = await execute(t.app, 'bg2', { command: '(sleep 0.3; echo late > late.txt) & echo done' });
    expect(r.stdout).toBe('done\n');
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(fs.existsSync(path.join(t.sessions.workspaceDir('bg2'), 'late.txt'))).toBe(false);
  });

  it('volumes are shared between sessions, read-only where asked', async () => {
    await createSession(t.app, { session_id: 'vol-w', volumes: { 'shared-x': 'rw' } });
    await createSession(t.app, { session_id: 'vol-r', volumes: { 'shared-x': 'ro' } });
    const w = await execute(t.app, 'vol-w', { command: 'echo shared > /volumes/shared-x/s.txt && cat /volumes/shared-x/s.txt' });
    expect(w.stdout, w.stderr).toBe('shared\n');
    const r = await execute(t.app, 'vol-r', { command: 'cat /volumes/shared-x/s.txt; echo no > /volumes/shared-x/t.txt' });
    expect(r.stdout).toBe('shared\n');
    expect(r.status).toBe('error');
    expect(fs.existsSync(path.join(t.workspaceDir, 'volumes', 'shared-x', 't.txt'))).toBe(false);
  });

  it('truncates long output keeping head and tail', async () => {
    const r = await execute(t.app, 'run', { script: 'print("A" * 60000 + "B" * 60000)' });
    expect(r.truncated).toBe(true);
    expect(r.stdout.length).toBeLessThan(100_200);
    expect(r.stdout.startsWith('AAAA')).toBe(true);
    expect(r.stdout.trimEnd().endsWith('BBBB')).toBe(true);
    expect(r.stdout).toMatch(/\n\[\.\.\. \d+ characters omitted \.\.\.\]\n/);
  });

  it('runs the executions of one session one at a time, in arrival order', async () => {
    await createSession(t.app, { session_id: 'serial' });
    const log = path.join(t.sessions.workspaceDir('serial'), 'log.txt');
    const order = [1, 2, 3, 4, 5];
    // A few rounds: an ordering bug that depends on timing shows up in at least one of them.
    for (const round of [1, 2, 3]) {
      const step = (n: number) => ({ command: `echo start-${n} >> log.txt; sleep 0.05; echo end-${n} >> log.txt` });
      // Sent in order, all at once: each request arrives while the earlier ones wait.
      const results = await Promise.all(order.map((n) => t.app.inject({ method: 'POST', url: '/v1/sessions/serial/execute', payload: step(n) })));
      for (const res of results) expect(res.statusCode, res.body).toBe(200);
      const lines = fs.readFileSync(log, 'utf8').trim().split('\n');
      fs.rmSync(log);
      // One at a time: every start is followed by its own end.
      for (let i = 0; i < lines.length; i += 2) expect(lines[i + 1], `round ${round}: ${lines.join(' ')}`).toBe(lines[i]?.replace('start', 'end'));
      // In arrival order.
      expect(lines.filter((l) => l.startsWith('start-')), `round ${round}`).toEqual(order.map((n) => `start-${n}`));
    }
  });

  it('rejects timeout_seconds above the configured maximum with 400 naming timeout_seconds', async () => {
    const body = expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions/run/execute', payload: { command: 'true', timeout_seconds: MAX_TIMEOUT + 1 } }), 400);
    expect(body.message).toContain('timeout_seconds');
    for (const bad of [0, -1]) {
      const b = expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions/run/execute', payload: { command: 'true', timeout_seconds: bad } }), 400);
      expect(b.message).toContain('timeout_seconds');
    }
    const ok = await execute(t.app, 'run', { command: 'true', timeout_seconds: MAX_TIMEOUT });
    expect(ok.timeout_seconds).toBe(MAX_TIMEOUT);
  });

  it('rejects limits above the configured ones with 400 naming the field; lower limits are accepted', async () => {
    const d = t.sandbox.defaultLimits;
    const cases: [Record<string, number>, string][] = [
      [{ memory_bytes: d.memoryBytes + 1 }, 'memory_bytes'],
      [{ pids: d.pids + 1 }, 'pids'],
      [{ cpu_cores: d.cpuCores + 1 }, 'cpu_cores'],
    ];
    for (const [limits, field] of cases) {
      const body = expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions/run/execute', payload: { command: 'true', limits } }), 400);
      expect(body.message).toContain(field);
    }
    const unknown = expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions/run/execute', payload: { command: 'true', limits: { disk_bytes: 1 } } }), 400);
    expect(unknown.message).toContain('disk_bytes');
    const ok = await execute(t.app, 'run', { command: 'echo fine', limits: { memory_bytes: 128 * 1024 * 1024, pids: 32, cpu_cores: 0.5 } });
    expect(ok.status).toBe('ok');
  });

  it('requires exactly one of script, command and argv (400)', async () => {
    const bodies = [
      { script: 'print(1)', command: 'true' },
      { command: 'true', argv: ['/bin/true'] },
      { script: 'print(1)', argv: ['/bin/true'] },
      { script: 'print(1)', command: 'true', argv: ['/bin/true'] },
      {},
      { stdin: 'x' },
    ];
    for (const payload of bodies) {
      const body = expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions/run/execute', payload }), 400);
      expect(body.message).toMatch(/script|command|argv/);
    }
  });

  it('404 SESSION_NOT_FOUND for an unknown session', async () => {
    expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions/nobody/execute', payload: { command: 'true' } }), 404, 'SESSION_NOT_FOUND');
  });
});

describe('the changed-files report between executions', () => {
  // The report reuses the snapshot the previous execution left; files the API changed in between
  // must never be attributed to the next execution.
  it('does not report an upload made between two executions', async () => {
    await createSession(t.app, { session_id: 'between-up' });
    const first = await execute(t.app, 'between-up', { command: 'echo k > keep.txt' });
    expect(first.files.created).toEqual(['keep.txt']);
    expect((await upload(t.app, 'between-up', [{ name: 'uploaded.csv', content: 'x,y\n' }])).statusCode).toBe(201);
    const second = await execute(t.app, 'between-up', { command: 'echo c > new.txt; echo more >> keep.txt' });
    expect(second.files).toEqual({ created: ['new.txt'], modified: ['keep.txt'], deleted: [] });
    const third = await execute(t.app, 'between-up', { command: 'rm new.txt' });
    expect(third.files).toEqual({ created: [], modified: [], deleted: ['new.txt'] });
  });

  it('does not report an API delete made between two executions', async () => {
    await createSession(t.app, { session_id: 'between-del' });
    await execute(t.app, 'between-del', { command: 'echo a > made.txt' });
    const del = await t.app.inject({ method: 'DELETE', url: '/v1/sessions/between-del/files/made.txt' });
    expect(del.statusCode).toBe(204);
    const second = await execute(t.app, 'between-del', { command: 'true' });
    expect(second.files).toEqual({ created: [], modified: [], deleted: [] });
  });
});

describe('POST /v1/execute (one-shot)', () => {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  // Less the places prepared for the next run (a workspace with a warm sandbox, see one-shot-warm.ts).
  const oneshotEntries = async () => {
    await t.sessions.oneShotRemovalsSettled(); // removed after the answer
    const prepared = await t.sessions.oneShotWarm.preparedDirs();
    return fs.readdirSync(path.join(t.workspaceDir, 'oneshot')).filter((e) => !prepared.includes(e));
  };

  it('writes input files, returns changed files inline, and leaves no workspace behind', async () => {
    const res = await t.app.inject({
      method: 'POST', url: '/v1/execute',
      payload: {
        files: [{ path: 'in/data.csv', content_base64: b64('a,b\n1,2\n') }],
        script: 'data = open("in/data.csv").read()\nopen("out.txt", "w").write(data.upper())\nprint(len(data))',
      },
    });
    expect(res.statusCode, res.body).toBe(200);
    const r = res.json<OneShotResultBody>();
    expect(r.status).toBe('ok');
    expect(r.stdout).toBe('8\n');
    expect(r.files.created).toEqual(['out.txt']);
    expect(r.files.outputs).toEqual([{ path: 'out.txt', size: 8, content_base64: b64('A,B\n1,2\n') }]);
    expect(r.files.outputs_omitted).toEqual([]);
    expect(await oneshotEntries()).toEqual([]);
    expect(t.sessions.count).toBeGreaterThan(0); // the one-shot did not become a session
    const sessions = (await t.app.inject({ method: 'GET', url: '/v1/sessions' })).json<{ sessions: { session_id: string }[] }>().sessions;
    expect(sessions.length).toBe(t.sessions.count);
  });

  it('uses the requested environment', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/v1/execute', payload: { environment: 'pandas-exec', script: 'import pandas\nprint("ok")' } });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json<OneShotResultBody>().stdout).toBe('ok\n');
    expectError(await t.app.inject({ method: 'POST', url: '/v1/execute', payload: { environment: 'nope', command: 'true' } }), 404, 'ENVIRONMENT_NOT_FOUND');
  });

  it('respects MAX_OUTPUT_FILES and MAX_OUTPUT_FILE_BYTES (outputs_omitted)', async () => {
    const res = await t.app.inject({
      method: 'POST', url: '/v1/execute',
      payload: { command: 'echo a > a.txt; echo b > b.txt; echo c > c.txt; head -c 500 /dev/zero > big.bin' },
    });
    expect(res.statusCode, res.body).toBe(200);
    const r = res.json<OneShotResultBody>();
    expect(r.files.created).toEqual(['a.txt', 'b.txt', 'big.bin', 'c.txt']);
    expect(r.files.outputs.length).toBeLessThanOrEqual(2);
    const returned = r.files.outputs.map((o) => o.path);
    expect(returned).not.toContain('big.bin');
    expect(r.files.outputs_omitted).toContain('big.bin');
    expect([...returned, ...r.files.outputs_omitted].sort()).toEqual(['a.txt', 'b.txt', 'big.bin', 'c.txt']);
    for (const o of r.files.outputs) expect(Buffer.from(o.content_base64, 'base64').toString()).toBe(`${o.path[0] ?? ''}\n`);
    expect(await oneshotEntries()).toEqual([]);
  });

  it('does not return input files that were not changed', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/v1/execute', payload: { files: [{ path: 'keep.txt', content_base64: b64('same') }], command: 'cat keep.txt' } });
    const r = res.json<OneShotResultBody>();
    expect(r.stdout).toBe('same');
    expect(r.files.outputs).toEqual([]);
    expect(r.files.created).toEqual([]);
  });

  it('removes the workspace after a timeout too', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/v1/execute', payload: { command: 'echo x > x.txt; sleep 30', timeout_seconds: 1 } });
    expect(res.statusCode).toBe(200);
    expect(res.json<OneShotResultBody>().status).toBe('timeout');
    expect(await oneshotEntries()).toEqual([]);
  });

  it('400 INVALID_PATH for a bad file path', async () => {
    for (const p of ['../x.csv', '/abs.csv', 'a/../../x.csv', 'a\\b.csv']) {
      const body = expectError(await t.app.inject({ method: 'POST', url: '/v1/execute', payload: { command: 'true', files: [{ path: p, content_base64: b64('x') }] } }), 400, 'INVALID_PATH');
      expect(body.message).toContain('files');
    }
    expect(await oneshotEntries()).toEqual([]);
  });

  it('415 EXTENSION_NOT_ALLOWED for a disallowed extension', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/v1/execute', payload: { command: 'true', files: [{ path: 'ok.csv', content_base64: b64('x') }, { path: 'run.sh', content_base64: b64('x') }] } });
    expectError(res, 415, 'EXTENSION_NOT_ALLOWED');
    expect(await oneshotEntries()).toEqual([]);
  });

  it('413 UPLOAD_TOO_LARGE when the files exceed the upload limit', async () => {
    const big = b64('x'.repeat(600));
    const res = await t.app.inject({ method: 'POST', url: '/v1/execute', payload: { command: 'true', files: [{ path: 'a.csv', content_base64: big }, { path: 'b.csv', content_base64: big }] } });
    expectError(res, 413, 'UPLOAD_TOO_LARGE');
    expect(await oneshotEntries()).toEqual([]);
  });
});

describe('back-pressure', () => {
  it('MAX_CONCURRENT_EXECUTIONS=1, MAX_QUEUED_EXECUTIONS=0: a second execution elsewhere is 429 BUSY with Retry-After', async () => {
    const b = await createTestApp({ MAX_CONCURRENT_EXECUTIONS: '1', MAX_QUEUED_EXECUTIONS: '0' });
    try {
      await createSession(b.app, { session_id: 'busy-a' });
      await createSession(b.app, { session_id: 'busy-b' });
      const [ra, rb] = await Promise.all([
        b.app.inject({ method: 'POST', url: '/v1/sessions/busy-a/execute', payload: { command: 'sleep 2' } }),
        b.app.inject({ method: 'POST', url: '/v1/sessions/busy-b/execute', payload: { command: 'sleep 2' } }),
      ]);
      const statuses = [ra.statusCode, rb.statusCode].sort();
      expect(statuses).toEqual([200, 429]);
      const rejected = ra.statusCode === 429 ? ra : rb;
      expectError(rejected, 429, 'BUSY');
      expect(Number(rejected.headers['retry-after'])).toBeGreaterThan(0);
      // Once the slot is free, executions run again.
      expect((await execute(b.app, 'busy-b', { command: 'echo again' })).stdout).toBe('again\n');
    } finally {
      await b.close();
    }
  });
});
