// Host-side file operations on a session workspace, and the one module the rest of the
// service imports them from. Every path is validated, then walked one component at a time from
// a directory descriptor (safe-open.ts), so a link the sandbox planted anywhere on the path is
// refused, never followed, and a FIFO never blocks us.
//
//   safe-open.ts         path rules, errors, the /proc/self/fd/<fd>/<name> walk
//   workspace-upload.ts  writeFileSafe, stageFile + commitStagedFile (the staging design)
//   workspace-remove.ts  removeTreeSafe: recursive delete that never follows a link
//   workspace-walk.ts    walkTree: bounded, link-free traversal
//   workspace-scan.ts    listFiles(Page), snapshotWorkspace + diffSnapshots, chownTreeSafe
//   bounded-paths.ts     the first paths in byte order within a count and byte budget
import fs from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import {
  InvalidPathError, PathNotDirectoryError, WorkspaceFileNotFoundError, errnoOf, openDirChain, openRegularFileAt,
  procPath, validateRelativePath, withRoot,
} from './safe-open.js';
import type { WorkspaceRoot } from './safe-open.js';
import { removeDirAt } from './workspace-remove.js';

export {
  InvalidPathError, PathNotDirectoryError, UploadTooLargeError, WorkspaceFileNotFoundError,
  openWorkspaceRoot, validateRelativePath, MAX_PATH_BYTES, MAX_COMPONENT_BYTES,
} from './safe-open.js';
export type { Owner, WorkspaceRoot } from './safe-open.js';
export { commitStagedFile, commitStagedFiles, stageFile, writeFileSafe } from './workspace-upload.js';
export type { CommitOptions, FileSource, StagedCommit, StagedFile, WriteOptions, WrittenFile } from './workspace-upload.js';
export { removeTreeSafe } from './workspace-remove.js';
export { chownTreeSafe, diffSnapshots, listFiles, listFilesPage, scanWorkspace, snapshotWorkspace, WorkspaceSnapshot } from './workspace-scan.js';
export type { ScannedFile, SnapshotDiff, SnapshotEntry, WorkspaceFileInfo } from './workspace-scan.js';

export interface OpenedFile {
  /** Open for reading; the caller closes it (e.g. after streaming it). */
  handle: FileHandle;
  size: number;
  mtime: Date;
}

/** Opens a workspace file for download. Anything but a regular file reached without links is "not found". */
export async function readFileSafe(root: WorkspaceRoot, relPath: string): Promise<OpenedFile> {
  const parts = validateRelativePath(relPath);
  const name = parts[parts.length - 1] as string;
  return withRoot(root, async (rootHandle) => {
    const dir = await openParentForRead(rootHandle, parts);
    try {
      const { handle, stat } = await openRegularFileAt(dir, name);
      return { handle, size: stat.size, mtime: stat.mtime };
    } finally {
      await dir.close();
    }
  });
}

export interface DeleteOptions {
  /** Also remove a directory with everything in it (never following links). Default false. */
  recursive?: boolean;
}

/** Removes a file, or a link/FIFO/socket entry itself (never a link's target). */
export async function deleteFileSafe(root: WorkspaceRoot, relPath: string, opts: DeleteOptions = {}): Promise<void> {
  const parts = validateRelativePath(relPath);
  const name = parts[parts.length - 1] as string;
  await withRoot(root, async (rootHandle) => {
    const dir = await openParentForRead(rootHandle, parts);
    try {
      let isDir: boolean;
      try {
        isDir = (await fs.promises.lstat(procPath(dir, name))).isDirectory();
        if (!isDir) await fs.promises.unlink(procPath(dir, name));
      } catch (err) {
        const code = errnoOf(err);
        if (code === 'ENOENT') throw new WorkspaceFileNotFoundError();
        if (code !== 'EISDIR') throw err;
        isDir = true;
      }
      if (!isDir) return;
      if (!opts.recursive) throw new InvalidPathError('the path names a directory');
      await removeDirAt(dir, name);
    } finally {
      await dir.close();
    }
  });
}

/** For reads and deletes a link on the way means the file is not in the workspace: 404, not 400. */
async function openParentForRead(root: FileHandle, parts: readonly string[]): Promise<FileHandle> {
  try {
    return await openDirChain(root, parts.slice(0, -1));
  } catch (err) {
    if (err instanceof PathNotDirectoryError) throw new WorkspaceFileNotFoundError();
    throw err;
  }
}
