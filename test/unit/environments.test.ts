import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { discoverEnvironments, findEnvironment, parseProjectTable, PyprojectError } from '../../src/sandbox/environments.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bs-envs-'));
fs.chmodSync(dir, 0o711); // the sandbox user must be able to reach the venvs
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function env(name: string, toml: string | null, python: string | null) {
  fs.mkdirSync(path.join(dir, name, '.venv', 'bin'), { recursive: true });
  if (toml !== null) fs.writeFileSync(path.join(dir, name, 'pyproject.toml'), toml);
  if (python !== null) fs.symlinkSync(python, path.join(dir, name, '.venv', 'bin', 'python'));
}

describe('environments', () => {
  test('parses the [project] table', () => {
    expect(parseProjectTable('[project]\nname = "x"\ndescription = "Some \\"thing\\""\ndependencies = [\n  "pandas>=2",\n  \'numpy\',\n]\n[tool.x]\ndescription = "no"\n')).toEqual({
      name: 'x', description: 'Some "thing"', dependencies: ['pandas>=2', 'numpy'], debianPackages: [], preload: [],
    });
  });

  test('a dependencies list across lines keeps every entry: extras, markers, comments, single quotes', () => {
    const toml = [
      '[project]',
      'name = "multi"',
      `description = 'Data [tools] = "quoted"'`,
      'dependencies = [',
      '  "pandas[excel]>=2",   # extras: the old reader stopped at this ]',
      `  'tomli>=1.1; python_version < "3.11"',`,
      '  # a comment line, then a trailing comma',
      '  "requests [socks] ==2.*",',
      ']',
      '',
      '[tool.bubble-sandbox]',
      'debian-packages = [',
      '  "python3-pandas",  # provides pandas',
      "  'python3-requests',",
      ']',
    ].join('\n');
    expect(parseProjectTable(toml)).toEqual({
      name: 'multi',
      description: 'Data [tools] = "quoted"',
      dependencies: ['pandas[excel]>=2', 'tomli>=1.1; python_version < "3.11"', 'requests [socks] ==2.*'],
      debianPackages: ['python3-pandas', 'python3-requests'],
      preload: [],
    });
  });

  test('[tool.bubble-sandbox] preload lists module names for warm sandboxes; anything else is an error', () => {
    expect(parseProjectTable('[tool.bubble-sandbox]\npreload = ["pandas", "matplotlib.pyplot", " numpy "]\n').preload).toEqual(['pandas', 'matplotlib.pyplot', 'numpy']);
    expect(() => parseProjectTable('[tool.bubble-sandbox]\npreload = ["a,b"]\n', 'my/pyproject.toml')).toThrow(/my\/pyproject\.toml: tool\.bubble-sandbox\.preload must list module names/);
    expect(() => parseProjectTable('[tool.bubble-sandbox]\npreload = "pandas"\n')).toThrow(PyprojectError);
  });

  test('a table like [project.urls] after [project] does not end the project table', () => {
    const toml = '[project]\nname = "x"\n[project.urls]\nhome = "https://example.org"\n[project.optional-dependencies]\ndev = ["pytest"]\n';
    expect(parseProjectTable(toml)).toMatchObject({ name: 'x', dependencies: [] });
    expect(parseProjectTable('project.dependencies = ["a", "b"]\n').dependencies).toEqual(['a', 'b']);
  });

  test.each([
    ['[project]\ndependencies = ["a",\n  "b" "c"]\n', /my\/pyproject\.toml: not valid TOML at line 3, column \d+/],
    ['[project\n', /my\/pyproject\.toml: not valid TOML at line 1/],
    ['[project]\ndependencies = "pandas"\n', /my\/pyproject\.toml: project\.dependencies must be a list of strings/],
    ['[project]\ndependencies = ["a", 1]\n', /project\.dependencies must be a list of strings/],
    ['[tool]\nbubble-sandbox = 3\n', /my\/pyproject\.toml: tool\.bubble-sandbox must be a table/],
  ])('a malformed file is an error naming it: %j', (toml, message) => {
    expect(() => parseProjectTable(toml, 'my/pyproject.toml')).toThrow(PyprojectError);
    expect(() => parseProjectTable(toml, 'my/pyproject.toml')).toThrow(message);
  });

  test('discovery sorts by name and reports unusable environments with a reason and no host path', async () => {
    env('zeta', '[project]\ndescription = "Z"\ndependencies = []\n', '/usr/bin/python3');
    env('alpha', '[project]\ndescription = "A"\ndependencies = ["requests"]\n', '/usr/bin/python3');
    env('broken', '[project]\ndescription = "B"\n', null);
    const outside = path.join(dir, 'python-outside-usr');
    fs.writeFileSync(outside, '#!/bin/sh\n', { mode: 0o755 });
    env('foreign', '[project]\ndescription = "F"\n', outside);
    env('notoml', null, '/usr/bin/python3');
    env('malformed', '[project]\ndependencies = ["pandas",\n', '/usr/bin/python3');
    fs.mkdirSync(path.join(dir, 'bad name!'));
    const envs = await discoverEnvironments(dir);
    expect(envs.map((e) => e.name)).toEqual(['alpha', 'broken', 'foreign', 'malformed', 'notoml', 'zeta']);
    expect(envs.find((e) => e.name === 'malformed')?.reason).toMatch(/^pyproject\.toml: not valid TOML at line 3/);
    expect(envs.find((e) => e.name === 'alpha')).toMatchObject({ usable: true, description: 'A', dependencies: ['requests'] });
    for (const name of ['broken', 'foreign', 'malformed', 'notoml']) {
      const e = envs.find((x) => x.name === name);
      expect(e?.usable).toBe(false);
      expect(e?.reason).toBeTruthy();
      expect(e?.reason).not.toContain(dir);
    }
  });

  test('names outside [A-Za-z0-9_-] are never looked up', async () => {
    expect(await findEnvironment(dir, '../etc')).toBeNull();
    expect(await findEnvironment(dir, 'missing')).toBeNull();
  });
});

// Root only: without root the sandboxes run as the service's own user, whose owner permissions apply.
test.skipIf(process.getuid?.() !== 0)('an environment below a directory the sandbox user cannot enter is reported unusable, not left to fail at run time', async () => {
  const locked = fs.mkdtempSync(path.join(os.tmpdir(), 'bs-locked-'));
  try {
    fs.chmodSync(locked, 0o700);
    fs.mkdirSync(path.join(locked, 'envs', 'hidden', '.venv', 'bin'), { recursive: true });
    fs.writeFileSync(path.join(locked, 'envs', 'hidden', 'pyproject.toml'), '[project]\ndescription = "H"\n');
    fs.symlinkSync('/usr/bin/python3', path.join(locked, 'envs', 'hidden', '.venv', 'bin', 'python'));
    const [hidden] = await discoverEnvironments(path.join(locked, 'envs'));
    expect(hidden).toMatchObject({ name: 'hidden', usable: false });
    expect(hidden?.reason).toContain('not traversable');
    expect(hidden?.reason).not.toContain(locked);
    fs.chmodSync(locked, 0o711);
    const [reachable] = await discoverEnvironments(path.join(locked, 'envs'));
    expect(reachable?.usable).toBe(true);
  } finally {
    fs.rmSync(locked, { recursive: true, force: true });
  }
});
