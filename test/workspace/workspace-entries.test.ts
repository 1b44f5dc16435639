// Stat, list, mkdir and move of workspace entries never go through a link the sandbox planted:
// `outside` (what the links point at) is never read, listed, written or renamed into.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { listDirSafe, makeDirSafe, moveEntrySafe, statEntrySafe } from '../../src/workspace/workspace-entries.js';
import { useFixture } from './workspace-fixture.js';

describe('workspace entries', () => {
  const f = useFixture();

  it('stat and list describe entries, links as links (never followed, never descended into)', async () => {
    fs.mkdirSync(path.join(f.ws, 'd/e'), { recursive: true });
    fs.writeFileSync(path.join(f.ws, 'd/e/a.txt'), 'abc');
    fs.writeFileSync(path.join(f.outside, 'secret.txt'), 'secret');
    fs.symlinkSync(f.outside, path.join(f.ws, 'd/link'));
    expect(await statEntrySafe(f.ws, ['d', 'e', 'a.txt'])).toMatchObject({ path: 'd/e/a.txt', kind: 'file', size: 3 });
    expect(await statEntrySafe(f.ws, ['d', 'link'])).toMatchObject({ kind: 'symlink', linkTarget: f.outside });
    expect(await statEntrySafe(f.ws, [])).toMatchObject({ path: '', kind: 'directory' });
    await expect(statEntrySafe(f.ws, ['d', 'link', 'secret.txt'])).rejects.toMatchObject({ code: 'FILE_NOT_FOUND' });

    const one = await listDirSafe(f.ws, ['d'], 1, 100);
    expect(one.entries.map((e) => `${e.path}:${e.kind}`)).toEqual(['d/e:directory', 'd/link:symlink']);
    const deep = await listDirSafe(f.ws, [], 10, 100);
    expect(deep.entries.map((e) => e.path)).toEqual(['d', 'd/e', 'd/e/a.txt', 'd/link']);
    expect((await listDirSafe(f.ws, [], 10, 2)).truncated).toBe(true);
    await expect(listDirSafe(f.ws, ['d', 'link'], 1, 100)).rejects.toMatchObject({ code: 'INVALID_PATH' });
  });

  it('mkdir -p makes what is missing, says false for a directory already there, and never goes through a link', async () => {
    expect(await makeDirSafe(f.ws, ['a', 'b', 'c'], undefined)).toBe(true);
    expect(fs.statSync(path.join(f.ws, 'a/b/c')).isDirectory()).toBe(true);
    expect(await makeDirSafe(f.ws, ['a', 'b', 'c'], undefined)).toBe(false);
    fs.writeFileSync(path.join(f.ws, 'file.txt'), 'x');
    await expect(makeDirSafe(f.ws, ['file.txt'], undefined)).rejects.toMatchObject({ code: 'INVALID_PATH' });
    fs.symlinkSync(f.outside, path.join(f.ws, 'link'));
    await expect(makeDirSafe(f.ws, ['link', 'made'], undefined)).rejects.toMatchObject({ code: 'INVALID_PATH' });
    await expect(makeDirSafe(f.ws, ['link'], undefined)).rejects.toMatchObject({ code: 'INVALID_PATH' });
    expect(fs.readdirSync(f.outside)).toEqual([]);
  });

  it('move renames the entry itself (a link moves as a link) and never into or out of a linked directory', async () => {
    fs.writeFileSync(path.join(f.outside, 'secret.txt'), 'secret');
    fs.symlinkSync(f.outside, path.join(f.ws, 'link'));
    fs.symlinkSync(path.join(f.outside, 'secret.txt'), path.join(f.ws, 'file-link'));
    fs.writeFileSync(path.join(f.ws, 'mine.txt'), 'mine');

    await moveEntrySafe(f.ws, ['file-link'], ['sub', 'moved-link'], undefined);
    expect(fs.readlinkSync(path.join(f.ws, 'sub/moved-link'))).toBe(path.join(f.outside, 'secret.txt'));
    await expect(moveEntrySafe(f.ws, ['mine.txt'], ['link', 'mine.txt'], undefined)).rejects.toMatchObject({ code: 'INVALID_PATH' });
    await expect(moveEntrySafe(f.ws, ['link', 'secret.txt'], ['stolen.txt'], undefined)).rejects.toMatchObject({ code: 'FILE_NOT_FOUND' });
    await expect(moveEntrySafe(f.ws, ['missing.txt'], ['x.txt'], undefined)).rejects.toMatchObject({ code: 'FILE_NOT_FOUND' });
    expect(fs.readdirSync(f.outside)).toEqual(['secret.txt']);
    expect(fs.readFileSync(path.join(f.ws, 'mine.txt'), 'utf8')).toBe('mine');
  });
});
