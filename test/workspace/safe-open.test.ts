import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  InvalidPathError, PathNotDirectoryError, WorkspaceFileNotFoundError, openDirChain, openWorkspaceRoot,
  settleAll, validateRelativePath,
} from '../../src/workspace/safe-open.js';
import { rejectionOf, useFixture } from './workspace-fixture.js';

describe('validateRelativePath', () => {
  it.each([
    ['', 'empty'],
    ['..', "'..'"],
    ['../etc/passwd', "'..'"],
    ['a/../../b', "'..'"],
    ['a/..', "'..'"],
    ['.', "'.'"],
    ['./a', "'.'"],
    ['/etc/passwd', 'relative'],
    ['/', 'relative'],
    ['a\\b', 'backslash'],
    ['..\\..\\x', 'backslash'],
    ['a\0b', 'NUL'],
    ['a//b', 'empty component'],
    ['a/', 'empty component'],
    ['\uD800x', 'Unicode'],
    ['x'.repeat(1025), '1024 bytes'],
    [`${'d/'.repeat(400)}${'é'.repeat(200)}`, '1024 bytes'],
    ['x'.repeat(256), '255 bytes'],
    [`a/${'é'.repeat(128)}`, '255 bytes'],
  ])('rejects %j (%s)', (p, fragment) => {
    let caught: unknown;
    try {
      validateRelativePath(p);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(InvalidPathError);
    const err = caught as InvalidPathError;
    expect(err.code).toBe('INVALID_PATH');
    expect(err.statusCode).toBe(400);
    expect(err.message).toContain(fragment);
  });

  it.each([
    ['a', ['a']],
    ['data.csv', ['data.csv']],
    ['out/plot.png', ['out', 'plot.png']],
    ['.hidden/...', ['.hidden', '...']],
    ['a..b/c.', ['a..b', 'c.']],
    ['x'.repeat(255), ['x'.repeat(255)]],
    [`${'abc/'.repeat(255)}abcd`, [...Array<string>(255).fill('abc'), 'abcd']],
    ['ünïcødé/😀.txt', ['ünïcødé', '😀.txt']],
  ])('accepts %j', (p, parts) => {
    expect(validateRelativePath(p)).toEqual(parts);
  });
});

describe('openDirChain', () => {
  const fx = useFixture();

  it('walks real directories and leaves the root handle open', async () => {
    fs.mkdirSync(path.join(fx.ws, 'a/b'), { recursive: true });
    const root = await openWorkspaceRoot(fx.ws);
    try {
      const dir = await openDirChain(root, ['a', 'b']);
      const [st, want] = [await dir.stat(), fs.statSync(path.join(fx.ws, 'a/b'))];
      await dir.close();
      expect(st.ino).toBe(want.ino);
      expect((await root.stat()).isDirectory()).toBe(true); // still usable
    } finally {
      await root.close();
    }
  });

  it('refuses a symlinked component and a file component; missing is not-found', async () => {
    fs.symlinkSync(fx.outside, path.join(fx.ws, 'd'));
    fs.symlinkSync('/etc', path.join(fx.ws, 'etc'));
    fs.writeFileSync(path.join(fx.ws, 'f'), 'x');
    const root = await openWorkspaceRoot(fx.ws);
    try {
      expect(await rejectionOf(openDirChain(root, ['d']))).toBeInstanceOf(PathNotDirectoryError);
      expect(await rejectionOf(openDirChain(root, ['etc']))).toBeInstanceOf(PathNotDirectoryError);
      expect(await rejectionOf(openDirChain(root, ['f']))).toBeInstanceOf(PathNotDirectoryError);
      expect(await rejectionOf(openDirChain(root, ['nope']))).toBeInstanceOf(WorkspaceFileNotFoundError);
      // create: a planted link is not replaced by a directory and nothing is created behind it.
      expect(await rejectionOf(openDirChain(root, ['d', 'sub'], { create: true }))).toBeInstanceOf(PathNotDirectoryError);
      expect(fs.readdirSync(fx.outside)).toEqual([]);
      expect(fs.lstatSync(path.join(fx.ws, 'd')).isSymbolicLink()).toBe(true);
    } finally {
      await root.close();
    }
  });

  it('refuses a workspace root that is itself a symlink', async () => {
    const link = path.join(fx.base, 'link-ws');
    fs.symlinkSync(fx.outside, link);
    expect((await rejectionOf(openWorkspaceRoot(link))).message).toMatch(/ELOOP|ENOTDIR/);
  });
});

describe('settleAll', () => {
  it('waits for every promise before rethrowing the first failure', async () => {
    let slowDone = false;
    const slow = new Promise<void>((resolve) => setTimeout(() => {
      slowDone = true;
      resolve();
    }, 50));
    const err = await rejectionOf(settleAll([Promise.reject(new Error('first')), slow]));
    expect(err.message).toBe('first');
    expect(slowDone).toBe(true);
  });
});
