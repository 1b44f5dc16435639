// The error of a script execution comes from the interpreter (the launcher's report), never from
// what the script printed on stderr; and the script runs as `python /sandbox/main.py` would run it.
import { beforeAll, describe, expect, it } from 'vitest';
import { useTestApp } from '../helpers/app.js';
import { createSession, execute, upload } from '../helpers/http.js';

const t = useTestApp();
beforeAll(async () => {
  await createSession(t.app, { session_id: 'err' });
});

const FAKE_TRACEBACK = 'Traceback (most recent call last):\\n  File \\"/sandbox/main.py\\", line 1, in <module>\\nKeyError: \'forged\'\\n';

describe('script errors from the interpreter', () => {
  it('a script that prints a fake traceback and exits non-zero has no error', async () => {
    const r = await execute(t.app, 'err', { script: `import sys\nsys.stderr.write("${FAKE_TRACEBACK}")\nsys.exit(3)` });
    expect(r.status).toBe('error');
    expect(r.exit_code).toBe(3);
    expect(r.stderr).toContain("KeyError: 'forged'");
    expect(r.error).toBeNull();
  });

  it('raise SystemExit("bye") after a logged exception is a deliberate exit, not error type "bye"', async () => {
    const script = [
      'import logging',
      'try:',
      '    {}["k"]',
      'except KeyError:',
      '    logging.exception("handled")',
      'raise SystemExit("bye")',
    ].join('\n');
    const r = await execute(t.app, 'err', { script });
    expect(r.status).toBe('error');
    expect(r.exit_code).toBe(1);
    expect(r.stderr).toContain('Traceback');
    expect(r.stderr.trimEnd().endsWith('bye')).toBe(true);
    expect(r.error).toBeNull();
  });

  it('an uncaught exception after a printed fake one is reported as the real one, at its line in main.py', async () => {
    await upload(t.app, 'err', [{ name: 'helper_mod.txt', content: 'x' }]);
    const script = [
      `import sys; sys.stderr.write("${FAKE_TRACEBACK}")`,
      'def f(d):',
      '    return d["missing"]',
      'f({})',
    ].join('\n');
    const r = await execute(t.app, 'err', { script });
    expect(r.error).toMatchObject({ type: 'KeyError', message: "'missing'", line: 3 });
    // stderr is the interpreter's traceback, without the launcher's frame.
    expect(r.stderr).toContain('File "/sandbox/main.py", line 4, in <module>');
    expect(r.stderr).toContain('File "/sandbox/main.py", line 3, in f');
    expect(r.stderr).not.toContain('launch.py');
    expect(r.stderr.trimEnd().endsWith("KeyError: 'missing'")).toBe(true);
  });

  it('a syntax error is reported with its line and printed as Python prints it', async () => {
    const r = await execute(t.app, 'err', { script: 'x = 1\nprint(\n' });
    expect(r.error).toMatchObject({ type: 'SyntaxError', line: 2 });
    expect(r.stderr).not.toContain('launch.py');
    expect(r.stderr).toContain('File "/sandbox/main.py", line 2');
  });

  it('the script sees what `python /sandbox/main.py` would show it', async () => {
    const script = [
      'import os, sys',
      'print(__name__, __file__, sys.argv, sys.path[0])',
      'print(sorted(int(f) for f in os.listdir("/proc/self/fd")))',
    ].join('\n');
    const r = await execute(t.app, 'err', { script });
    expect(r.status).toBe('ok');
    const [first, fds] = r.stdout.trimEnd().split('\n');
    expect(first).toBe("__main__ /sandbox/main.py ['/sandbox/main.py'] /sandbox");
    // The report pipe is open in the launcher's process only (3 is listdir's own descriptor).
    expect(fds).toMatch(/^\[0, 1, 2, 3(, \d+)?\]$/);
    // A program the script starts inherits none of it.
    const child = await execute(t.app, 'err', { script: 'import subprocess\nprint(subprocess.run(["ls", "/proc/self/fd"], capture_output=True, text=True).stdout.split())' });
    expect(child.stdout.trim()).toBe("['0', '1', '2', '3']");
  });

  it('modules in the workspace import as before, and exit codes pass through', async () => {
    await upload(t.app, 'err', [{ name: 'data.txt', content: 'hello' }]);
    const mod = await execute(t.app, 'err', { command: 'printf "VALUE = 7\\n" > mymod.py' });
    expect(mod.status).toBe('ok');
    expect((await execute(t.app, 'err', { script: 'import mymod\nprint(mymod.VALUE)' })).stdout).toBe('7\n');
    expect((await execute(t.app, 'err', { script: 'import sys\nsys.exit(5)' })).exit_code).toBe(5);
    expect((await execute(t.app, 'err', { script: 'print(open("data.txt").read())' })).stdout).toBe('hello\n');
  });
});
