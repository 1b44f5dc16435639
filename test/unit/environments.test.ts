import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { discoverEnvironments, findEnvironment, parseProjectTable } from '../../src/sandbox/environments.js';

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
      name: 'x', description: 'Some "thing"', dependencies: ['pandas>=2', 'numpy'],
    });
  });

  test('discovery sorts by name and reports unusable environments with a reason and no host path', async () => {
    env('zeta', '[project]\ndescription = "Z"\ndependencies = []\n', '/usr/bin/python3');
    env('alpha', '[project]\ndescription = "A"\ndependencies = ["requests"]\n', '/usr/bin/python3');
    env('broken', '[project]\ndescription = "B"\n', null);
    const outside = path.join(dir, 'python-outside-usr');
    fs.writeFileSync(outside, '#!/bin/sh\n', { mode: 0o755 });
    env('foreign', '[project]\ndescription = "F"\n', outside);
    env('notoml', null, '/usr/bin/python3');
    fs.mkdirSync(path.join(dir, 'bad name!'));
    const envs = await discoverEnvironments(dir);
    expect(envs.map((e) => e.name)).toEqual(['alpha', 'broken', 'foreign', 'notoml', 'zeta']);
    expect(envs.find((e) => e.name === 'alpha')).toMatchObject({ usable: true, description: 'A', dependencies: ['requests'] });
    for (const name of ['broken', 'foreign', 'notoml']) {
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
