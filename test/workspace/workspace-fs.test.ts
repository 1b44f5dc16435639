import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  InvalidPathError, PathNotDirectoryError, UploadTooLargeError, WorkspaceFileNotFoundError, commitStagedFile,
  deleteFileSafe, openWorkspaceRoot, readFileSafe, stageFile, writeFileSafe,
} from '../../src/workspace/workspace-fs.js';
import { listDir, mkfifo, rejectionOf, useFixture, within } from './workspace-fixture.js';

const fx = useFixture();

const at = (rel: string): string => path.join(fx.ws, rel);

async function readAll(root: string, rel: string): Promise<string> {
  const { handle, size } = await readFileSafe(root, rel);
  try {
    const text = await handle.readFile('utf8');
    expect(Buffer.byteLength(text)).toBe(size);
    return text;
  } finally {
    await handle.close();
  }
}

/** The error of a refused operation: the expected class, and no host path in its message. */
async function refused<E extends Error>(p: Promise<unknown>, cls: new (...args: never[]) => E): Promise<E> {
  const err = await rejectionOf(p);
  expect(err).toBeInstanceOf(cls);
  expect(err.message).not.toContain(fx.base);
  expect(err.message).not.toContain('/proc/self');
  return err as E;
}

describe('readFileSafe', () => {
  it('reads a regular file with its size and mtime', async () => {
    fs.mkdirSync(at('out'));
    fs.writeFileSync(at('out/result.txt'), 'hello');
    const { handle, size, mtime } = await readFileSafe(fx.ws, 'out/result.txt');
    try {
      expect(size).toBe(5);
      expect(mtime.getTime()).toBe(fs.statSync(at('out/result.txt')).mtime.getTime());
      expect(await handle.readFile('utf8')).toBe('hello');
    } finally {
      await handle.close();
    }
  });

  it('refuses out.txt -> /etc/shadow and hands out no bytes of it', async () => {
    fs.symlinkSync('/etc/shadow', at('out.txt'));
    const err = await refused(readFileSafe(fx.ws, 'out.txt'), WorkspaceFileNotFoundError);
    expect(err.code).toBe('FILE_NOT_FOUND');
    expect(err.statusCode).toBe(404);
  });

  it('refuses a symlinked parent directory (d -> /etc, then d/passwd)', async () => {
    fs.symlinkSync('/etc', at('d'));
    await refused(readFileSafe(fx.ws, 'd/passwd'), WorkspaceFileNotFoundError);
    fs.mkdirSync(at('real'));
    fs.symlinkSync('/etc', at('real/deeper'));
    await refused(readFileSafe(fx.ws, 'real/deeper/passwd'), WorkspaceFileNotFoundError);
  });

  it('refuses a relative symlink that climbs out of the workspace', async () => {
    fs.writeFileSync(path.join(fx.outside, 'secret'), 'secret');
    fs.symlinkSync('../outside/secret', at('s'));
    await refused(readFileSafe(fx.ws, 's'), WorkspaceFileNotFoundError);
  });

  it('refuses a FIFO at once instead of hanging', async () => {
    mkfifo(at('pipe'));
    const started = Date.now();
    await refused(within(2000, readFileSafe(fx.ws, 'pipe')), WorkspaceFileNotFoundError);
    expect(Date.now() - started).toBeLessThan(2000);
    fs.mkdirSync(at('sub'));
    mkfifo(at('sub/pipe'));
    await refused(within(2000, readFileSafe(fx.ws, 'sub/pipe/x')), WorkspaceFileNotFoundError);
  });

  it('refuses a unix socket, a directory, a missing file, a file used as a directory', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(at('sock'), resolve));
    try {
      await refused(within(2000, readFileSafe(fx.ws, 'sock')), WorkspaceFileNotFoundError);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    fs.mkdirSync(at('dir'));
    fs.writeFileSync(at('file'), 'x');
    await refused(readFileSafe(fx.ws, 'dir'), WorkspaceFileNotFoundError);
    await refused(readFileSafe(fx.ws, 'missing'), WorkspaceFileNotFoundError);
    await refused(readFileSafe(fx.ws, 'file/x'), WorkspaceFileNotFoundError);
  });

  it('validates the path before touching the disk', async () => {
    await refused(readFileSafe(fx.ws, '../outside/x'), InvalidPathError);
    await refused(readFileSafe(fx.ws, '/etc/passwd'), InvalidPathError);
  });

  it('accepts an open root handle and leaves it open', async () => {
    fs.writeFileSync(at('a.txt'), 'A');
    const root = await openWorkspaceRoot(fx.ws);
    try {
      expect(await readAll(fx.ws, 'a.txt')).toBe('A');
      const { handle } = await readFileSafe(root, 'a.txt');
      await handle.close();
      expect((await root.stat()).isDirectory()).toBe(true);
    } finally {
      await root.close();
    }
  });
});

