// Stateful Python through HTTP with the real sandbox: POST /v1/sessions/{id}/run_code and
// POST /v1/sessions/{id}/kernel/restart, checked against the contract and the host's process table.
import { spawnSync } from 'node:child_process';
import type { FastifyInstance } from 'fastify';
import { describe, expect, it } from 'vitest';
import { useTestApp, type AppUnderTest } from '../helpers/app.js';
import { descendantsOf, stillRunning, waitUntil, type HostProcess } from '../helpers/host-processes.js';
import { RUN_CODE_RESULT_KEYS, createSession, expectError, fakeClock, type RunCodeResultBody } from '../helpers/http.js';
import { sleep } from '../helpers/host-env.js';

const MAX_TIMEOUT = 60;
const GRACE_SECONDS = 1;
/** Slack on top of timeout + grace for the answer to come back on a loaded machine. */
const MARGIN_MS = 2500;

async function runCodeRaw(app: FastifyInstance, id: string, body: Record<string, unknown>) {
  return app.inject({ method: 'POST', url: `/v1/sessions/${id}/run_code`, payload: body });
}

async function runCode(app: FastifyInstance, id: string, code: string, extra: Record<string, unknown> = {}): Promise<RunCodeResultBody> {
  const res = await runCodeRaw(app, id, { code, ...extra });
  expect(res.statusCode, res.body).toBe(200);
  const body = res.json<RunCodeResultBody>();
  expect(Object.keys(body).sort()).toEqual(RUN_CODE_RESULT_KEYS);
  return body;
}

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - started };
}

/**
 * Processes running as `uid` below this test process (sandboxes of other test files share uids),
 * except the session network's helper, which runs as the session's uid for the session's life.
 */
function ourSandboxProcesses(uid: number): HostProcess[] {
  return descendantsOf(process.pid).filter((p) => p.uid === uid && !p.command.includes('netns-helper.py'));
}

/**
 * Waits until none of `procs` runs, nor anything else of ours as `uid`. A zombie does not count:
 * the inner bwrap of a killed sandbox is left to the host's init to reap, which some inits (this
 * CI's among them) do only every second or so.
 */
function waitGone(procs: HostProcess[], uid: number, ms: number): Promise<HostProcess[]> {
  const probe = () => [...stillRunning(procs), ...ourSandboxProcesses(uid).filter((p) => !procs.some((q) => q.pid === p.pid))];
  return waitUntil(probe, (left) => left.length === 0, ms);
}

async function sandboxUidOf(t: AppUnderTest, id: string): Promise<number> {
  const owner = t.sessions.ownerOf(await t.sessions.touch(id));
  if (!owner) throw new Error('the service runs without per-session uids (not root?)');
  return owner.uid;
}

// --- the service with the common settings ----------------------------------------------------------

