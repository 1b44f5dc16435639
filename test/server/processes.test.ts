// Long-running processes through the routes, in real sandboxes: the same network namespace as the
// session's executions, isolation between sessions, output offsets, stdin, signals through the
// relay, and nothing left on the host after DELETE, a timeout, or the session's end.
import { describe, expect, it } from 'vitest';
import { useTestApp } from '../helpers/app.js';
import { listHostProcesses, waitUntil } from '../helpers/host-processes.js';
import { createSession, expectError, ISO_UTC, type ExecutionResultBody } from '../helpers/http.js';
import { getProcess, processSandboxesOf, readOutput, sessionUid, startProcess, waitForEnd, waitForOutput, type ProcessInfoBody } from '../helpers/processes.js';

const t = useTestApp({ MAX_PROCESSES_PER_SESSION: '3', PROCESS_MAX_SECONDS: '120' });

describe('a process in the session', () => {
  it('a server started as a process answers an execution of the same session (one network namespace)', async () => {
    const s = await createSession(t.app);
    const proc = await startProcess(t.app, s.session_id, { command: 'exec python3 -m http.server 8123 --bind 127.0.0.1' });
    expect(proc).toMatchObject({ command: 'exec python3 -m http.server 8123 --bind 127.0.0.1', pty: false, status: 'running', exit_code: null, signal: null, ended_at: null });
    expect(proc.pid).toMatch(/^p-[0-9a-f]{16}$/);
    expect(proc.started_at).toMatch(ISO_UTC);
    await waitForOutput(t.app, s.session_id, proc.pid, (o) => o.stdout.includes('Serving HTTP'));
    const fetch = 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:8123/").status)';
    const res = await t.app.inject({ method: 'POST', url: `/v1/sessions/${s.session_id}/execute`, payload: { argv: ['python3', '-c', fetch] } });
    expect(res.json<ExecutionResultBody>()).toMatchObject({ status: 'ok', stdout: '200\n' });
    // The server logged the request: same process, same namespace.
    await waitForOutput(t.app, s.session_id, proc.pid, (o) => o.stderr.includes('"GET / HTTP/1.1" 200'));
    // Another session's namespace has no such server.
    const other = await createSession(t.app);
    const res2 = await t.app.inject({ method: 'POST', url: `/v1/sessions/${other.session_id}/execute`, payload: { argv: ['python3', '-c', fetch] } });
    expect(res2.json<ExecutionResultBody>().status).toBe('error');
    expect(res2.json<ExecutionResultBody>().stderr).toContain('Connection refused');
    await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${s.session_id}/processes/${proc.pid}` });
  });

  it('runs as the session\'s uid, in its workspace, with its environment and the request\'s variables, from cwd', async () => {
    const s = await createSession(t.app);
    await t.app.inject({ method: 'POST', url: `/v1/sessions/${s.session_id}/execute`, payload: { command: 'mkdir -p sub/dir && echo hi > sub/dir/f.txt' } });
    const proc = await startProcess(t.app, s.session_id, { command: 'id -u; pwd; cat f.txt; echo "$MY_VAR"; ulimit -t', cwd: 'sub/dir', env: { MY_VAR: 'v1' }, timeout_seconds: 50 });
    const end = await waitForEnd(t.app, s.session_id, proc.pid);
    expect(end).toMatchObject({ status: 'exited', exit_code: 0, signal: null });
    expect(end.ended_at).toMatch(ISO_UTC);
    // RLIMIT_CPU follows the process's own timeout (+5), not the execution default.
    expect((await readOutput(t.app, s.session_id, proc.pid)).stdout).toBe('1000\n/workspace/sub/dir\nhi\nv1\n55\n');
  });

  it('is invisible to another session\'s routes', async () => {
    const a = await createSession(t.app);
    const b = await createSession(t.app);
    const proc = await startProcess(t.app, a.session_id, { argv: ['sleep', '30'] });
    for (const [method, suffix, payload] of [
      ['GET', '', undefined], ['GET', '/output', undefined], ['POST', '/stdin', { data: 'x' }], ['POST', '/signal', { signal: 'SIGKILL' }], ['DELETE', '', undefined],
    ] as const) {
      expectError(await t.app.inject({ method, url: `/v1/sessions/${b.session_id}/processes/${proc.pid}${suffix}`, ...(payload ? { payload } : {}) }), 404, 'PROCESS_NOT_FOUND');
    }
    const list = await t.app.inject({ method: 'GET', url: `/v1/sessions/${b.session_id}/processes` });
    expect(list.json()).toEqual({ processes: [] });
    expect((await getProcess(t.app, a.session_id, proc.pid)).status).toBe('running');
    const listA = await t.app.inject({ method: 'GET', url: `/v1/sessions/${a.session_id}/processes` });
    expect(listA.json<{ processes: ProcessInfoBody[] }>().processes.map((p) => p.pid)).toEqual([proc.pid]);
    await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${a.session_id}/processes/${proc.pid}` });
  });

  it('stdin reaches the program: data, data_base64, then eof ends `cat`; stdin after the end is 409', async () => {
    const s = await createSession(t.app);
    const proc = await startProcess(t.app, s.session_id, { argv: ['cat'] });
    const url = `/v1/sessions/${s.session_id}/processes/${proc.pid}`;
    expect((await t.app.inject({ method: 'POST', url: `${url}/stdin`, payload: { data: 'héllo\n' } })).statusCode).toBe(204);
    expect((await t.app.inject({ method: 'POST', url: `${url}/stdin`, payload: { data_base64: Buffer.from('bytes\n').toString('base64') } })).statusCode).toBe(204);
    const out = await waitForOutput(t.app, s.session_id, proc.pid, (o) => o.stdout === 'héllo\nbytes\n');
    expect(out).toEqual({ stdout: 'héllo\nbytes\n', stderr: '', next: 12, truncated_before: false });
    expect((await t.app.inject({ method: 'POST', url: `${url}/stdin`, payload: { eof: true } })).statusCode).toBe(204);
    expect(await waitForEnd(t.app, s.session_id, proc.pid)).toMatchObject({ status: 'exited', exit_code: 0 });
    expectError(await t.app.inject({ method: 'POST', url: `${url}/stdin`, payload: { data: 'late' } }), 409, 'PROCESS_EXITED');
    expectError(await t.app.inject({ method: 'POST', url: `${url}/signal`, payload: { signal: 'SIGTERM' } }), 409, 'PROCESS_EXITED');
  });

  it('SIGINT reaches the program through the relay: its trap runs (a signal to bwrap would kill the sandbox without it)', async () => {
    const s = await createSession(t.app);
    const proc = await startProcess(t.app, s.session_id, { command: 'trap "echo trapped; exit 3" INT; echo ready; while :; do sleep 0.1; done' });
    await waitForOutput(t.app, s.session_id, proc.pid, (o) => o.stdout === 'ready\n');
    const res = await t.app.inject({ method: 'POST', url: `/v1/sessions/${s.session_id}/processes/${proc.pid}/signal`, payload: { signal: 'SIGINT' } });
    expect(res.statusCode, res.body).toBe(204);
    expect(await waitForEnd(t.app, s.session_id, proc.pid)).toMatchObject({ status: 'exited', exit_code: 3, signal: null });
    expect((await readOutput(t.app, s.session_id, proc.pid)).stdout).toBe('ready\ntrapped\n');
  });

  it('SIGTERM without a trap ends it by that signal; SIGKILL ends a program that ignores everything else', async () => {
    const s = await createSession(t.app);
    const plain = await startProcess(t.app, s.session_id, { argv: ['sleep', '60'] });
    await new Promise((r) => setTimeout(r, 300));
    await t.app.inject({ method: 'POST', url: `/v1/sessions/${s.session_id}/processes/${plain.pid}/signal`, payload: { signal: 'SIGTERM' } });
    expect(await waitForEnd(t.app, s.session_id, plain.pid)).toMatchObject({ status: 'killed', exit_code: null, signal: 'SIGTERM' });
    const stubborn = await startProcess(t.app, s.session_id, { command: 'trap "" INT TERM HUP; echo ready; while :; do sleep 0.1; done' });
    await waitForOutput(t.app, s.session_id, stubborn.pid, (o) => o.stdout === 'ready\n');
    await t.app.inject({ method: 'POST', url: `/v1/sessions/${s.session_id}/processes/${stubborn.pid}/signal`, payload: { signal: 'SIGTERM' } });
    await new Promise((r) => setTimeout(r, 300));
    expect((await getProcess(t.app, s.session_id, stubborn.pid)).status).toBe('running');
    await t.app.inject({ method: 'POST', url: `/v1/sessions/${s.session_id}/processes/${stubborn.pid}/signal`, payload: { signal: 'SIGKILL' } });
    expect(await waitForEnd(t.app, s.session_id, stubborn.pid)).toMatchObject({ status: 'killed', exit_code: null, signal: 'SIGKILL' });
  });
});