describe('writeFileSafe', () => {
  it('round-trips a Buffer and a stream, creating parent directories', async () => {
    expect(await writeFileSafe(fx.ws, 'a.txt', Buffer.from('one'), { mkdirs: false })).toEqual({ path: 'a.txt', size: 3 });
    const stream = Readable.from([Buffer.from('x'.repeat(70_000)), Buffer.from('tail')]);
    expect(await writeFileSafe(fx.ws, 'deep/er/b.csv', stream, { mkdirs: true })).toEqual({ path: 'deep/er/b.csv', size: 70_004 });
    expect(await readAll(fx.ws, 'a.txt')).toBe('one');
    expect(await readAll(fx.ws, 'deep/er/b.csv')).toBe(`${'x'.repeat(70_000)}tail`);
    expect(fs.statSync(at('deep')).mode & 0o777).toBe(0o755);
    expect(fs.statSync(at('a.txt')).mode & 0o777).toBe(0o644);
    // Overwrite replaces the content, and no temp file is left behind.
    await writeFileSafe(fx.ws, 'a.txt', Buffer.from('two'), { mkdirs: false });
    expect(await readAll(fx.ws, 'a.txt')).toBe('two');
    expect(listDir(fx.ws)).toEqual(['a.txt', 'deep']);
  });

  it('chowns the file and the directories it created to the owner, not existing ones', async () => {
    fs.mkdirSync(at('existing'));
    const owner = { uid: 12345, gid: 12345 };
    await writeFileSafe(fx.ws, 'existing/new/f.txt', Buffer.from('x'), { mkdirs: true, owner });
    const file = fs.statSync(at('existing/new/f.txt'));
    expect([file.uid, file.gid]).toEqual([12345, 12345]);
    const created = fs.statSync(at('existing/new'));
    expect([created.uid, created.gid]).toEqual([12345, 12345]);
    expect(fs.statSync(at('existing')).uid).toBe(process.getuid?.());
  });

  it('refuses to write through a symlinked directory and creates nothing behind it', async () => {
    fs.symlinkSync(fx.outside, at('d'));
    const err = await refused(writeFileSafe(fx.ws, 'd/x.txt', Buffer.from('pwned'), { mkdirs: true }), PathNotDirectoryError);
    expect(err).toBeInstanceOf(InvalidPathError);
    expect(err.statusCode).toBe(400);
    await refused(writeFileSafe(fx.ws, 'd/new/x.txt', Buffer.from('pwned'), { mkdirs: true }), PathNotDirectoryError);
    await refused(writeFileSafe(fx.ws, 'd/x.txt', Buffer.from('pwned'), { mkdirs: false }), PathNotDirectoryError);
    expect(listDir(fx.outside)).toEqual([]);
    expect(fs.lstatSync(at('d')).isSymbolicLink()).toBe(true);
  });

  it('replaces a planted final symlink itself, never writing to its target', async () => {
    const target = path.join(fx.outside, 'target.txt');
    fs.writeFileSync(target, 'original');
    fs.symlinkSync(target, at('out.txt'));
    fs.symlinkSync(path.join(fx.outside, 'dangling.txt'), at('dangling.txt'));
    await writeFileSafe(fx.ws, 'out.txt', Buffer.from('new'), { mkdirs: false, owner: { uid: 12345, gid: 12345 } });
    await writeFileSafe(fx.ws, 'dangling.txt', Buffer.from('new'), { mkdirs: false });
    expect(fs.readFileSync(target, 'utf8')).toBe('original');
    expect(fs.statSync(target).uid).toBe(process.getuid?.());
    expect(listDir(fx.outside)).toEqual(['target.txt']);
    expect(fs.lstatSync(at('out.txt')).isFile()).toBe(true);
    expect(fs.readFileSync(at('out.txt'), 'utf8')).toBe('new');
  });

  it('does not write into a hard-linked inode (the name is replaced, the old inode untouched)', async () => {
    fs.writeFileSync(at('orig.txt'), 'keep');
    fs.linkSync(at('orig.txt'), at('link.txt'));
    await writeFileSafe(fx.ws, 'link.txt', Buffer.from('new'), { mkdirs: false });
    expect(fs.readFileSync(at('orig.txt'), 'utf8')).toBe('keep');
  });

  it('replaces a FIFO without blocking, and refuses to replace a directory', async () => {
    mkfifo(at('pipe'));
    await within(2000, writeFileSafe(fx.ws, 'pipe', Buffer.from('data'), { mkdirs: false }));
    expect(fs.lstatSync(at('pipe')).isFile()).toBe(true);
    fs.mkdirSync(at('dir'));
    fs.writeFileSync(at('dir/keep'), 'k');
    await refused(writeFileSafe(fx.ws, 'dir', Buffer.from('x'), { mkdirs: false }), InvalidPathError);
    expect(fs.readFileSync(at('dir/keep'), 'utf8')).toBe('k');
    expect(listDir(fx.ws)).toEqual(['dir', 'pipe']);
  });

  it('refuses a file used as a directory, and a missing parent without mkdirs', async () => {
    fs.writeFileSync(at('f'), 'x');
    await refused(writeFileSafe(fx.ws, 'f/x.txt', Buffer.from('x'), { mkdirs: true }), PathNotDirectoryError);
    await refused(writeFileSafe(fx.ws, 'nope/x.txt', Buffer.from('x'), { mkdirs: false }), WorkspaceFileNotFoundError);
    expect(listDir(fx.ws)).toEqual(['f']);
  });

  it('stops at maxBytes and keeps nothing', async () => {
    fs.writeFileSync(at('a.txt'), 'old');
    const source = Readable.from([Buffer.alloc(600), Buffer.alloc(600)]);
    const err = await refused(writeFileSafe(fx.ws, 'a.txt', source, { mkdirs: false, maxBytes: 1000 }), UploadTooLargeError);
    expect([err.code, err.statusCode]).toEqual(['UPLOAD_TOO_LARGE', 413]);
    expect(fs.readFileSync(at('a.txt'), 'utf8')).toBe('old');
    expect(listDir(fx.ws)).toEqual(['a.txt']);
  });
});

