// The two readers of an environment's pyproject.toml agree: parseProjectTable (the service and the
// CLI) and scripts/read-pyproject.mjs (scripts/build-environments.sh, which runs before the
// TypeScript is built). A venv built from other dependencies than the ones listed would be a
// silent lie.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { parseProjectTable } from '../../src/sandbox/environments.js';
import { makeTempDir, PROJECT_ROOT, removeTempDir } from '../helpers/host-env.js';

const READER = path.join(PROJECT_ROOT, 'scripts', 'read-pyproject.mjs');
const BUILD = path.join(PROJECT_ROOT, 'scripts', 'build-environments.sh');
const dir = makeTempDir('bs-pyproject-');
afterAll(() => removeTempDir(dir));

function writeFixture(name: string, toml: string): string {
  fs.mkdirSync(path.join(dir, name), { recursive: true });
  const file = path.join(dir, name, 'pyproject.toml');
  fs.writeFileSync(file, toml);
  return file;
}

function scriptList(file: string, list: 'dependencies' | 'debian-packages') {
  const r = spawnSync(process.execPath, [READER, file, list], { encoding: 'utf8' });
  return { code: r.status, lines: r.stdout.split('\n').filter((l) => l.length > 0), stderr: r.stderr };
}

const FIXTURES: Record<string, string> = {
  'one-line': '[project]\nname = "a"\ndependencies = ["pandas", "matplotlib"]\n[tool.bubble-sandbox]\ndebian-packages = ["python3-pandas"]\n',
  'multi-line': [
    '[project]',
    'name = "b"',
    'dependencies = [',
    '  "pandas[excel]>=2",  # extras',
    "  'numpy>=1.26,<3',",
    '  # comment',
    '  "tomli; python_version < \'3.11\'",',
    '  """scipy""",',
    ']',
    '[project.optional-dependencies]',
    'dev = ["pytest"]',
    '[tool.bubble-sandbox]',
    "debian-packages = [ # what Debian calls them",
    '  "python3-pandas",',
    "  'python3-numpy',",
    ']',
  ].join('\n'),
  'none': '[project]\nname = "c"\n',
  'dotted-keys': 'project.name = "d"\nproject.dependencies = ["x[y]==1"]\ntool.bubble-sandbox.debian-packages = ["python3-x"]\n',
};

describe('scripts/read-pyproject.mjs reads what parseProjectTable reads', () => {
  test.each(Object.keys(FIXTURES))('%s', (name) => {
    const file = writeFixture(name, FIXTURES[name] ?? '');
    const expected = parseProjectTable(FIXTURES[name] ?? '');
    const deps = scriptList(file, 'dependencies');
    const debs = scriptList(file, 'debian-packages');
    expect(deps).toEqual({ code: 0, lines: expected.dependencies, stderr: '' });
    expect(debs).toEqual({ code: 0, lines: expected.debianPackages, stderr: '' });
  });

  test('the multi-line fixture loses no dependency', () => {
    expect(parseProjectTable(FIXTURES['multi-line'] ?? '').dependencies).toEqual(['pandas[excel]>=2', 'numpy>=1.26,<3', "tomli; python_version < '3.11'", 'scipy']);
  });

  test.each([
    ['unclosed-list', '[project]\ndependencies = ["pandas",\n'],
    ['wrong-type', '[project]\ndependencies = "pandas"\n'],
  ])('a malformed file (%s) is the same one-line error naming the file', (name, toml) => {
    const file = writeFixture(name, toml);
    const r = scriptList(file, 'dependencies');
    expect(r.code).toBe(1);
    expect(r.lines).toEqual([]);
    let message = '';
    try {
      parseProjectTable(toml, file);
    } catch (err) {
      message = err instanceof Error ? err.message : '';
    }
    expect(message).toContain(file);
    expect(r.stderr).toBe(`error: ${message}\n`);
  });
});

test('build-environments.sh stops at a malformed pyproject.toml, naming it, and builds nothing', () => {
  const envs = makeTempDir('bs-build-envs-');
  try {
    fs.mkdirSync(path.join(envs, 'broken'));
    const file = path.join(envs, 'broken', 'pyproject.toml');
    fs.writeFileSync(file, '[project]\nname = "broken"\ndependencies = [\n  "pandas[excel]>=2"\n  "numpy",\n]\n');
    const r = spawnSync('bash', [BUILD], { encoding: 'utf8', env: { ...process.env, BUBBLE_SANDBOX_ENVIRONMENTS_DIR: envs }, timeout: 30_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`${file}: not valid TOML at line 5`);
    expect(fs.existsSync(path.join(envs, 'broken', '.venv'))).toBe(false);
  } finally {
    removeTempDir(envs);
  }
});
