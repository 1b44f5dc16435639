// The shadowing rule of warm sandboxes (warm-rules.ts shadowsImported): which workspace entries
// would shadow a module the warm launcher imported, exactly for every kind of module file, and
// at a bounded cost however many entries the workspace holds.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, test, vi } from 'vitest';
import { shadowsImported } from '../../src/sandbox/warm/warm-rules.js';

/** What the launcher reports for CPython 3.11 on x86-64 Linux. */
const SUFFIXES = ['.py', '.pyc', '.cpython-311-x86_64-linux-gnu.so', '.abi3.so', '.so'];
const MODULES = ['json', 'gc', 'pandas'];
const dirs: string[] = [];

function workspace(fillers: number, entries: { name: string; dir?: boolean }[]): string {
  const ws = fs.mkdtempSync(path.join(os.tmpdir(), 'bs-shadow-'));
  dirs.push(ws);
  for (let i = 0; i < fillers; i++) fs.writeFileSync(path.join(ws, `data-${i}.csv`), '');
  for (const e of entries) {
    if (e.dir) fs.mkdirSync(path.join(ws, e.name));
    else fs.writeFileSync(path.join(ws, e.name), '');
  }
  return ws;
}
afterEach(() => {
  vi.restoreAllMocks();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

// 0 fillers: the directory is listed; 1500: it is larger than is listed whole, and asked about each name.
describe.each([0, 1500])('with %i other entries', (fillers) => {
  test.each([
    { name: 'json.py' }, { name: 'pandas', dir: true }, { name: 'gc.pyc' }, { name: 'json.cpython-311-x86_64-linux-gnu.so' },
    { name: 'pandas.abi3.so' }, { name: 'gc.so' }, { name: 'json' },
  ])('$name shadows', (entry) => {
    expect(shadowsImported(workspace(fillers, [entry]), MODULES, SUFFIXES)).toBe(true);
  });

  test('names that no import of these modules would find do not', () => {
    const ws = workspace(fillers, [
      { name: 'json.txt' }, { name: 'jsonx.py' }, { name: 'pandas.cpython-312-x86_64-linux-gnu.so' }, { name: 'gc.foo.so' },
      { name: 'Json.py' }, { name: 'numpy.py' }, { name: 'pandas.py.bak' },
    ]);
    expect(shadowsImported(ws, MODULES, SUFFIXES)).toBe(false);
  });

  test('a dangling symlink named like a module counts', () => {
    const ws = workspace(fillers, []);
    fs.symlinkSync('/nonexistent', path.join(ws, 'pandas.py'));
    expect(shadowsImported(ws, MODULES, SUFFIXES)).toBe(true);
  });
});

test('a workspace that cannot be read counts as shadowing (the run goes cold)', () => {
  expect(shadowsImported('/nonexistent/workspace', MODULES, SUFFIXES)).toBe(true);
});

test('a large workspace is not listed: one lstat per candidate name, whatever the number of entries', () => {
  const ws = workspace(5000, [{ name: 'zzz.py' }]);
  expect(fs.statSync(ws).size).toBeGreaterThan(16 * 1024);
  const readdir = vi.spyOn(fs, 'readdirSync');
  const opendir = vi.spyOn(fs, 'opendirSync');
  const lstat = vi.spyOn(fs, 'lstatSync');
  expect(shadowsImported(ws, MODULES, SUFFIXES)).toBe(false);
  expect(readdir).not.toHaveBeenCalled();
  expect(opendir).not.toHaveBeenCalled();
  expect(lstat.mock.calls.length).toBe(MODULES.length * (SUFFIXES.length + 1));
});