describe('stageFile + commitStagedFile', () => {
  it('stages outside the workspace, then moves the file in with its owner', async () => {
    const staging = path.join(fx.base, 'staging');
    fs.mkdirSync(staging);
    const staged = await stageFile(staging, Readable.from([Buffer.from('a,b\n'), Buffer.from('1,2\n')]), 100);
    expect(staged.size).toBe(8);
    expect(listDir(fx.ws)).toEqual([]);
    const done = await commitStagedFile(staged.path, fx.ws, 'in/data.csv', { owner: { uid: 12345, gid: 12345 } });
    expect(done).toEqual({ path: 'in/data.csv', size: 8 });
    expect(fs.readFileSync(at('in/data.csv'), 'utf8')).toBe('a,b\n1,2\n');
    const st = fs.statSync(at('in/data.csv'));
    expect([st.uid, st.gid, st.mode & 0o777]).toEqual([12345, 12345, 0o644]);
    expect(listDir(staging)).toEqual([]); // consumed
    expect(listDir(at('in'))).toEqual(['data.csv']);
  });

  it('copies when staging is on another filesystem (/dev/shm)', async () => {
    const staging = fs.mkdtempSync('/dev/shm/bubble-stage-');
    try {
      const staged = await stageFile(staging, Buffer.from('shm'), 100);
      await commitStagedFile(staged.path, fx.ws, 'x.txt', { owner: { uid: 12345, gid: 12345 } });
      expect(fs.readFileSync(at('x.txt'), 'utf8')).toBe('shm');
      expect(fs.statSync(at('x.txt')).uid).toBe(12345);
      expect(listDir(staging)).toEqual([]);
      expect(listDir(fx.ws)).toEqual(['x.txt']);
    } finally {
      fs.rmSync(staging, { recursive: true, force: true });
    }
  });

  it('stageFile over its budget keeps nothing', async () => {
    const staging = path.join(fx.base, 'staging');
    fs.mkdirSync(staging);
    await refused(stageFile(staging, Readable.from([Buffer.alloc(60), Buffer.alloc(60)]), 100), UploadTooLargeError);
    expect(listDir(staging)).toEqual([]);
  });

  it('refuses to commit through a symlinked directory', async () => {
    const staging = path.join(fx.base, 'staging');
    fs.mkdirSync(staging);
    fs.symlinkSync(fx.outside, at('d'));
    const staged = await stageFile(staging, Buffer.from('x'), 100);
    await refused(commitStagedFile(staged.path, fx.ws, 'd/x.txt'), PathNotDirectoryError);
    expect(listDir(fx.outside)).toEqual([]);
    expect(listDir(fx.ws)).toEqual(['d']);
  });
});

