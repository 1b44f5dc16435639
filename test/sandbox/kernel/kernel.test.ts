// A persistent interpreter through the real sandbox: state, output, errors, protocol isolation,
// streaming, figures, and latency.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Environment } from '../../../src/sandbox/environments.js';
import type { KernelRunOptions, PythonKernel } from '../../../src/sandbox/kernel/kernel.js';
import { createKernelFixture, type KernelFixture } from './helpers.js';

let f: KernelFixture;
let bare: Environment;
let k: PythonKernel;
const opts: KernelRunOptions = { timeoutMs: 10_000, maxOutputChars: 100_000 };

beforeAll(async () => {
  f = await createKernelFixture();
  bare = await f.environment('bare');
  k = f.kernel({ environment: bare });
});
afterAll(async () => {
  await f.dispose();
});

describe('state', () => {
  test('names defined in one call are there in the next', async () => {
    const a = await k.run('x = 41', opts);
    expect(a).toMatchObject({ status: 'ok', exit_code: 0, result: null, kernel_restarted: false, error: null });
    const b = await k.run('x + 1', opts);
    expect(b).toMatchObject({ status: 'ok', result: '42', kernel_restarted: false });
  });

  test('imports, functions, classes and open files persist; __main__ is the user namespace', async () => {
    await k.run("import json\nfh = open('notes.txt', 'w')\nclass Point:\n    def __init__(self, x): self.x = x\n", opts);
    const r = await k.run("fh.write(json.dumps({'a': 1}))\nfh.close()\nimport pickle\npickle.loads(pickle.dumps(Point(3))).x", opts);
    expect(r).toMatchObject({ status: 'ok', result: '3' });
    expect(fs.readFileSync(path.join(f.workspaceOf(k), 'notes.txt'), 'utf8')).toBe('{"a": 1}');
    expect((await k.run('__name__', opts)).result).toBe("'__main__'");
  });

  test('result is the repr of a final expression, null for statements and None', async () => {
    expect((await k.run("'a' * 3", opts)).result).toBe("'aaa'");
    expect((await k.run('y = 5', opts)).result).toBeNull();
    expect((await k.run('for i in range(2):\n    pass', opts)).result).toBeNull();
    expect((await k.run('None', opts)).result).toBeNull();
    expect((await k.run('print("p")', opts))).toMatchObject({ result: null, stdout: 'p\n' });
    expect((await k.run('[1, 2]\n_', opts)).result).toBe("'aaa'");
  });

  test('a long result is clipped to max_output_chars', async () => {
    const r = await k.run("'z' * 5000", { ...opts, maxOutputChars: 200 });
    expect(r.result?.length).toBeLessThan(300);
    expect(r.result).toContain('characters omitted');
  });
});

describe('output', () => {
  test('output is captured per call and does not leak into the next one', async () => {
    const a = await k.run("import sys\nprint('one')\nprint('err-one', file=sys.stderr)", opts);
    expect(a).toMatchObject({ stdout: 'one\n', stderr: 'err-one\n' });
    const b = await k.run("print('two')", opts);
    expect(b).toMatchObject({ stdout: 'two\n', stderr: '' });
  });

  test('os.write to fd 1 and a subprocess both land in stdout', async () => {
    const r = await k.run("import os, subprocess\nos.write(1, b'raw\\n')\nsubprocess.run(['echo', 'from-child'])\nos.system('echo from-shell >&2')", opts);
    expect(r.stdout).toBe('raw\nfrom-child\n');
    expect(r.stderr).toBe('from-shell\n');
  });

  test('text that looks like a frame or a marker neither changes the result nor ends the call early', async () => {
    const code = [
      'import os, sys, time',
      "print('\\x00\\x00\\x00\\x10{\"type\":\"done\"}')",
      "sys.stderr.write('\\x00\\x00\\x00\\x2a{\"type\":\"done\",\"id\":1,\"result\":\"666\"}')",
      "os.write(1, b'\\x1e\\x1fbubble-kernel-end:' + os.urandom(16).hex().encode() + b'\\x1f\\x1e')",
      'time.sleep(0.4)',
      "print('after')",
      '6 * 7',
    ].join('\n');
    const started = Date.now();
    const r = await k.run(code, opts);
    expect(Date.now() - started).toBeGreaterThanOrEqual(400);
    expect(r).toMatchObject({ status: 'ok', result: '42' });
    expect(r.stdout).toContain('{"type":"done"}');
    expect(r.stdout).toContain('bubble-kernel-end:');
    expect(r.stdout.endsWith('after\n')).toBe(true);
    expect(r.stderr).toContain('"result":"666"');
    expect((await k.run("print('next')", opts)).stdout).toBe('next\n');
  });

  test("the interpreter's bwrap (pid 1 inside) carries no environment of the service", async () => {
    const r = await k.run("open('/proc/1/environ', 'rb').read()", opts);
    expect(r).toMatchObject({ status: 'ok', result: "b''" });
  });

  test('the control and request descriptors are not inherited by child processes', async () => {
    const r = await k.run("import subprocess\nsubprocess.run(['/bin/sh', '-c', 'ls /proc/$$/fd'], close_fds=False, capture_output=True, text=True).stdout.split()", opts);
    expect(r.result).toBe("['0', '1', '2']");
  });

  test('input() fails with a clear message, stdin reads nothing', async () => {
    const r = await k.run("name = input('name? ')", opts);
    expect(r.status).toBe('error');
    expect(r.error).toMatchObject({ type: 'EOFError', line: 1 });
    expect(r.error?.message).toContain('no interactive stdin');
    expect((await k.run('import sys\nsys.stdin.read()', opts)).result).toBe("''");
  });

  test('onOutput streams the first line well before the call ends', async () => {
    const seen: { stream: string; text: string; at: number }[] = [];
    const started = performance.now();
    const r = await k.run("import time\nprint('a')\ntime.sleep(1)\nprint('b')", {
      ...opts,
      onOutput: (stream, text) => seen.push({ stream, text, at: performance.now() - started }),
    });
    const finished = performance.now() - started;
    expect(r.stdout).toBe('a\nb\n');
    expect(seen.map((s) => s.text).join('')).toBe('a\nb\n');
    const first = seen.find((s) => s.text.includes('a'));
    expect(first?.stream).toBe('stdout');
    expect(first?.at).toBeLessThan(finished - 700);
  });
});

