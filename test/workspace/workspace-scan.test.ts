import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  chownTreeSafe, diffSnapshots, listFiles, scanWorkspace, snapshotWorkspace,
} from '../../src/workspace/workspace-scan.js';
import { openWorkspaceRoot } from '../../src/workspace/safe-open.js';
import { walkTree } from '../../src/workspace/workspace-walk.js';
import { listDir, mkfifo, useFixture, within } from './workspace-fixture.js';

const fx = useFixture();

const at = (rel: string): string => path.join(fx.ws, rel);
const write = (rel: string, content = 'x'): void => {
  fs.mkdirSync(path.dirname(at(rel)), { recursive: true });
  fs.writeFileSync(at(rel), content);
};

describe('listFiles', () => {
  it('lists every regular file recursively, sorted in byte order, with size and mtime', async () => {
    write('b.txt', 'bb');
    write('a/z.txt');
    write('a.txt', 'aaa');
    write('\uFF5E.txt'); // U+FF5E sorts after U+1F600 in UTF-16 but before it in UTF-8
    write('\u{1F600}.txt');
    write('deep/er/est/f.csv', '12345');
    const when = new Date('2024-05-06T07:08:09.000Z');
    fs.utimesSync(at('b.txt'), when, when);
    const files = await listFiles(fx.ws);
    expect(files.map((f) => f.path)).toEqual(['a.txt', 'a/z.txt', 'b.txt', 'deep/er/est/f.csv', '\uFF5E.txt', '\u{1F600}.txt']);
    expect(files.find((f) => f.path === 'b.txt')).toEqual({ path: 'b.txt', size: 2, modified_at: '2024-05-06T07:08:09.000Z' });
    expect(files.find((f) => f.path === 'deep/er/est/f.csv')?.size).toBe(5);
  });

  it('skips links, FIFOs and sockets and never descends into a symlinked directory', async () => {
    for (let i = 0; i < 3; i++) fs.writeFileSync(path.join(fx.outside, `secret${i}`), 's');
    write('real.txt');
    fs.symlinkSync(fx.outside, at('d'));
    fs.symlinkSync('/etc', at('etc'));
    fs.symlinkSync('/etc/shadow', at('shadow.txt'));
    fs.symlinkSync(at('real.txt'), at('inner-link.txt'));
    mkfifo(at('pipe'));
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(at('sock'), resolve));
    try {
      const files = await within(2000, listFiles(fx.ws));
      expect(files.map((f) => f.path)).toEqual(['real.txt']);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('leaves out names the API cannot address (not UTF-8, backslash, path over 1024 bytes)', async () => {
    write('ok.txt');
    fs.writeFileSync(Buffer.concat([Buffer.from(`${fx.ws}/`), Buffer.from([0x62, 0xff, 0x2e])]), 'x');
    write('back\\slash.txt');
    // Built with relative mkdirs: the full host path is long, each step is short.
    const long = 'L'.repeat(200);
    let dir = fx.ws;
    for (let i = 0; i < 6; i++) {
      dir = path.join(dir, long);
      fs.mkdirSync(dir);
    }
    fs.writeFileSync(path.join(dir, 'too-deep.txt'), 'x');
    fs.writeFileSync(path.join(fx.ws, long, long, 'fine.txt'), 'x');
    expect((await listFiles(fx.ws)).map((f) => f.path)).toEqual([`${long}/${long}/fine.txt`, 'ok.txt']);
  });

  it('stops after maxEntries and says so', async () => {
    for (let i = 0; i < 50; i++) write(`d${i % 5}/f${i}.txt`);
    const full = await scanWorkspace(fx.ws);
    expect([full.files.length, full.truncated]).toEqual([50, false]);
    const cut = await scanWorkspace(fx.ws, { maxEntries: 20 });
    expect(cut.truncated).toBe(true);
    expect(cut.files.length).toBeLessThanOrEqual(20);
    expect((await listFiles(fx.ws, { maxEntries: 20 })).length).toBeLessThanOrEqual(20);
  });

  it('handles a deep chain and a wide tree holding few descriptors at a time', async () => {
    let rel = '';
    for (let i = 0; i < 400; i++) rel += 'c/';
    write(`${rel}bottom.txt`);
    for (let i = 0; i < 1000; i++) fs.mkdirSync(at(`wide/w${i}`), { recursive: true });
    write('wide/w999/f.txt');
    const fdsBefore = fs.readdirSync('/proc/self/fd').length;
    let maxHeld = 0;
    const root = await openWorkspaceRoot(fx.ws);
    try {
      const seen: string[] = [];
      await walkTree(root, (_dir, entries) => {
        maxHeld = Math.max(maxHeld, fs.readdirSync('/proc/self/fd').length - fdsBefore);
        for (const e of entries) if (e.kind === 'file' && e.relPath !== null) seen.push(e.relPath);
        return Promise.resolve();
      }, { maxEntries: 100_000, descendUnaddressable: false, maxDepth: 1024 });
      expect(seen.sort()).toEqual([`${rel}bottom.txt`, 'wide/w999/f.txt']);
    } finally {
      await root.close();
    }
    console.log(`walk of a 400-deep chain and 1,000 sibling dirs held at most ${maxHeld} descriptors`);
    expect(maxHeld).toBeLessThan(64); // ~32 directories in flight, not one per directory
    expect((await listFiles(fx.ws)).map((f) => f.path)).toEqual([`${rel}bottom.txt`, 'wide/w999/f.txt']);
    expect(fs.readdirSync('/proc/self/fd').length).toBe(fdsBefore); // every handle closed
  });
});

describe('snapshotWorkspace + diffSnapshots', () => {
  it('reports created, modified (same size, new content) and deleted files', async () => {
    write('same.txt', 'same');
    write('mod.txt', 'aaaa');
    write('gone.txt', 'bye');
    write('dir/gone2.txt', 'bye');
    write('replaced-by-link.txt', 'x');
    const before = await snapshotWorkspace(fx.ws);
    expect([...before.keys()].sort()).toEqual(['dir/gone2.txt', 'gone.txt', 'mod.txt', 'replaced-by-link.txt', 'same.txt']);

    fs.writeFileSync(at('mod.txt'), 'bbbb');
    const later = new Date(Date.now() + 5000);
    fs.utimesSync(at('mod.txt'), later, later);
    fs.unlinkSync(at('gone.txt'));
    fs.rmSync(at('dir'), { recursive: true });
    fs.unlinkSync(at('replaced-by-link.txt'));
    fs.symlinkSync('/etc/passwd', at('replaced-by-link.txt'));
    write('new/created.txt', 'hi');
    fs.symlinkSync('/etc/shadow', at('new-link.txt'));

    const diff = diffSnapshots(before, await snapshotWorkspace(fx.ws));
    expect(diff).toEqual({
      created: ['new/created.txt'],
      modified: ['mod.txt'],
      deleted: ['dir/gone2.txt', 'gone.txt', 'replaced-by-link.txt'],
      truncated: false,
    });
  });

  it('sees a rewrite whose mtime was put back (ctime) and a same-size replacement (inode)', async () => {
    write('touched.txt', 'aaaa');
    write('swapped.txt', 'cccc');
    // Whole seconds: utimes() goes through a double and would not restore nanoseconds exactly.
    const stamp = new Date('2024-01-02T03:04:05.000Z');
    fs.utimesSync(at('touched.txt'), stamp, stamp);
    const before = await snapshotWorkspace(fx.ws);
    await new Promise((resolve) => setTimeout(resolve, 20));
    fs.writeFileSync(at('touched.txt'), 'bbbb');
    fs.utimesSync(at('touched.txt'), stamp, stamp);
    fs.writeFileSync(at('tmp'), 'dddd');
    fs.renameSync(at('tmp'), at('swapped.txt'));
    const after = await snapshotWorkspace(fx.ws);
    expect(after.get('touched.txt')?.mtimeMs).toBe(before.get('touched.txt')?.mtimeMs);
    expect(diffSnapshots(before, after).modified).toEqual(['swapped.txt', 'touched.txt']);
    expect(diffSnapshots(after, after)).toEqual({ created: [], modified: [], deleted: [], truncated: false });
  });

  it('snapshots 10,000 files in 100 directories, every one of them (its cost is measured by npm run bench)', async () => {
    for (let d = 0; d < 100; d++) {
      fs.mkdirSync(at(`d${d}`));
      for (let f = 0; f < 100; f++) fs.writeFileSync(at(`d${d}/f${f}.txt`), 'x'.repeat(f));
    }
    const snap = await snapshotWorkspace(fx.ws);
    expect(snap.size).toBe(10_000);
    expect(snap.truncated).toBe(false);
    for (let d = 0; d < 100; d++) for (let f = 0; f < 100; f++) expect(snap.get(`d${d}/f${f}.txt`)?.size).toBe(f);
    expect([...snap.dirs].sort()).toEqual(Array.from({ length: 100 }, (_, d) => `d${d}`).sort());
  });
});

describe('chownTreeSafe', () => {
  it('re-owns the workspace without touching what links point at', async () => {
    const target = path.join(fx.outside, 'target');
    fs.writeFileSync(target, 't');
    fs.mkdirSync(path.join(fx.outside, 'dir'));
    write('a/b/c.txt');
    fs.symlinkSync(target, at('a/link'));
    fs.symlinkSync(fx.outside, at('dirlink'));
    mkfifo(at('pipe'));
    fs.writeFileSync(Buffer.concat([Buffer.from(`${fx.ws}/`), Buffer.from([0xff])]), 'x');
    const result = await within(2000, chownTreeSafe(fx.ws, 12345, 12346));
    expect(result.truncated).toBe(false);
    for (const rel of ['.', 'a', 'a/b', 'a/b/c.txt', 'a/link', 'dirlink', 'pipe']) {
      const st = fs.lstatSync(at(rel));
      expect([rel, st.uid, st.gid]).toEqual([rel, 12345, 12346]);
    }
    expect(fs.lstatSync(Buffer.concat([Buffer.from(`${fx.ws}/`), Buffer.from([0xff])])).uid).toBe(12345);
    for (const p of [fx.outside, target, path.join(fx.outside, 'dir')]) {
      expect(fs.statSync(p).uid).toBe(process.getuid?.());
    }
    expect(listDir(fx.outside)).toEqual(['dir', 'target']);
  });
});
