import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { removeTreeSafe } from '../../src/workspace/workspace-remove.js';
import { listDir, mkfifo, useFixture, within } from './workspace-fixture.js';

const fx = useFixture();

const at = (rel: string): string => path.join(fx.ws, rel);

describe('removeTreeSafe', () => {
  it('deletes the workspace and leaves everything links point at untouched', async () => {
    for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(fx.outside, `f${i}`), 'x');
    fs.mkdirSync(path.join(fx.outside, 'sub'));
    fs.writeFileSync(path.join(fx.outside, 'sub', 'inner'), 'x');
    fs.mkdirSync(at('a/b'), { recursive: true });
    fs.writeFileSync(at('a/b/file'), 'x');
    fs.symlinkSync(fx.outside, at('escape'));
    fs.symlinkSync(fx.outside, at('a/b/escape'));
    fs.symlinkSync(path.join(fx.outside, 'f0'), at('a/f0'));
    fs.symlinkSync('../../outside', at('a/rel'));
    fs.linkSync(path.join(fx.outside, 'f1'), at('hardlink'));
    mkfifo(at('a/pipe'));
    fs.writeFileSync(Buffer.concat([Buffer.from(`${fx.ws}/`), Buffer.from([0xff, 0xfe])]), 'x');

    await within(5000, removeTreeSafe(fx.ws));
    expect(fs.existsSync(fx.ws)).toBe(false);
    expect(listDir(fx.outside)).toEqual([...Array.from({ length: 20 }, (_, i) => `f${i}`), 'sub'].sort());
    expect(listDir(path.join(fx.outside, 'sub'))).toEqual(['inner']);
    expect(fs.readFileSync(path.join(fx.outside, 'f1'), 'utf8')).toBe('x');
  });

  it('removes a tree deeper than PATH_MAX', async () => {
    // 100 levels of 100-byte names: ~10 KB of path, which path-based rm cannot reach.
    // chdir one level at a time (a shell's cd rebuilds the full path and fails past PATH_MAX).
    execFileSync(process.execPath, ['-e', `
      const fs = require('node:fs');
      process.chdir(process.argv[1]);
      for (let i = 0; i < 100; i++) { fs.mkdirSync(process.argv[2]); process.chdir(process.argv[2]); }
      fs.writeFileSync('leaf', 'x');
      fs.symlinkSync(process.argv[3], 'deep-link');
    `, fx.ws, 'n'.repeat(100), fx.outside]);
    expect(() => fs.rmSync(fx.ws, { recursive: true })).toThrow(/ENAMETOOLONG/); // what the naive way does
    fs.symlinkSync(fx.outside, at('n'.repeat(100) + '/link'));
    fs.writeFileSync(path.join(fx.outside, 'keep'), 'k');
    await removeTreeSafe(fx.ws);
    expect(fs.existsSync(fx.ws)).toBe(false);
    expect(listDir(fx.outside)).toEqual(['keep']);
  });

  it('removes only the link when the directory itself is a link, and ignores a missing one', async () => {
    fs.writeFileSync(path.join(fx.outside, 'keep'), 'k');
    const link = path.join(fx.base, 'ws-link');
    fs.symlinkSync(fx.outside, link);
    await removeTreeSafe(link);
    expect(fs.existsSync(link)).toBe(false);
    expect(listDir(fx.outside)).toEqual(['keep']);
    await removeTreeSafe(path.join(fx.base, 'never-existed'));
  });

  it('removes a wide tree', async () => {
    for (let d = 0; d < 20; d++) {
      fs.mkdirSync(at(`d${d}`));
      for (let f = 0; f < 200; f++) fs.writeFileSync(at(`d${d}/f${f}`), 'x');
    }
    await removeTreeSafe(fx.ws);
    expect(fs.existsSync(fx.ws)).toBe(false);
  });
});