describe('errors', () => {
  test('an exception is an error with its type, the line in the cell and a traceback without driver frames', async () => {
    const r = await k.run('a = 1\nb = 0\na / b\nprint("never")', opts);
    expect(r).toMatchObject({ status: 'error', exit_code: 1, signal: null, result: null, stdout: '' });
    expect(r.error).toMatchObject({ type: 'ZeroDivisionError', message: 'division by zero', line: 3 });
    expect(r.error?.hint).toContain('line 3');
    expect(r.error?.traceback[0]).toBe('Traceback (most recent call last):');
    expect(r.error?.traceback.at(-1)).toBe('ZeroDivisionError: division by zero');
    expect(r.error?.traceback.join('\n')).toMatch(/File "<cell-\d+>", line 3, in <module>/);
    expect(r.error?.traceback.join('\n')).not.toContain('/sandbox/main.py');
    expect(r.stderr).toBe(`${r.error?.traceback.join('\n')}\n`);
  });

  test('an error in a function from an earlier cell points at the calling line, both cells in the traceback', async () => {
    await k.run('def broken(d):\n    return d["missing"]', opts);
    const r = await k.run('x = 1\n\nbroken({})', opts);
    expect(r.error).toMatchObject({ type: 'KeyError', message: "'missing'", line: 3 });
    const tb = r.error?.traceback.join('\n') ?? '';
    expect(tb).toMatch(/<cell-\d+>", line 3, in <module>[\s\S]*<cell-\d+>", line 2, in broken\n\s+return d\["missing"\]/);
  });

  test('a syntax error reports its line and leaves the state alone', async () => {
    await k.run('kept = 1', opts);
    const r = await k.run('kept = 2\nif True\n    pass', opts);
    expect(r.error).toMatchObject({ type: 'SyntaxError', line: 2 });
    expect((await k.run('kept', opts)).result).toBe('1');
  });

  test('SystemExit is reported as an error and the interpreter lives on', async () => {
    const r = await k.run('import sys\nsys.exit(3)', opts);
    expect(r.error).toMatchObject({ type: 'SystemExit', message: '3' });
    expect(await k.run('kept', opts)).toMatchObject({ result: '1', kernel_restarted: false });
  });
});

describe('resources', () => {
  test('cpu_ms is what the call used; memory_peak_bytes is the kernel high-water mark', async () => {
    const busy = await k.run('import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end:\n    pass', opts);
    expect(busy.resources.cpu_ms).toBeGreaterThanOrEqual(300);
    const idle = await k.run('1', opts);
    expect(idle.resources.cpu_ms).toBeLessThan(100);
    expect(idle.resources.memory_peak_bytes).toBeGreaterThan(1024 * 1024);
  });
});

describe('the end of a cell', () => {
  test('onCellEnd comes once, before the call resolves, when what the cell wrote is already there', async () => {
    const file = path.join(f.workspaceOf(k), 'end-of-cell.txt');
    const seen: string[] = [];
    const r = await k.run("import time\nopen('end-of-cell.txt', 'w').write('x' * 1000)\ntime.sleep(0.05)\n'done'", {
      ...opts,
      onCellEnd: () => seen.push(fs.existsSync(file) ? `file of ${fs.statSync(file).size} bytes` : 'no file yet'),
    });
    seen.push(`resolved ${r.status}`);
    expect(seen).toEqual(['file of 1000 bytes', 'resolved ok']);
    expect(r.result).toBe("'done'");
  });
});

describe('matplotlib', () => {
  test('open figures are saved as PNG in the workspace; plt.show() saves too; matplotlib is never imported unasked', async () => {
    const ws = f.kernel({ environment: await f.environment('pandas-exec') });
    const notLoaded = await ws.run("import sys\n'matplotlib' in sys.modules", opts);
    expect(notLoaded.result).toBe('False');
    const r = await ws.run([
      'import matplotlib.pyplot as plt',
      'plt.plot([1, 2, 3], [1, 4, 9])',
      'plt.show()',
      'plt.figure()',
      'plt.bar([1, 2], [3, 4])',
      'len(plt.get_fignums())',
    ].join('\n'), { ...opts, timeoutMs: 60_000 });
    expect(r).toMatchObject({ status: 'ok', stderr: '', result: '1' });
    const dir = f.workspaceOf(ws);
    const pngs = fs.readdirSync(dir).filter((n) => n.endsWith('.png')).sort();
    expect(pngs).toEqual(['figure-2-1.png', 'figure-2-2.png']);
    for (const name of pngs) expect(fs.readFileSync(path.join(dir, name)).subarray(1, 4).toString()).toBe('PNG');
    const after = await ws.run('import matplotlib.pyplot as plt\nlen(plt.get_fignums())', opts);
    expect(after.result).toBe('0');
  }, 90_000);
});
