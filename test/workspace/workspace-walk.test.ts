import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { openWorkspaceRoot } from '../../src/workspace/safe-open.js';
import { walkTree } from '../../src/workspace/workspace-walk.js';
import type { WalkVisitor } from '../../src/workspace/workspace-walk.js';
import { useFixture } from './workspace-fixture.js';

const fx = useFixture();

const at = (rel: string): string => path.join(fx.ws, rel);

async function walk(visitor: WalkVisitor, opts: Partial<Parameters<typeof walkTree>[2]> = {}): Promise<{ truncated: boolean }> {
  const root = await openWorkspaceRoot(fx.ws);
  try {
    return await walkTree(root, visitor, { maxEntries: 100_000, descendUnaddressable: false, maxDepth: 1024, ...opts });
  } finally {
    await root.close();
  }
}

describe('walkTree', () => {
  it('does not descend into a directory swapped for a symlink after it was listed', async () => {
    for (let i = 0; i < 3; i++) fs.writeFileSync(path.join(fx.outside, `secret${i}`), 's');
    fs.mkdirSync(at('sub'));
    fs.writeFileSync(at('sub/inside.txt'), 'x');
    const seen: string[] = [];
    await walk((_dir, entries) => {
      for (const e of entries) {
        if (e.relPath !== null) seen.push(e.relPath);
        // The sandbox wins the race: `sub` was read as a directory, now it is a link out.
        if (e.relPath === 'sub') {
          fs.renameSync(at('sub'), at('moved'));
          fs.symlinkSync(fx.outside, at('sub'));
        }
      }
      return Promise.resolve();
    });
    expect(seen).toEqual(['sub']);
    expect(seen.some((p) => p.includes('secret'))).toBe(false);
  });

  it('stops at maxDepth and reports maxEntries truncation', async () => {
    fs.mkdirSync(at('a/b/c/d'), { recursive: true });
    const seen: string[] = [];
    await walk((_dir, entries) => {
      for (const e of entries) if (e.relPath !== null) seen.push(e.relPath);
      return Promise.resolve();
    }, { maxDepth: 2 });
    expect(seen.sort()).toEqual(['a', 'a/b']);
    expect((await walk(() => Promise.resolve(), { maxEntries: 3 })).truncated).toBe(true);
    expect((await walk(() => Promise.resolve(), { maxEntries: 4 })).truncated).toBe(false);
  });

  it('closes every handle when the visitor fails', async () => {
    for (let i = 0; i < 20; i++) fs.mkdirSync(at(`d${i}/e`), { recursive: true });
    const before = fs.readdirSync('/proc/self/fd').length;
    await expect(walk((_dir, entries) => (entries.some((e) => e.relPath === 'd7/e')
      ? Promise.reject(new Error('boom'))
      : Promise.resolve()))).rejects.toThrow('boom');
    expect(fs.readdirSync('/proc/self/fd').length).toBe(before);
  });
});
