// Entries of a workspace as a file browser sees them (the E2B filesystem service's Stat, ListDir,
// MakeDir and Move): every parent is walked from a directory descriptor with O_NOFOLLOW
// (safe-open.ts), and the last component is only ever lstat-ed, readlink-ed, mkdir-ed or renamed,
// calls that act on a link itself, never on its target. Hand-written for the same reason as
// safe-open.ts: it is the security boundary between the host and what the sandbox planted.
import fs from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import {
  InvalidPathError, PathNotDirectoryError, WorkspaceFileNotFoundError, errnoOf, openDirChain, procPath, withRoot,
  type Owner, type WorkspaceRoot,
} from './safe-open.js';
import { walkTree, type WalkVisitor } from './workspace-walk.js';

export interface EntryInfo {
  /** Path relative to the workspace root ('' is the root itself). */
  path: string;
  name: string;
  kind: 'file' | 'directory' | 'symlink' | 'other';
  size: number;
  /** st_mode (type and permission bits). */
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
  /** The link's own text, for a symlink (never followed). */
  linkTarget: string | null;
}

function kindOf(st: fs.Stats): EntryInfo['kind'] {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'directory';
  if (st.isSymbolicLink()) return 'symlink';
  return 'other';
}

async function describe(dir: FileHandle, name: string, relPath: string): Promise<EntryInfo> {
  const at = procPath(dir, name);
  let st: fs.Stats;
  try {
    st = await fs.promises.lstat(at);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') throw new WorkspaceFileNotFoundError();
    throw err;
  }
  const kind = kindOf(st);
  const linkTarget = kind === 'symlink' ? await fs.promises.readlink(at).catch(() => null) : null;
  return { path: relPath, name, kind, size: st.size, mode: st.mode, uid: st.uid, gid: st.gid, mtime: st.mtime, linkTarget };
}

/** A link or a file on the way means the entry is not there: not found, never followed. */
async function openParent(root: FileHandle, parts: readonly string[], opts: { create?: boolean; owner?: Owner | undefined } = {}): Promise<FileHandle> {
  try {
    return await openDirChain(root, parts, opts);
  } catch (err) {
    if (err instanceof PathNotDirectoryError && !opts.create) throw new WorkspaceFileNotFoundError();
    throw err;
  }
}

/** The entry at `parts` (validated components; empty: the workspace root). */
export async function statEntrySafe(root: WorkspaceRoot, parts: readonly string[]): Promise<EntryInfo> {
  return withRoot(root, async (rootHandle) => {
    if (parts.length === 0) {
      const st = await rootHandle.stat();
      return { path: '', name: '', kind: 'directory', size: st.size, mode: st.mode, uid: st.uid, gid: st.gid, mtime: st.mtime, linkTarget: null };
    }
    const dir = await openParent(rootHandle, parts.slice(0, -1));
    try {
      return await describe(dir, parts[parts.length - 1] as string, parts.join('/'));
    } finally {
      await dir.close();
    }
  });
}

/**
 * The entries below the directory at `parts`, `depth` levels deep (1: its children), at most
 * `maxEntries` of them (more: `truncated`). Links are listed, never descended into.
 */
export async function listDirSafe(
  root: WorkspaceRoot, parts: readonly string[], depth: number, maxEntries: number,
): Promise<{ entries: EntryInfo[]; truncated: boolean }> {
  return withRoot(root, async (rootHandle) => {
    let dir: FileHandle;
    try {
      dir = await openDirChain(rootHandle, parts);
    } catch (err) {
      if (err instanceof PathNotDirectoryError) throw new InvalidPathError('the path is not a directory');
      throw err;
    }
    const entries: EntryInfo[] = [];
    const visitor: WalkVisitor = async (handle, batch) => {
      for (const e of batch) {
        if (e.relPath === null) continue; // a name the API cannot address
        try {
          entries.push(await describe(handle, e.text, e.relPath));
        } catch (err) {
          if (!(err instanceof WorkspaceFileNotFoundError)) throw err; // gone since readdir
        }
      }
    };
    try {
      const { truncated } = await walkTree(dir, visitor, { maxEntries, descendUnaddressable: false, maxDepth: depth, rootPath: parts.join('/') });
      entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
      return { entries, truncated };
    } finally {
      await dir.close();
    }
  });
}

/** mkdir -p; false when the directory was already there (anything else in the way: PathNotDirectoryError). */
export async function makeDirSafe(root: WorkspaceRoot, parts: readonly string[], owner: Owner | undefined): Promise<boolean> {
  return withRoot(root, async (rootHandle) => {
    const parent = await openDirChain(rootHandle, parts.slice(0, -1), { create: true, owner });
    const name = parts[parts.length - 1] as string;
    try {
      try {
        await fs.promises.mkdir(procPath(parent, name), 0o755);
      } catch (err) {
        if (errnoOf(err) !== 'EEXIST') throw err;
        const st = await fs.promises.lstat(procPath(parent, name));
        if (!st.isDirectory()) throw new InvalidPathError('the path exists and is not a directory');
        return false;
      }
      // Opened without following: whatever is at the name now is what gets its owner.
      const made = await openDirChain(parent, [name]);
      try {
        await made.chmod(0o755);
        if (owner) await made.chown(owner.uid, owner.gid);
      } finally {
        await made.close();
      }
      return true;
    } finally {
      await parent.close();
    }
  });
}

/** rename(2) of the entry itself (a link moves as a link); the destination's parents are made. */
export async function moveEntrySafe(root: WorkspaceRoot, from: readonly string[], to: readonly string[], owner: Owner | undefined): Promise<void> {
  await withRoot(root, async (rootHandle) => {
    const src = await openParent(rootHandle, from.slice(0, -1));
    try {
      const dst = await openDirChain(rootHandle, to.slice(0, -1), { create: true, owner });
      try {
        await fs.promises.rename(procPath(src, from[from.length - 1] as string), procPath(dst, to[to.length - 1] as string));
      } catch (err) {
        if (errnoOf(err) === 'ENOENT') throw new WorkspaceFileNotFoundError();
        throw err;
      } finally {
        await dst.close();
      }
    } finally {
      await src.close();
    }
  });
}
