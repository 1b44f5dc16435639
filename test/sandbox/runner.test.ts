// Execution behaviour against real bwrap: results, timeouts, output caps, stdin, exit codes.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { hostProcessesMatching } from '../helpers/host-processes.js';
import { createSandboxFixture, type SandboxFixture } from '../helpers/sandbox.js';

let f: SandboxFixture;
beforeAll(() => {
  f = createSandboxFixture();
});
afterAll(() => f.dispose());

const sh = (command: string) => ({ program: { kind: 'command' as const, command } });

describe('results', () => {
  test('exit code 0 is ok, non-zero is error with the code', async () => {
    expect(await f.run(sh('echo hi'))).toMatchObject({ status: 'ok', exit_code: 0, signal: null, stdout: 'hi\n', stderr: '' });
    expect(await f.run(sh('echo oops >&2; exit 3'))).toMatchObject({ status: 'error', exit_code: 3, signal: null, stderr: 'oops\n' });
  });

  test('a process ended by a signal reports the signal and no exit code', async () => {
    const r = await f.run(sh('kill -TERM $$'));
    expect(r).toMatchObject({ status: 'killed', exit_code: null, signal: 'SIGTERM', timed_out: false });
  });

  test('argv runs without a shell', async () => {
    const r = await f.run({ program: { kind: 'argv', argv: ['/bin/echo', '$HOME', '*'] } });
    expect(r.stdout).toBe('$HOME *\n');
  });

  test('stdin is fed and closed', async () => {
    const r = await f.run({ ...sh('cat; echo end'), stdin: 'line one\nline two\n' });
    expect(r.stdout).toBe('line one\nline two\nend\n');
    const noStdin = await f.run(sh('cat; echo eof'));
    expect(noStdin.stdout).toBe('eof\n');
  });

  test('invalid UTF-8 is replaced, not dropped', async () => {
    const r = await f.run(sh("printf 'a\\377b'"));
    expect(r.stdout).toBe('a\uFFFDb');
  });

  test('a Python exception becomes a structured error pointing at the user line', async () => {
    const r = await f.run({ program: { kind: 'script', source: 'import json\n\ndef f(d):\n    return d["missing"]\n\nf({})\n' } });
    expect(r.status).toBe('error');
    expect(r.error).toMatchObject({ type: 'KeyError', message: "'missing'", line: 4 });
    expect(r.error?.hint).toContain('key');
    const syntax = await f.run({ program: { kind: 'script', source: 'x = (1,\nprint(x)\n' } });
    expect(syntax.error).toMatchObject({ type: 'SyntaxError', line: 1 });
  });

  test('the script is not placed in the workspace', async () => {
    const r = await f.run({ program: { kind: 'script', source: 'import os\nprint(sorted(os.listdir(".")))\nprint(__file__)' } });
    expect(r.stdout).not.toContain('main.py\']');
    expect(r.stdout).toContain('/sandbox/main.py');
    expect(fs.readdirSync(f.workspace).filter((n) => n.endsWith('.py'))).toEqual([]);
  });
});

describe('timeouts', () => {
  test('a timeout kills background and setsid children and keeps the output so far', async () => {
    const marker = '31.4159';
    const started = Date.now();
    const r = await f.run({ ...sh(`echo before; sleep ${marker} & setsid sleep ${marker} & nohup sleep ${marker} >/dev/null 2>&1 & sleep ${marker}`), timeoutMs: 1500 });
    expect(Date.now() - started).toBeLessThan(5000);
    expect(r).toMatchObject({ status: 'timeout', timed_out: true, exit_code: null, signal: 'SIGKILL', stdout: 'before\n' });
    expect(r.timeout_seconds).toBe(1.5);
    // Checked from the host: nothing the execution started is left.
    expect(hostProcessesMatching(`sleep\0${marker}`)).toEqual([]);
  });

  test('an aborted execution (client gone) is killed', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 300);
    const r = await f.run({ ...sh('sleep 20'), signal: ac.signal, timeoutMs: 10_000 });
    expect(r.status).toBe('killed');
    expect(r.duration_ms).toBeLessThan(5000);
  });
});

describe('output caps', () => {
  test('100 MB of output keeps head and tail, and memory stays flat', async () => {
    global.gc?.();
    const before = process.memoryUsage().rss;
    let peak = before;
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss);
    }, 5);
    const r = await f.run({
      program: { kind: 'script', source: "import sys\nsys.stdout.write('H' * 1000)\nfor _ in range(100):\n    sys.stdout.write('x' * 1_000_000)\nsys.stdout.write('T' * 1000)\n" },
      maxOutputChars: 10_000,
      timeoutMs: 30_000,
    });
    clearInterval(sampler);
    expect(r.status).toBe('ok');
    expect(r.truncated).toBe(true);
    expect(r.stdout.startsWith('H'.repeat(1000))).toBe(true);
    expect(r.stdout.endsWith('T'.repeat(1000))).toBe(true);
    expect(r.stdout).toContain(`\n[... ${100_002_000 - 10_000} characters omitted ...]\n`);
    expect(r.stdout.length).toBeLessThan(10_100);
    // 100 MB went through; the process grew by far less than that.
    expect(peak - before).toBeLessThan(60 * 1024 * 1024);
  }, 60_000);

  test('output under the cap is returned whole', async () => {
    const r = await f.run({ ...sh('seq 1 1000'), maxOutputChars: 100_000 });
    expect(r.truncated).toBe(false);
    expect(r.stdout.split('\n').length).toBe(1001);
  });
});