describe('nothing left behind', () => {
  it('DELETE takes the process and its background grandchild off the host before it answers; it stays listed as killed', async () => {
    const s = await createSession(t.app);
    const uid = await sessionUid(t.sessions, s.session_id);
    const proc = await startProcess(t.app, s.session_id, { command: 'sleep 1000 & echo started; exec sleep 999' });
    await waitForOutput(t.app, s.session_id, proc.pid, (o) => o.stdout === 'started\n');
    const mine = await waitUntil(() => processSandboxesOf(uid), (ps) => ps.some((p) => p.argv[0] === 'sleep' && p.argv[1] === '1000') && ps.some((p) => p.argv[1] === '999'), 5000);
    expect(mine.map((p) => p.argv.join(' '))).toEqual(expect.arrayContaining(['sleep 1000', 'sleep 999']));
    const res = await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${s.session_id}/processes/${proc.pid}` });
    expect(res.statusCode, res.body).toBe(204);
    // Already gone when DELETE answered: by uid, by cgroup, by pid.
    expect(processSandboxesOf(uid)).toEqual([]);
    const pids = new Set(mine.map((p) => p.pid));
    expect(listHostProcesses().filter((p) => pids.has(p.pid) && mine.some((m) => m.pid === p.pid && m.start === p.start))).toEqual([]);
    expect(await getProcess(t.app, s.session_id, proc.pid)).toMatchObject({ status: 'killed', signal: 'SIGKILL', exit_code: null });
    // DELETE again: still 204, nothing changes.
    expect((await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${s.session_id}/processes/${proc.pid}` })).statusCode).toBe(204);
  });

  it('timeout_seconds ends it with status timeout, descendants included', async () => {
    const s = await createSession(t.app);
    const uid = await sessionUid(t.sessions, s.session_id);
    const proc = await startProcess(t.app, s.session_id, { command: 'sleep 1000 & sleep 1001', timeout_seconds: 1 });
    const end = await waitForEnd(t.app, s.session_id, proc.pid, 10_000);
    expect(end).toMatchObject({ status: 'timeout', exit_code: null, signal: 'SIGKILL' });
    expect(Date.parse(end.ended_at ?? '') - Date.parse(end.started_at)).toBeGreaterThanOrEqual(900);
    expect(await waitUntil(() => processSandboxesOf(uid), (l) => l.length === 0, 2000)).toEqual([]);
  });

  it('deleting the session kills its running processes (with and without its data)', async () => {
    for (const clear of [true, false]) {
      const s = await createSession(t.app);
      const uid = await sessionUid(t.sessions, s.session_id);
      await startProcess(t.app, s.session_id, { command: 'sleep 1000 & sleep 1001' });
      await startProcess(t.app, s.session_id, { argv: ['bash', '-i'], pty: { cols: 80, rows: 24 } });
      await waitUntil(() => processSandboxesOf(uid), (ps) => ps.filter((p) => p.argv[0] === 'sleep').length === 2, 5000);
      const res = await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${s.session_id}?clear_data=${clear}` });
      expect(res.statusCode, res.body).toBe(204);
      expect(processSandboxesOf(uid)).toEqual([]);
      expectError(await t.app.inject({ method: 'GET', url: `/v1/sessions/${s.session_id}/processes` }), 404, 'SESSION_NOT_FOUND');
    }
  });
});

describe('limits and bad input', () => {
  it('MAX_PROCESSES_PER_SESSION running at once, then 429; an ended one frees its place', async () => {
    const s = await createSession(t.app);
    const procs = [];
    for (let i = 0; i < 3; i++) procs.push(await startProcess(t.app, s.session_id, { argv: ['sleep', '60'] }));
    expectError(await t.app.inject({ method: 'POST', url: `/v1/sessions/${s.session_id}/processes`, payload: { argv: ['sleep', '60'] } }), 429, 'TOO_MANY_PROCESSES');
    // Another session has places of its own.
    const other = await createSession(t.app);
    await startProcess(t.app, other.session_id, { argv: ['true'] });
    await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${s.session_id}/processes/${procs[0]?.pid ?? ''}` });
    await startProcess(t.app, s.session_id, { argv: ['true'] });
    await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${s.session_id}` });
  });

  it('refuses bad starts with clear 4xx answers, and leaves a running process as it was', async () => {
    const s = await createSession(t.app);
    const proc = await startProcess(t.app, s.session_id, { command: 'touch afile; ln -s /etc alink; echo up; sleep 60' });
    const url = `/v1/sessions/${s.session_id}/processes`;
    const bad: [Record<string, unknown>, number, string, string][] = [
      [{ command: 'true', argv: ['true'] }, 400, 'FST_ERR_VALIDATION', 'exactly one of command or argv'],
      [{}, 400, 'FST_ERR_VALIDATION', 'exactly one of command or argv'],
      [{ command: 'true', cwd: '../etc' }, 400, 'INVALID_PATH', 'body.cwd'],
      [{ command: 'true', cwd: '/etc' }, 400, 'INVALID_PATH', 'body.cwd'],
      [{ command: 'true', timeout_seconds: 121 }, 400, 'FST_ERR_VALIDATION', 'timeout_seconds'],
      [{ command: 'true', pty: { cols: 0, rows: 24 } }, 400, 'FST_ERR_VALIDATION', 'pty.cols'],
      [{ command: 'true', pty: { cols: 80, rows: 100_000 } }, 400, 'FST_ERR_VALIDATION', 'pty.rows'],
    ];
    for (const [payload, status, code, words] of bad) {
      const body = expectError(await t.app.inject({ method: 'POST', url, payload }), status, code);
      expect(body.message, JSON.stringify(payload)).toContain(words);
    }
    const sig = expectError(await t.app.inject({ method: 'POST', url: `${url}/${proc.pid}/signal`, payload: { signal: 'SIGSTOP' } }), 400, 'FST_ERR_VALIDATION');
    expect(sig.message).toContain('signal');
    expectError(await t.app.inject({ method: 'POST', url: `${url}/${proc.pid}/stdin`, payload: { data: 'a', eof: true } }), 400, 'FST_ERR_VALIDATION');
    expectError(await t.app.inject({ method: 'GET', url: `${url}/${proc.pid}/output?since=-1` }), 400, 'FST_ERR_VALIDATION');
    expectError(await t.app.inject({ method: 'GET', url: `${url}/p-0000000000000000` }), 404, 'PROCESS_NOT_FOUND');
    expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions/nosuch/processes', payload: { command: 'true' } }), 404, 'SESSION_NOT_FOUND');
    expect(await getProcess(t.app, s.session_id, proc.pid)).toMatchObject({ status: 'running' });
    expect((await waitForOutput(t.app, s.session_id, proc.pid, (o) => o.stdout !== '')).stdout).toBe('up\n');
    // A cwd the workspace does not hold as a directory: 400 before anything starts, not a 127 exit.
    for (const [cwd, words] of [['nosuch/dir', 'is not a directory in the workspace'], ['afile', 'is not a directory'], ['alink', 'is not a directory']]) {
      const body = expectError(await t.app.inject({ method: 'POST', url, payload: { command: 'true', cwd } }), 400, 'INVALID_PATH');
      expect(body.message, cwd).toContain(words);
    }
    expect((await t.app.inject({ method: 'GET', url })).json<{ processes: unknown[] }>().processes).toHaveLength(1);
    await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${s.session_id}` });
  });
});
