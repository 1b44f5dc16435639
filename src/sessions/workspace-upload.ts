// Uploads into a workspace, written so that nothing is ever written through a link:
// - stageFile() streams one upload part into a service-owned staging directory outside the
//   workspace (create-exclusive, 0600) within the byte budget the caller still has. Nothing in
//   the workspace changes while a request is read, so a 413 or 415 keeps nothing.
// - commitStagedFile() moves a staged file in once the whole request is valid: it walks to the
//   target directory one component at a time (creating missing ones, refusing links), renames
//   the staged file to a fresh `.bubble-upload-<random>` name there (copying instead when the
//   staging directory is on another filesystem, e.g. a per-session quota image), sets owner and
//   mode through the open descriptor, then renames that name over the final one. rename()
//   replaces a link or FIFO itself, never its target, and refuses to replace a directory. The
//   staged file is consumed.
// - writeFileSafe() does the same in one step from a Buffer or a stream.
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import {
  CREATE_FLAGS, InvalidPathError, READ_FLAGS, UploadTooLargeError, errnoOf, openDirChain, procPath,
  validateRelativePath, withRoot,
} from './safe-open.js';
import type { Owner, WorkspaceRoot } from './safe-open.js';

const FILE_MODE = 0o644;

export type FileSource = AsyncIterable<Buffer> | Iterable<Buffer> | Buffer;

export interface WriteOptions {
  owner?: Owner | undefined;
  /** Create missing parent directories. */
  mkdirs: boolean;
  maxBytes?: number | undefined;
}

export interface WrittenFile {
  path: string;
  size: number;
}

/** Writes a file into the workspace atomically (temp name + rename), never through a link. */
export async function writeFileSafe(
  root: WorkspaceRoot, relPath: string, source: FileSource, opts: WriteOptions,
): Promise<WrittenFile> {
  const parts = validateRelativePath(relPath);
  const name = parts[parts.length - 1] as string;
  return withRoot(root, async (rootHandle) => {
    const dir = await openDirChain(rootHandle, parts.slice(0, -1), { create: opts.mkdirs, owner: opts.owner });
    try {
      await refuseDirectory(dir, name);
      const temp = tempName();
      try {
        const handle = await fs.promises.open(procPath(dir, temp), CREATE_FLAGS, 0o600);
        let size: number;
        try {
          size = await writeAll(handle, source, opts.maxBytes);
          await finishFile(handle, opts.owner);
        } finally {
          await handle.close();
        }
        await renameOver(dir, temp, name);
        return { path: parts.join('/'), size };
      } catch (err) {
        await unlinkQuietly(procPath(dir, temp));
        throw err;
      }
    } finally {
      await dir.close();
    }
  });
}

export interface StagedFile {
  /** Host path of the staged file inside the staging directory. */
  path: string;
  size: number;
}

/** Streams one upload part into `stagingDir` (service-owned, outside any workspace). Over maxBytes → UploadTooLargeError, nothing kept. */
export async function stageFile(stagingDir: string, source: FileSource, maxBytes: number): Promise<StagedFile> {
  const stagedPath = path.join(stagingDir, `.bubble-stage-${crypto.randomBytes(12).toString('hex')}`);
  const handle = await fs.promises.open(stagedPath, CREATE_FLAGS, 0o600);
  try {
    let size: number;
    try {
      size = await writeAll(handle, source, maxBytes);
    } finally {
      await handle.close();
    }
    return { path: stagedPath, size };
  } catch (err) {
    await unlinkQuietly(stagedPath);
    throw err;
  }
}

export interface CommitOptions {
  owner?: Owner | undefined;
  /** Create missing parent directories (default true). */
  mkdirs?: boolean;
}

/** Moves a staged file to `relPath` in the workspace (see the header for the steps). */
export async function commitStagedFile(
  stagedPath: string, root: WorkspaceRoot, relPath: string, opts: CommitOptions = {},
): Promise<WrittenFile> {
  const parts = validateRelativePath(relPath);
  const name = parts[parts.length - 1] as string;
  const staged = await fs.promises.open(stagedPath, READ_FLAGS);
  try {
    const stat = await staged.stat();
    if (!stat.isFile()) throw new Error('staged upload is not a regular file');
    return await withRoot(root, async (rootHandle) => {
      const dir = await openDirChain(rootHandle, parts.slice(0, -1), { create: opts.mkdirs ?? true, owner: opts.owner });
      try {
        await refuseDirectory(dir, name);
        const temp = tempName();
        try {
          await moveOrCopy(staged, stagedPath, dir, temp, opts.owner);
          await renameOver(dir, temp, name);
          return { path: parts.join('/'), size: stat.size };
        } catch (err) {
          await unlinkQuietly(procPath(dir, temp));
          throw err;
        }
      } finally {
        await dir.close();
      }
    });
  } finally {
    await staged.close();
  }
}

async function moveOrCopy(staged: FileHandle, stagedPath: string, dir: FileHandle, temp: string, owner: Owner | undefined): Promise<void> {
  try {
    await fs.promises.rename(stagedPath, procPath(dir, temp));
    // `staged` still refers to the inode just moved, so owner and mode land on it and nothing else.
    await finishFile(staged, owner);
    return;
  } catch (err) {
    if (errnoOf(err) !== 'EXDEV') throw err;
  }
  const copy = await fs.promises.open(procPath(dir, temp), CREATE_FLAGS, 0o600);
  try {
    await writeAll(copy, staged.createReadStream({ start: 0, autoClose: false }), undefined);
    await finishFile(copy, owner);
  } finally {
    await copy.close();
  }
  await unlinkQuietly(stagedPath);
}

async function refuseDirectory(dir: FileHandle, name: string): Promise<void> {
  try {
    if ((await fs.promises.lstat(procPath(dir, name))).isDirectory()) {
      throw new InvalidPathError('the path names an existing directory');
    }
  } catch (err) {
    if (errnoOf(err) !== 'ENOENT') throw err;
  }
}

async function renameOver(dir: FileHandle, temp: string, name: string): Promise<void> {
  try {
    await fs.promises.rename(procPath(dir, temp), procPath(dir, name));
  } catch (err) {
    const code = errnoOf(err);
    if (code === 'EISDIR' || code === 'ENOTEMPTY' || code === 'EEXIST') {
      throw new InvalidPathError('the path names an existing directory');
    }
    throw err;
  }
}

async function writeAll(handle: FileHandle, source: FileSource, maxBytes: number | undefined): Promise<number> {
  let total = 0;
  const chunks: AsyncIterable<Buffer> | Iterable<Buffer> = Buffer.isBuffer(source) ? [source] : source;
  for await (const chunk of chunks) {
    total += chunk.length;
    if (maxBytes !== undefined && total > maxBytes) throw new UploadTooLargeError(maxBytes);
    let offset = 0;
    while (offset < chunk.length) {
      const { bytesWritten } = await handle.write(chunk, offset, chunk.length - offset);
      offset += bytesWritten;
    }
  }
  return total;
}

async function finishFile(handle: FileHandle, owner: Owner | undefined): Promise<void> {
  if (owner) await handle.chown(owner.uid, owner.gid);
  await handle.chmod(FILE_MODE);
}

function tempName(): string {
  return `.bubble-upload-${crypto.randomBytes(12).toString('hex')}`;
}

async function unlinkQuietly(p: string): Promise<void> {
  try {
    await fs.promises.unlink(p);
  } catch {
    // already gone, or never created
  }
}
