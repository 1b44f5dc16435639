// Recursive deletion that never follows a link: every directory is opened with O_NOFOLLOW
// relative to its parent's descriptor and every other entry is unlinked by name, which removes
// a symlink itself and never its target. Node's fs.rm works on whole paths, so a tree deeper
// than PATH_MAX (easy to build with mkdir+chdir in a loop) would be left behind; here a
// directory deeper than MAX_HELD_DEPTH is renamed up into the directory being emptied and
// removed on a later pass, so at most that many descriptors are held and any depth goes away.
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { DIR_FLAGS, errnoOf, isNotDirectoryErrno, procPath, readdirRaw, settleAll } from './safe-open.js';

const MAX_HELD_DEPTH = 32;
const UNLINK_CONCURRENCY = 32;

/**
 * Removes `dir` and everything below it. A missing dir is not an error (cleanup is idempotent);
 * if `dir` itself is a symlink, the link is removed and its target left alone.
 */
export async function removeTreeSafe(dir: string): Promise<void> {
  let handle: FileHandle;
  try {
    handle = await fs.promises.open(dir, DIR_FLAGS);
  } catch (err) {
    const code = errnoOf(err);
    if (code === 'ENOENT') return;
    if (isNotDirectoryErrno(code)) {
      await fs.promises.unlink(dir);
      return;
    }
    throw err;
  }
  try {
    await removeContents(handle);
  } finally {
    await handle.close();
  }
  await fs.promises.rmdir(dir);
}

/** Removes the directory `name` inside `parent` with everything below it. */
export async function removeDirAt(parent: FileHandle, name: string | Buffer): Promise<void> {
  const child = await openForRemoval(parent, name);
  if (child === undefined) return;
  try {
    await removeContents(child);
  } finally {
    await child.close();
  }
  await rmdirQuietly(parent, name);
}

/** Empties the directory held by `top`; subtrees hoisted into it are picked up by the next pass. */
export async function removeContents(top: FileHandle): Promise<void> {
  while (await clearOnce(top, top, 0)) {
    // another pass: a non-empty pass may have hoisted deep subtrees into `top`
  }
}

/** One pass over `dir`; returns whether it had any entries. */
async function clearOnce(dir: FileHandle, top: FileHandle, depth: number): Promise<boolean> {
  const entries = await readdirRaw(dir);
  if (entries.length === 0) return false;
  const dirs: Buffer[] = [];
  const others = entries.filter((e) => {
    if (e.isDirectory()) dirs.push(e.name);
    return !e.isDirectory();
  });
  for (let i = 0; i < others.length; i += UNLINK_CONCURRENCY) {
    const batch = others.slice(i, i + UNLINK_CONCURRENCY);
    const raced = await settleAll(batch.map((e) => unlinkEntry(dir, e.name)));
    // An entry that turned into a directory since readdir is removed as one.
    batch.forEach((e, j) => {
      if (raced[j]) dirs.push(e.name);
    });
  }
  for (const name of dirs) {
    if (depth + 1 >= MAX_HELD_DEPTH) {
      const hoisted = `.bubble-rm-${crypto.randomBytes(12).toString('hex')}`;
      await fs.promises.rename(procPath(dir, name), procPath(top, hoisted));
      continue;
    }
    const child = await openForRemoval(dir, name);
    if (child === undefined) continue;
    try {
      await clearOnce(child, top, depth + 1);
    } finally {
      await child.close();
    }
    await rmdirQuietly(dir, name);
  }
  return true;
}

/** Opens a subdirectory to empty it; if it is no longer a directory, unlinks the entry instead. */
async function openForRemoval(parent: FileHandle, name: string | Buffer): Promise<FileHandle | undefined> {
  try {
    return await fs.promises.open(procPathAny(parent, name), DIR_FLAGS);
  } catch (err) {
    const code = errnoOf(err);
    if (code === 'ENOENT') return undefined;
    if (!isNotDirectoryErrno(code)) throw err;
  }
  await unlinkEntry(parent, name);
  return undefined;
}

/** Unlinks a non-directory entry; returns true when it turned out to be a directory. */
async function unlinkEntry(dir: FileHandle, name: string | Buffer): Promise<boolean> {
  try {
    await fs.promises.unlink(procPathAny(dir, name));
    return false;
  } catch (err) {
    const code = errnoOf(err);
    if (code === 'ENOENT') return false;
    if (code === 'EISDIR') return true;
    throw err;
  }
}

async function rmdirQuietly(dir: FileHandle, name: string | Buffer): Promise<void> {
  try {
    await fs.promises.rmdir(procPathAny(dir, name));
  } catch (err) {
    if (errnoOf(err) !== 'ENOENT') throw err;
  }
}

function procPathAny(dir: FileHandle, name: string | Buffer): string | Buffer {
  return typeof name === 'string' ? procPath(dir, name) : procPath(dir, name);
}
