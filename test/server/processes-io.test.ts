// Output and terminals of session processes, in real sandboxes: offsets and a bounded buffer,
// the NDJSON follow, a reader that holds back, the pty (through attachPty, what the WebSocket
// route uses), and processes ended by idle expiry and by shutdown.
import { describe, expect, it } from 'vitest';
import { createTestApp, useTestApp } from '../helpers/app.js';
import { waitUntil } from '../helpers/host-processes.js';
import { createSession, expectError, fakeClock } from '../helpers/http.js';
import { processSandboxesOf, readOutput, sessionUid, startProcess, waitForEnd, waitForOutput } from '../helpers/processes.js';

const t = useTestApp({ PROCESS_OUTPUT_BUFFER_BYTES: '1024', PTY_SCROLLBACK_BYTES: '4096' });

describe('output', () => {
  it('since/next count characters of the combined output; past the buffer, truncated_before', async () => {
    const s = await createSession(t.app);
    const proc = await startProcess(t.app, s.session_id, { command: 'printf "aé"; printf "E" >&2; printf "b"' });
    await waitForEnd(t.app, s.session_id, proc.pid);
    expect(await readOutput(t.app, s.session_id, proc.pid)).toEqual({ stdout: 'aéb', stderr: 'E', next: 4, truncated_before: false });
    expect(await readOutput(t.app, s.session_id, proc.pid, 2)).toEqual({ stdout: 'b', stderr: 'E', next: 4, truncated_before: false });
    expect(await readOutput(t.app, s.session_id, proc.pid, 4)).toEqual({ stdout: '', stderr: '', next: 4, truncated_before: false });

    // 3000 characters through a 1024-character buffer: the newest 1024 are kept.
    const big = await startProcess(t.app, s.session_id, { command: 'for i in $(seq 1 300); do printf "%09d\\n" $i; done' });
    await waitForEnd(t.app, s.session_id, big.pid);
    const all = await readOutput(t.app, s.session_id, big.pid);
    expect(all.next).toBe(3000);
    expect(all.truncated_before).toBe(true);
    expect(all.stdout).toHaveLength(1024);
    expect(all.stdout.endsWith('000000300\n')).toBe(true);
    const tail = await readOutput(t.app, s.session_id, big.pid, 2990);
    expect(tail).toEqual({ stdout: '000000300\n', stderr: '', next: 3000, truncated_before: false });
    expect((await readOutput(t.app, s.session_id, big.pid, 1975)).truncated_before).toBe(true);
    expect((await readOutput(t.app, s.session_id, big.pid, 1976)).truncated_before).toBe(false);
  });

  it('NDJSON follows the output live and ends with the exit line', async () => {
    const s = await createSession(t.app);
    const proc = await startProcess(t.app, s.session_id, { command: 'echo first; read line; echo "got $line" >&2; exit 4' });
    await waitForOutput(t.app, s.session_id, proc.pid, (o) => o.stdout === 'first\n');
    const res = await t.app.inject({
      method: 'GET', url: `/v1/sessions/${s.session_id}/processes/${proc.pid}/output?since=0`, headers: { accept: 'application/x-ndjson' }, payloadAsStream: true,
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('application/x-ndjson');
    const stream = res.stream();
    const lines: Record<string, unknown>[] = [];
    let buf = '';
    const ended = new Promise<void>((resolve) => stream.on('end', resolve));
    stream.on('data', (c: Buffer) => {
      buf += c.toString('utf8');
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        lines.push(JSON.parse(buf.slice(0, i)) as Record<string, unknown>);
        buf = buf.slice(i + 1);
      }
    });
    // The earlier output comes at once, while the process still runs (it waits for stdin).
    await waitUntil(() => lines.length, (n) => n >= 1, 5000);
    expect(lines).toEqual([{ type: 'stdout', data: 'first\n' }]);
    await t.app.inject({ method: 'POST', url: `/v1/sessions/${s.session_id}/processes/${proc.pid}/stdin`, payload: { data: 'x\n' } });
    await ended;
    expect(lines.slice(1, -1)).toEqual([{ type: 'stderr', data: 'got x\n' }]);
    expect(lines.at(-1)).toMatchObject({ type: 'exit', pid: proc.pid, status: 'exited', exit_code: 4, signal: null });
    // Following an ended process: what is kept, then the exit line at once.
    const again = await t.app.inject({ method: 'GET', url: `/v1/sessions/${s.session_id}/processes/${proc.pid}/output?since=6`, headers: { accept: 'application/x-ndjson' } });
    expect(again.body.trim().split('\n').map((l) => JSON.parse(l) as { type: string })).toMatchObject([{ type: 'stderr', data: 'got x\n' }, { type: 'exit', exit_code: 4 }]);
    expectError(await t.app.inject({ method: 'GET', url: `/v1/sessions/${s.session_id}/processes/p-nosuch/output`, headers: { accept: 'application/x-ndjson' } }), 404, 'PROCESS_NOT_FOUND');
  });

  it('a follower that holds back is never queued for: it resumes where the ring is, skipping what fell out', async () => {
    const s = await createSession(t.app);
    const proc = await startProcess(t.app, s.session_id, { command: 'echo start; read go; for i in $(seq 1 300); do printf "%09d\\n" $i; done' });
    await waitForOutput(t.app, s.session_id, proc.pid, (o) => o.stdout === 'start\n');
    const procs = await t.sessions.processesOf(s.session_id);
    let release: () => void = () => undefined;
    const got: string[] = [];
    let calls = 0;
    const exited = new Promise<void>((resolve) => {
      procs.follow(proc.pid, 0, {
        output: (_stream, text) => {
          got.push(text);
          calls++;
          if (calls === 1) return new Promise<void>((r) => { release = r; });
          return undefined;
        },
        exit: () => resolve(),
      });
    });
    await waitUntil(() => calls, (n) => n === 1, 5000);
    await t.app.inject({ method: 'POST', url: `/v1/sessions/${s.session_id}/processes/${proc.pid}/stdin`, payload: { data: 'go\n' } });
    await waitForEnd(t.app, s.session_id, proc.pid);
    expect(calls).toBe(1); // nothing was pushed at it while it held back
    release();
    await exited;
    expect(got[0]).toBe('start\n');
    const rest = got.slice(1).join('');
    expect(rest).toHaveLength(1024); // the ring, not the 3000 characters written meanwhile
    expect(rest.endsWith('000000300\n')).toBe(true);
  });
});

describe('a terminal (pty)', () => {
  it('isatty, TERM, stty size after a resize, ^C interrupts sleep, scrollback replays; bad sizes are 400 and change nothing', async () => {
    const s = await createSession(t.app);
    const proc = await startProcess(t.app, s.session_id, { argv: ['bash', '--norc', '-i'], pty: { cols: 100, rows: 30 }, env: { PS1: 'P> ' } });
    expect(proc.pty).toBe(true);
    const procs = await t.sessions.processesOf(s.session_id);
    const term = procs.attachPty(proc.pid);
    let screen = term.scrollback.toString('utf8');
    term.onData((c) => {
      screen += c.toString('utf8');
    });
    const exitInfo = new Promise((resolve) => term.onExit(resolve));
    const waitFor = async (re: RegExp) => {
      const ok = await waitUntil(() => screen, (v) => re.test(v), 10_000);
      expect(ok).toMatch(re);
    };
    await waitFor(/P> $/);
    term.write(Buffer.from('python3 -c "import sys; print(\'tty\', sys.stdin.isatty(), sys.stdout.isatty())"; echo "T=$TERM"; stty size\r'));
    await waitFor(/tty True True\r\nT=xterm-256color\r\n30 100\r\n/);
    term.resize(132, 43);
    expect(() => term.resize(0, 24)).toThrow(expect.objectContaining({ statusCode: 400 }));
    expect(() => term.resize(80, 100_000)).toThrow(expect.objectContaining({ statusCode: 400 }));
    term.write(Buffer.from('stty size\r'));
    await waitFor(/43 132\r\n/);
    term.write(Buffer.from('sleep 100\r'));
    await waitFor(/sleep 100\r\n/);
    await new Promise((r) => setTimeout(r, 200));
    term.write(Buffer.from('\x03'));
    await waitFor(/\^C/);
    term.write(Buffer.from('echo "rc=$?"\r'));
    await waitFor(/rc=130/);
    // A client that attaches now sees where the terminal is.
    expect(procs.attachPty(proc.pid).scrollback.toString('utf8')).toContain('rc=130');
    // The GET output route carries the terminal's output too.
    expect((await readOutput(t.app, s.session_id, proc.pid)).stdout).toContain('rc=130');
    term.write(Buffer.from('exit 7\r'));
    expect(await exitInfo).toMatchObject({ status: 'exited', exit_code: 7 });
    expect(() => term.write(Buffer.from('x'))).toThrow(expect.objectContaining({ code: 'PROCESS_EXITED' }));
  });

  it('the scrollback stays within PTY_SCROLLBACK_BYTES; a pipes process has no terminal (409)', async () => {
    const s = await createSession(t.app);
    const proc = await startProcess(t.app, s.session_id, { command: 'seq 1 5000', pty: { cols: 80, rows: 24 } });
    await waitForEnd(t.app, s.session_id, proc.pid);
    const procs = await t.sessions.processesOf(s.session_id);
    const back = procs.attachPty(proc.pid).scrollback;
    expect(back.length).toBe(4096);
    expect(back.toString('utf8').endsWith('4999\r\n5000\r\n')).toBe(true);
    const pipes = await startProcess(t.app, s.session_id, { argv: ['true'] });
    expect(() => procs.attachPty(pipes.pid)).toThrow(expect.objectContaining({ statusCode: 409, code: 'PROCESS_NOT_PTY' }));
  });
});

describe('the session ends', () => {
  it('idle expiry kills the running processes of the session it removes (a running process alone does not keep it alive)', async () => {
    const clock = fakeClock();
    const app = await createTestApp({ SESSION_IDLE_TIMEOUT_SECONDS: '60' }, { now: clock.now });
    try {
      const s = await createSession(app.app);
      const uid = await sessionUid(app.sessions, s.session_id);
      await startProcess(app.app, s.session_id, { command: 'sleep 1000 & sleep 1001' });
      expect(await waitUntil(() => processSandboxesOf(uid).length, (n) => n > 0, 5000)).toBeGreaterThan(0);
      clock.advance(61);
      expect(await app.sessions.sweep()).toEqual([s.session_id]);
      expect(processSandboxesOf(uid)).toEqual([]);
    } finally {
      await app.close();
    }
  });

  it('shutdown (SessionManager.close) kills every process', async () => {
    const app = await createTestApp();
    let uid = -1;
    try {
      const s = await createSession(app.app);
      uid = await sessionUid(app.sessions, s.session_id);
      await startProcess(app.app, s.session_id, { command: 'sleep 1000 & sleep 1001' });
      await startProcess(app.app, s.session_id, { argv: ['bash', '-i'], pty: { cols: 80, rows: 24 } });
      expect(await waitUntil(() => processSandboxesOf(uid).length, (n) => n > 0, 5000)).toBeGreaterThan(0);
      // The manager's own close, before the sandbox's (whose cgroup cleanup would kill them anyway).
      await app.sessions.close(0);
      expect(processSandboxesOf(uid)).toEqual([]);
    } finally {
      await app.close();
    }
  });
});

describe('stdin to a program that does not read', () => {
  const s2 = useTestApp();

  it('waits in the service only up to a bound: past it 429 STDIN_BACKLOG at once, and the waiting writes answer when the process ends', async () => {
    const s = await createSession(s2.app);
    const proc = await startProcess(s2.app, s.session_id, { argv: ['python3', '-c', 'import time; time.sleep(1000)'] });
    const chunk = 'x'.repeat(1_000_000);
    const send = () => s2.app.inject({ method: 'POST', url: `/v1/sessions/${s.session_id}/processes/${proc.pid}/stdin`, payload: { data: chunk } });
    // Eight at once to a program that never reads: a write waits until the pipe takes it, so none
    // of these can answer 204; past 1 MiB waiting, the rest are refused at once.
    let settled = 0;
    const pending = Array.from({ length: 8 }, () => send().finally(() => settled++));
    // All but the (at most two) waiting ones answer at once.
    for (let i = 0; i < 200 && settled < 6; i++) await new Promise((r) => setTimeout(r, 25));
    expect(settled).toBeGreaterThanOrEqual(6);
    expect((await s2.app.inject({ method: 'DELETE', url: `/v1/sessions/${s.session_id}/processes/${proc.pid}` })).statusCode).toBe(204);
    const answers = await Promise.all(pending);
    // At most two megabyte writes ever waited (the bound is checked before each write); the others
    // were refused at once. A waiting write answers when the process ends: 204 if the sandbox's
    // side had taken its bytes by then, else 409 (they never reached the program).
    const waited = answers.filter((a) => a.statusCode !== 429);
    expect(waited.length).toBeGreaterThanOrEqual(1);
    expect(waited.length).toBeLessThanOrEqual(2);
    for (const a of waited) expect([204, 409]).toContain(a.statusCode);
    for (const a of answers.filter((x) => x.statusCode === 429)) {
      expectError(a, 429, 'STDIN_BACKLOG');
      expect(a.headers['retry-after']).toBe('1');
    }
    expectError(await send(), 409, 'PROCESS_EXITED');
  });
});