describe('run_code', () => {
  const t = useTestApp({
    MAX_EXECUTION_TIMEOUT_SECONDS: String(MAX_TIMEOUT),
    EXECUTION_TIMEOUT_SECONDS: '20',
    KERNEL_INTERRUPT_GRACE_SECONDS: String(GRACE_SECONDS),
  });

  it('names, imports and functions survive between calls; result is the repr of the final expression', async () => {
    await createSession(t.app, { session_id: 'state' });
    const first = await runCode(t.app, 'state', 'x = 41');
    expect(first).toMatchObject({
      status: 'ok', exit_code: 0, signal: null, stdout: '', stderr: '', result: null, kernel_restarted: false,
      error: null, timed_out: false, timeout_seconds: 20, truncated: false, max_output_chars: 100_000,
      files: { created: [], modified: [], deleted: [] },
    });
    expect(Object.keys(first.resources).sort()).toEqual(['cpu_ms', 'memory_peak_bytes']);
    expect(Number.isInteger(first.duration_ms)).toBe(true);

    expect(await runCode(t.app, 'state', 'x + 1')).toMatchObject({ status: 'ok', result: '42', kernel_restarted: false });

    await runCode(t.app, 'state', 'import math\ndef square(v):\n    return v * v\nclass Box:\n    def __init__(self, v):\n        self.v = v\n');
    const used = await runCode(t.app, 'state', "print('side effect')\nb = Box(square(math.sqrt(x + 8)))\nb.v");
    expect(used).toMatchObject({ status: 'ok', stdout: 'side effect\n', result: '49.0', kernel_restarted: false });

    const text = await runCode(t.app, 'state', "'a' + 'b'", { timeout_seconds: 5 });
    expect(text).toMatchObject({ result: "'ab'", timeout_seconds: 5 });
  });

  it('result is null when the last statement is not an expression', async () => {
    await createSession(t.app, { session_id: 'stmt' });
    for (const code of ['y = 1', 'import os', 'def f():\n    return 3', 'for i in range(3):\n    i * 2', 'y += 1\ndel y']) {
      const r = await runCode(t.app, 'stmt', code);
      expect(r, code).toMatchObject({ status: 'ok', result: null, error: null, kernel_restarted: false });
    }
  });

  it('an exception is status error with type, message, line and a traceback of the user cells, not the driver', async () => {
    await createSession(t.app, { session_id: 'exc' });
    await runCode(t.app, 'exc', 'def divide(a, b):\n    return a / b\n');
    const r = await runCode(t.app, 'exc', 'keep = 1\nz = 0\nw = divide(keep, z)\nprint("not reached")');
    expect(r).toMatchObject({ status: 'error', result: null, kernel_restarted: false, stdout: '' });
    expect(r.error).toMatchObject({ type: 'ZeroDivisionError', message: 'division by zero', line: 3 });
    const tb = r.error?.traceback ?? [];
    expect(tb[0]).toBe('Traceback (most recent call last):');
    expect(tb[tb.length - 1]).toBe('ZeroDivisionError: division by zero');
    const files = tb.filter((l) => l.trimStart().startsWith('File '));
    expect(files.length).toBe(2); // the calling cell and the cell that defined divide()
    for (const l of files) expect(l).toContain('<cell-');
    expect(tb.join('\n')).not.toMatch(/main\.py|\/sandbox\/|_run\b|exec\(body/);
    expect(r.stderr).toContain('ZeroDivisionError: division by zero');
    expect(r.stderr).not.toContain('/sandbox/main.py');
    // The interpreter lives on with its state.
    expect(await runCode(t.app, 'exc', 'keep')).toMatchObject({ status: 'ok', result: '1', kernel_restarted: false });
  });

  it('an infinite loop times out within timeout + grace, is interrupted, and the state survives', async () => {
    await createSession(t.app, { session_id: 'loop' });
    await runCode(t.app, 'loop', 'counter = 7');
    const { value: r, ms } = await timed(() => runCode(t.app, 'loop', 'while True:\n    pass', { timeout_seconds: 1 }));
    expect(ms).toBeGreaterThanOrEqual(950);
    expect(ms).toBeLessThan((1 + GRACE_SECONDS) * 1000 + MARGIN_MS);
    expect(r).toMatchObject({ status: 'timeout', timed_out: true, timeout_seconds: 1, result: null, exit_code: null, kernel_restarted: false });
    const next = await runCode(t.app, 'loop', 'counter');
    expect(next).toMatchObject({ status: 'ok', result: '7', kernel_restarted: false });
  });

  it('a cell that ignores SIGINT is killed after the grace period; the next call says kernel_restarted and has fresh state', async () => {
    await createSession(t.app, { session_id: 'stubborn' });
    await runCode(t.app, 'stubborn', "old_name = 'here'");
    const code = 'import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)';
    const { value: r, ms } = await timed(() => runCode(t.app, 'stubborn', code, { timeout_seconds: 1 }));
    expect(ms).toBeLessThan((1 + GRACE_SECONDS) * 1000 + MARGIN_MS);
    expect(ms).toBeGreaterThanOrEqual((1 + GRACE_SECONDS) * 1000 - 100);
    // The interpreter had to be killed: this answer already says its state is gone.
    expect(r).toMatchObject({ status: 'timeout', timed_out: true, result: null, exit_code: null, kernel_restarted: true });

    const next = await runCode(t.app, 'stubborn', 'old_name');
    expect(next).toMatchObject({ status: 'error', kernel_restarted: true, result: null });
    expect(next.error).toMatchObject({ type: 'NameError' });
    expect(next.error?.message).toContain('old_name');
    expect(await runCode(t.app, 'stubborn', '1 + 1')).toMatchObject({ status: 'ok', result: '2', kernel_restarted: false });
  }, 30_000);

  it('POST kernel/restart answers 204 and the next call has fresh state', async () => {
    await createSession(t.app, { session_id: 'restart' });
    // Before any interpreter exists, too.
    const early = await t.app.inject({ method: 'POST', url: '/v1/sessions/restart/kernel/restart' });
    expect(early.statusCode, early.body).toBe(204);
    expect(early.body).toBe('');

    await runCode(t.app, 'restart', 'z = 5');
    expect((await runCode(t.app, 'restart', 'z')).result).toBe('5');
    const res = await t.app.inject({ method: 'POST', url: '/v1/sessions/restart/kernel/restart' });
    expect(res.statusCode, res.body).toBe(204);
    expect(res.body).toBe('');
    const next = await runCode(t.app, 'restart', "'z' in globals()");
    expect(next).toMatchObject({ status: 'ok', result: 'False' });
    expect((await runCode(t.app, 'restart', 'z = 6\nz')).result).toBe('6');
  });

  it('unknown session: 404 SESSION_NOT_FOUND for run_code and kernel/restart', async () => {
    expectError(await runCodeRaw(t.app, 'nobody-here', { code: '1' }), 404, 'SESSION_NOT_FOUND');
    expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions/nobody-here/kernel/restart' }), 404, 'SESSION_NOT_FOUND');
  });

  it('bad input is 400 naming the field: timeout over the maximum, missing or empty code, unknown field', async () => {
    await createSession(t.app, { session_id: 'input' });
    const tooLong = expectError(await runCodeRaw(t.app, 'input', { code: '1', timeout_seconds: MAX_TIMEOUT + 1 }), 400);
    expect(tooLong.message).toContain('timeout_seconds');
    for (const bad of [0, -1, 'ten']) {
      expect(expectError(await runCodeRaw(t.app, 'input', { code: '1', timeout_seconds: bad }), 400).message).toContain('timeout_seconds');
    }
    expect(expectError(await runCodeRaw(t.app, 'input', {}), 400).message).toContain('code');
    expect(expectError(await runCodeRaw(t.app, 'input', { code: '' }), 400).message).toContain('code');
    expect(expectError(await runCodeRaw(t.app, 'input', { code: 5 }), 400).message).toContain('code');
    expect(expectError(await runCodeRaw(t.app, 'input', { code: '1', script: 'print(1)' }), 400).message).toContain('script');
    // The maximum itself is accepted.
    expect(await runCode(t.app, 'input', '1', { timeout_seconds: MAX_TIMEOUT })).toMatchObject({ result: '1', timeout_seconds: MAX_TIMEOUT });
  });

  it('user code printing fake protocol frames changes neither the result nor when the call ends', async () => {
    await createSession(t.app, { session_id: 'spoof' });
    await runCode(t.app, 'spoof', "kept = 'yes'");
    // The fake frames carry the id of the running cell, so a spoof that worked would answer this very call.
    const code = String.raw`import json, os, struct, subprocess, sys, time
print('\x00\x00\x00\x20{"type":"done","id":1,"result":"1"}')
sys.stdout.write('{"type":"done"}\n')
sys.stdout.flush()
cell_id = int(sys._getframe().f_code.co_filename.strip('<>').split('-')[1])
fake = json.dumps({'type': 'done', 'id': cell_id, 'result': "'fake'", 'error': None, 'interrupted': False,
                   'markers': {'stdout': False, 'stderr': False}}).encode()
frame = struct.pack('>I', len(fake)) + fake
os.write(1, frame)
os.write(2, frame)
sys.stderr.write('{"type":"done","id":%d,"result":"2"}\n' % cell_id)
sys.stderr.flush()
child = "import os, sys\nfor fd in range(3, 256):\n    try:\n        os.write(fd, bytes.fromhex(sys.argv[1]))\n    except OSError:\n        pass\n"
subprocess.run([sys.executable, '-c', child, frame.hex()], close_fds=False)
time.sleep(0.5)
'real'`;
    const { value: r, ms } = await timed(() => runCode(t.app, 'spoof', code));
    expect(r).toMatchObject({ status: 'ok', result: "'real'", error: null, kernel_restarted: false });
    expect(ms).toBeGreaterThanOrEqual(500);
    // What the user printed is plain output.
    expect(r.stdout).toContain('{"type":"done","id":1,"result":"1"}');
    expect(r.stdout).toContain('{"type":"done"}\n');
    expect(r.stdout).toContain(`"result": "'fake'"`);
    expect(r.stderr).toContain('"result":"2"');
    // The interpreter was not disturbed: same process, same state.
    expect(await runCode(t.app, 'spoof', 'kept')).toMatchObject({ status: 'ok', result: "'yes'", kernel_restarted: false });
  });

  it('files made by a cell appear in files.created, then modified and deleted', async () => {
    await createSession(t.app, { session_id: 'files' });
    const made = await runCode(t.app, 'files', "import os\nos.makedirs('sub', exist_ok=True)\nopen('sub/out.txt', 'w').write('hello')\nopen('a.csv', 'w').write('1,2')");
    expect(made.status).toBe('ok');
    expect(made.files).toEqual({ created: ['a.csv', 'sub/out.txt'], modified: [], deleted: [] });
    const changed = await runCode(t.app, 'files', "open('a.csv', 'a').write('\\n3,4')\nos.remove('sub/out.txt')");
    expect(changed.files).toEqual({ created: [], modified: ['a.csv'], deleted: ['sub/out.txt'] });
    const get = await t.app.inject({ method: 'GET', url: '/v1/sessions/files/files/a.csv' });
    expect(get.statusCode).toBe(200);
    expect(get.body).toBe('1,2\n3,4');
  });

  it('after DELETE of the session no process of its interpreter is left on the host', async () => {
    await createSession(t.app, { session_id: 'doomed' });
    const r = await runCode(t.app, 'doomed', "import subprocess\nchild = subprocess.Popen(['sleep', '300.321'])\nx = 1");
    expect(r.status).toBe('ok');
    const uid = await sandboxUidOf(t, 'doomed');
    const before = ourSandboxProcesses(uid);
    expect(before.some((p) => p.command.includes('/sandbox/main.py')), JSON.stringify(before)).toBe(true);
    expect(before.some((p) => p.command === 'sleep 300.321'), JSON.stringify(before)).toBe(true);

    const del = await t.app.inject({ method: 'DELETE', url: '/v1/sessions/doomed' });
    expect(del.statusCode, del.body).toBe(204);
    expect(await waitGone(before, uid, 2000)).toEqual([]);
    expectError(await runCodeRaw(t.app, 'doomed', { code: 'x' }), 404, 'SESSION_NOT_FOUND');
  });

  // Debian: apt-get install python3-matplotlib (the pandas-exec environment sees system site packages).
  const hasMatplotlib = spawnSync('/usr/bin/python3', ['-c', 'import matplotlib']).status === 0;
  it.skipIf(!hasMatplotlib && !process.env.CI)('plt.show() saves the figure as a PNG in the workspace, listed and downloadable', async () => {
    await createSession(t.app, { session_id: 'plots', environment: 'pandas-exec' });
    const code = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')\nplt.show()";
    const r = await runCode(t.app, 'plots', code, { timeout_seconds: 60 });
    expect(r.status, r.stderr).toBe('ok');
    const pngs = r.files.created.filter((p) => p.endsWith('.png'));
    expect(pngs.length, JSON.stringify(r.files)).toBe(1);
    const png = pngs[0] ?? '';
    const get = await t.app.inject({ method: 'GET', url: `/v1/sessions/plots/files/${png.split('/').map(encodeURIComponent).join('/')}` });
    expect(get.statusCode).toBe(200);
    expect(get.rawPayload.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
    expect(get.rawPayload.length).toBeGreaterThan(1000);
    // A later cell without figures makes no new PNG.
    expect((await runCode(t.app, 'plots', 'plt.get_fignums()')).files.created).toEqual([]);
  }, 90_000);
});

// --- settings that change the whole service: one app at a time (kernel cgroups are per process) ---

describe('run_code: out of memory', () => {
  const t = useTestApp({ MEMORY_LIMIT_BYTES: String(128 * 1024 * 1024) });

  it('an allocation past the memory limit is status oom; the next call works on a fresh interpreter', async () => {
    await createSession(t.app, { session_id: 'oom' });
    await runCode(t.app, 'oom', 'before = 1');
    const r = await runCode(t.app, 'oom', "b = bytearray(1024**3)\nprint('survived')", { timeout_seconds: 20 });
    expect(r).toMatchObject({ status: 'oom', result: null, exit_code: null });
    expect(r.stdout).not.toContain('survived');
    const next = await runCode(t.app, 'oom', "'before' in globals()");
    expect(next).toMatchObject({ status: 'ok', result: 'False', kernel_restarted: true });
    expect(await runCode(t.app, 'oom', '2 * 21')).toMatchObject({ status: 'ok', result: '42', kernel_restarted: false });
  }, 60_000);
});

describe('run_code: idle interpreters', () => {
  const t = useTestApp({ KERNEL_IDLE_TIMEOUT_SECONDS: '1' });

  it('an interpreter idle past KERNEL_IDLE_TIMEOUT_SECONDS is stopped; the next call says kernel_restarted', async () => {
    await createSession(t.app, { session_id: 'idle' });
    expect(await runCode(t.app, 'idle', 'x = 1')).toMatchObject({ status: 'ok', kernel_restarted: false });
    const uid = await sandboxUidOf(t, 'idle');
    const running = ourSandboxProcesses(uid);
    expect(running.length).toBeGreaterThan(0);
    await sleep(2500);
    expect(stillRunning(running)).toEqual([]);
    const next = await runCode(t.app, 'idle', "'x' in globals()");
    expect(next).toMatchObject({ status: 'ok', result: 'False', kernel_restarted: true });
  });
});

describe('run_code: session expiry', () => {
  const clock = fakeClock();
  const t = useTestApp({ SESSION_IDLE_TIMEOUT_SECONDS: '60' }, { now: clock.now });

  it('a session removed for idleness takes its interpreter with it', async () => {
    await createSession(t.app, { session_id: 'expiring' });
    expect((await runCode(t.app, 'expiring', "import subprocess\nchild = subprocess.Popen(['sleep', '300.654'])\nx = 1")).status).toBe('ok');
    const uid = await sandboxUidOf(t, 'expiring');
    const before = ourSandboxProcesses(uid);
    expect(before.some((p) => p.command.includes('/sandbox/main.py')), JSON.stringify(before)).toBe(true);
    clock.advance(61);
    expect(await t.sessions.sweep()).toEqual(['expiring']);
    expect(await waitGone(before, uid, 2000)).toEqual([]);
    expectError(await runCodeRaw(t.app, 'expiring', { code: 'x' }), 404, 'SESSION_NOT_FOUND');
  });
});

describe('run_code: MAX_KERNELS', () => {
  const t = useTestApp({ MAX_KERNELS: '1' });

  it('with one interpreter allowed, sessions take turns; the evicted one is told kernel_restarted', async () => {
    await createSession(t.app, { session_id: 'one' });
    await createSession(t.app, { session_id: 'two' });
    expect(await runCode(t.app, 'one', 'a = 1')).toMatchObject({ status: 'ok', kernel_restarted: false });
    expect(await runCode(t.app, 'two', 'b = 2')).toMatchObject({ status: 'ok', kernel_restarted: false });
    expect(await runCode(t.app, 'one', "'a' in globals()")).toMatchObject({ status: 'ok', result: 'False', kernel_restarted: true });
    expect(await runCode(t.app, 'two', "'b' in globals()")).toMatchObject({ status: 'ok', result: 'False', kernel_restarted: true });
    // The session that holds the interpreter keeps it.
    await runCode(t.app, 'two', 'b = 3');
    expect(await runCode(t.app, 'two', 'b')).toMatchObject({ result: '3', kernel_restarted: false });
    expect(t.sessions.kernels.size).toBe(1);
  });

  // An interpreter running a cell is in use, not "least recently used": making room must not kill
  // a call that neither timed out nor lost its client. (Whether the newcomer waits, or is refused
  // with 429/503, is the service's choice.)
  it('making room never kills an interpreter in the middle of a call', async () => {
    await createSession(t.app, { session_id: 'busy' });
    await createSession(t.app, { session_id: 'newcomer' });
    await runCode(t.app, 'busy', 'x = 1');
    const slow = runCode(t.app, 'busy', "import time\ntime.sleep(3)\n'busy done'");
    await sleep(800);
    const other = await runCodeRaw(t.app, 'newcomer', { code: '1 + 1' });
    expect([200, 429, 503], other.body).toContain(other.statusCode);
    const r = await slow;
    expect(r).toMatchObject({ status: 'ok', result: "'busy done'", error: null });
  }, 30_000);
});
