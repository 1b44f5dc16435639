// The Python the service runs (the kernel driver in sandboxes, the change watcher beside the
// service) lives in .py files that Python tools check, and the build ships them with the code.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { expect, test } from 'vitest';
import { PROJECT_ROOT } from '../helpers/host-env.js';

const SHIPPED = ['sandbox/kernel/driver.py', 'workspace/change-watcher.py'];

test('the shipped Python files exist in src and, after the build, beside the compiled modules in dist', () => {
  for (const rel of SHIPPED) {
    const src = path.join(PROJECT_ROOT, 'src', rel);
    expect(fs.existsSync(src), src).toBe(true);
    expect(fs.readFileSync(path.join(PROJECT_ROOT, 'dist', rel), 'utf8')).toBe(fs.readFileSync(src, 'utf8'));
  }
});

test('no TypeScript file carries a Python program in a string', () => {
  const offenders = fs.readdirSync(path.join(PROJECT_ROOT, 'src'), { recursive: true })
    .map(String).filter((f) => f.endsWith('.ts'))
    .filter((f) => /String\.raw`\s*\n\s*(import|from) \w+/.test(fs.readFileSync(path.join(PROJECT_ROOT, 'src', f), 'utf8')));
  expect(offenders).toEqual([]);
});

test('the Python check passes on the project and fails on a file that does not parse', () => {
  const ok = spawnSync('bash', ['scripts/check-python.sh'], { cwd: PROJECT_ROOT, encoding: 'utf8' });
  expect(ok.stderr).not.toContain(': invalid syntax');
  expect(ok.status).toBe(0);
  expect(Number(/check-python: (\d+) files/.exec(ok.stdout)?.[1])).toBeGreaterThanOrEqual(SHIPPED.length);

  const broken = path.join(PROJECT_ROOT, 'test', 'fixtures', `broken-${process.pid}.py`);
  fs.writeFileSync(broken, 'def f(:\n');
  try {
    const bad = spawnSync('bash', ['scripts/check-python.sh'], { cwd: PROJECT_ROOT, encoding: 'utf8' });
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toContain(`broken-${process.pid}.py`);
  } finally {
    fs.rmSync(broken);
  }
});