describe('deleteFileSafe', () => {
  it('removes a regular file; missing is FILE_NOT_FOUND', async () => {
    fs.writeFileSync(at('a.txt'), 'x');
    await deleteFileSafe(fx.ws, 'a.txt');
    expect(listDir(fx.ws)).toEqual([]);
    await refused(deleteFileSafe(fx.ws, 'a.txt'), WorkspaceFileNotFoundError);
  });

  it('removes a symlink itself, never its target', async () => {
    const target = path.join(fx.outside, 'keep.txt');
    fs.writeFileSync(target, 'keep');
    fs.symlinkSync(target, at('link'));
    fs.symlinkSync(fx.outside, at('dirlink'));
    await deleteFileSafe(fx.ws, 'link');
    await deleteFileSafe(fx.ws, 'dirlink', { recursive: true });
    expect(listDir(fx.ws)).toEqual([]);
    expect(fs.readFileSync(target, 'utf8')).toBe('keep');
  });

  it('does not delete through a symlinked parent', async () => {
    fs.writeFileSync(path.join(fx.outside, 'keep.txt'), 'keep');
    fs.symlinkSync(fx.outside, at('d'));
    await refused(deleteFileSafe(fx.ws, 'd/keep.txt'), WorkspaceFileNotFoundError);
    expect(listDir(fx.outside)).toEqual(['keep.txt']);
  });

  it('removes a FIFO entry without opening it', async () => {
    mkfifo(at('pipe'));
    await within(2000, deleteFileSafe(fx.ws, 'pipe'));
    expect(listDir(fx.ws)).toEqual([]);
  });

  it('removes a directory only when asked, never following links inside it', async () => {
    for (let i = 0; i < 5; i++) fs.writeFileSync(path.join(fx.outside, `f${i}`), 'x');
    fs.mkdirSync(at('dir/sub'), { recursive: true });
    fs.writeFileSync(at('dir/sub/a.txt'), 'a');
    fs.symlinkSync(fx.outside, at('dir/sub/escape'));
    fs.symlinkSync(path.join(fx.outside, 'f0'), at('dir/f0'));
    await refused(deleteFileSafe(fx.ws, 'dir'), InvalidPathError);
    expect(fs.existsSync(at('dir/sub/a.txt'))).toBe(true);
    await deleteFileSafe(fx.ws, 'dir', { recursive: true });
    expect(listDir(fx.ws)).toEqual([]);
    expect(listDir(fx.outside)).toEqual(['f0', 'f1', 'f2', 'f3', 'f4']);
  });
});
