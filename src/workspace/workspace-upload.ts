// Uploads into a workspace, written so that nothing is ever written through a link:
// - stageFile() streams one upload part into a service-owned staging directory outside the
//   workspace (create-exclusive, 0600) within the byte budget the caller still has. Nothing in
//   the workspace changes while a request is read, so a 413 or 415 keeps nothing.
// - commitStagedFiles() moves the staged files in once the whole request is valid: for each it
//   walks to the target directory one component at a time (creating missing ones, refusing
//   links), renames the staged file to a fresh `.bubble-upload-<random>` name there (copying
//   instead when the staging directory is on another filesystem, e.g. a per-session quota
//   image) and sets owner and mode through the open descriptor; only when every file is in
//   place are those names renamed over the final ones. rename() replaces a link or FIFO itself,
//   never its target, and refuses to replace a directory. The staged files are consumed.
//   The sandbox may change the workspace at any moment in between: whatever it does, the
//   answer is a 4xx (see asWorkspaceError), never a 5xx.
// - writeFileSafe() does the same in one step from a Buffer or a stream.
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { PathConflictError, WorkspaceFullError } from '../errors.js';
import {
  CREATE_FLAGS, DIR_FLAGS, InvalidPathError, PathNotDirectoryError, READ_FLAGS, UploadTooLargeError, WorkspaceFileNotFoundError,
  errnoOf, isNotDirectoryErrno, openDirChain, procPath, reopenDir, validateRelativePath, withRoot,
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
    const dir = await openDirChain(rootHandle, parts.slice(0, -1), { create: opts.mkdirs, owner: opts.owner })
      .catch((err: unknown) => { throw asWorkspaceError(err, relPath); });
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
        throw asWorkspaceError(err, relPath);
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

export interface StagedCommit {
  /** Host path of a staged file (stageFile); consumed by the commit. */
  stagedPath: string;
  /** Where it goes in the workspace. */
  relPath: string;
}

/** Moves one staged file to `relPath` in the workspace (see commitStagedFiles). */
export async function commitStagedFile(
  stagedPath: string, root: WorkspaceRoot, relPath: string, opts: CommitOptions = {},
): Promise<WrittenFile> {
  const [written] = await commitStagedFiles(root, [{ stagedPath, relPath }], opts);
  return written as WrittenFile;
}

/** A staged file moved into its directory under a temporary name, not yet renamed to its own. */
interface Placed { dir: FileHandle; temp: string; name: string; path: string; size: number; renamed: boolean }

/**
 * Moves staged files into the workspace in two steps. First every file is put in its directory
 * under a fresh temporary name (creating missing directories): all that can run out of quota or
 * meet a path the sandbox changed happens here, and a failure keeps nothing of the request (the
 * temporary files and the directories it made, when still empty, are removed). Then each is
 * renamed to its name; a rename fails only when the sandbox changes that directory at that very
 * moment, and then the files renamed before it stay (the sandbox could as well change them a
 * moment after a 201). Whatever the sandbox did, a failure is a 4xx: ENOSPC/EDQUOT is
 * WorkspaceFullError, a directory gone or something else in the way is PathConflictError.
 */
export async function commitStagedFiles(root: WorkspaceRoot, files: readonly StagedCommit[], opts: CommitOptions = {}): Promise<WrittenFile[]> {
  const create = opts.mkdirs ?? true;
  return withRoot(root, async (rootHandle) => {
    const placed: Placed[] = [];
    const createdDirs: string[][] = [];
    let current = '';
    try {
      for (const { stagedPath, relPath } of files) {
        current = relPath;
        placed.push(await placeStaged(rootHandle, stagedPath, relPath, { owner: opts.owner, create, createdDirs }));
      }
      for (const p of placed) {
        current = p.path;
        await renameOver(p.dir, p.temp, p.name);
        p.renamed = true;
      }
      return placed.map((p) => ({ path: p.path, size: p.size }));
    } catch (err) {
      for (const p of placed) if (!p.renamed) await unlinkQuietly(procPath(p.dir, p.temp));
      await removeEmptyDirs(rootHandle, createdDirs);
      throw asWorkspaceError(err, current);
    } finally {
      await Promise.all(placed.map((p) => p.dir.close()));
    }
  });
}

interface PlaceOptions { owner: Owner | undefined; create: boolean; createdDirs: string[][] }

async function placeStaged(root: FileHandle, stagedPath: string, relPath: string, opts: PlaceOptions): Promise<Placed> {
  const parts = validateRelativePath(relPath);
  const name = parts[parts.length - 1] as string;
  const staged = await fs.promises.open(stagedPath, READ_FLAGS);
  try {
    const stat = await staged.stat();
    if (!stat.isFile()) throw new Error('staged upload is not a regular file');
    const dir = await openDirCreating(root, parts.slice(0, -1), opts);
    try {
      await refuseDirectory(dir, name);
      const temp = tempName();
      try {
        await moveOrCopy(staged, stagedPath, dir, temp, opts.owner);
      } catch (err) {
        await unlinkQuietly(procPath(dir, temp));
        throw err;
      }
      return { dir, temp, name, path: parts.join('/'), size: stat.size, renamed: false };
    } catch (err) {
      await dir.close();
      throw err;
    }
  } finally {
    await staged.close();
  }
}

/**
 * openDirChain, remembering the directories it made (so a failed request can take them back).
 * Each component is opened O_NOFOLLOW|O_DIRECTORY from the one before: a link or a file is
 * PathNotDirectoryError; a missing one is made when `create`, else WorkspaceFileNotFoundError.
 */
async function openDirCreating(root: FileHandle, components: readonly string[], opts: PlaceOptions): Promise<FileHandle> {
  let current = await reopenDir(root);
  try {
    for (let i = 0; i < components.length; i++) {
      const name = components[i] as string;
      let made = false;
      if (opts.create) {
        try {
          // mkdir never follows a link in its last component: a planted link gives EEXIST.
          await fs.promises.mkdir(procPath(current, name), 0o755);
          made = true;
          opts.createdDirs.push(components.slice(0, i + 1));
        } catch (err) {
          if (errnoOf(err) !== 'EEXIST') throw err;
        }
      }
      const next = await openChildDir(current, name, opts.create);
      await current.close();
      current = next;
      if (made) {
        // What sits at the name now is what we hold open, so these never touch a link target.
        await current.chmod(0o755);
        if (opts.owner) await current.chown(opts.owner.uid, opts.owner.gid);
      }
    }
    return current;
  } catch (err) {
    await current.close();
    throw err;
  }
}

async function openChildDir(parent: FileHandle, name: string, create: boolean): Promise<FileHandle> {
  try {
    return await fs.promises.open(procPath(parent, name), DIR_FLAGS);
  } catch (err) {
    const code = errnoOf(err);
    // Made a moment ago and gone already: the sandbox removed it (a conflict, not "not found").
    if (code === 'ENOENT' && !create) throw new WorkspaceFileNotFoundError('directory not found');
    if (isNotDirectoryErrno(code)) throw new PathNotDirectoryError();
    throw err;
  }
}

/** Removes the directories a failed request made, deepest first, only while they are empty. */
async function removeEmptyDirs(root: FileHandle, dirs: readonly string[][]): Promise<void> {
  for (const parts of [...dirs].reverse()) {
    try {
      const parent = await openDirChain(root, parts.slice(0, -1));
      try {
        // rmdir never follows a link, and refuses a directory the sandbox has put something in.
        await fs.promises.rmdir(procPath(parent, parts[parts.length - 1] as string));
      } finally {
        await parent.close();
      }
    } catch {
      // gone, replaced or not empty: the sandbox's now
    }
  }
}

/** errnos the sandbox can cause by changing the workspace while the service writes in it. */
const CONFLICT_ERRNOS = new Set(['ENOENT', 'ENOTDIR', 'ELOOP', 'EISDIR', 'ENOTEMPTY', 'EEXIST', 'EACCES', 'EPERM', 'EMLINK', 'EBUSY', 'ENXIO']);

/**
 * A file-system error met while writing into a workspace is the sandbox's doing, not the
 * service's: a full quota, or a directory removed or replaced between two steps. The typed
 * errors (bad path, not found, too large) pass as they are; anything else is a real fault (5xx).
 */
function asWorkspaceError(err: unknown, relPath: string): unknown {
  if (err instanceof InvalidPathError || err instanceof WorkspaceFileNotFoundError || err instanceof UploadTooLargeError) return err;
  const code = errnoOf(err);
  if (code === 'ENOSPC' || code === 'EDQUOT') return new WorkspaceFullError();
  if (code !== undefined && CONFLICT_ERRNOS.has(code)) return new PathConflictError(relPath);
  return err;
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
