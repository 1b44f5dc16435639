// Walks a whole workspace tree without following links: each directory is opened with
// O_NOFOLLOW relative to its parent's descriptor and read through /proc/self/fd/<fd>, so a
// symlinked directory is never descended into, whatever the sandbox planted or swaps in.
//
// Descriptors stay bounded: a directory's handle is closed as soon as all of its
// subdirectories have been opened, and a LIFO scheduler keeps the walk depth-first, so a
// chain a/a/a/... holds about one handle and a bushy tree about one per level. Work is bounded
// by maxEntries (every entry seen counts) and maxDepth. Paths the API cannot address (over
// 1024 bytes, a backslash, names that are not UTF-8) come with relPath null.
import fs from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import {
  DIR_FLAGS, MAX_PATH_BYTES, errnoOf, isNotDirectoryErrno, procPath, readdirRaw, reopenDir, settleAll,
} from './safe-open.js';

const DIR_CONCURRENCY = 32;
/** Entries handed to the visitor at once; bounds memory and in-flight work in a huge directory. */
const ENTRY_CHUNK = 1024;

export interface WalkEntry {
  name: Buffer;
  /** The name decoded as UTF-8 (lossy when relPath is null). */
  text: string;
  /** The API path, or null when the API cannot address this entry. */
  relPath: string | null;
  kind: 'file' | 'directory' | 'symlink' | 'other';
}

/**
 * Called with the open handle of a directory and some of its entries. It must not leave work
 * that uses `dir` running after its promise settles (the handle is closed then).
 */
export type WalkVisitor = (dir: FileHandle, entries: WalkEntry[]) => Promise<void>;

export interface WalkOptions {
  maxEntries: number;
  /** Descend into directories the API cannot address (chown must reach them; listings need not). */
  descendUnaddressable: boolean;
  maxDepth: number;
  /** The API path of root itself, when it is a directory below the workspace root. */
  rootPath?: string;
}

interface DirRef { handle: FileHandle; refs: number; relPath: string | null; depth: number }
interface Pending { parent: DirRef; name: Buffer; relPath: string | null }

/** Visits every entry below root (not root itself). Returns whether maxEntries cut it short. */
export async function walkTree(root: FileHandle, onEntries: WalkVisitor, opts: WalkOptions): Promise<{ truncated: boolean }> {
  let seen = 0;
  let truncated = false;
  let failed = false;
  const run = createLifoLimiter(DIR_CONCURRENCY);

  const release = async (ref: DirRef): Promise<void> => {
    ref.refs -= 1;
    if (ref.refs === 0) await ref.handle.close();
  };

  const visit = async (ref: DirRef): Promise<Pending[]> => {
    try {
      if (failed || truncated) return [];
      let dirents = await readdirRaw(ref.handle);
      if (seen + dirents.length > opts.maxEntries) {
        dirents = dirents.slice(0, Math.max(0, opts.maxEntries - seen));
        truncated = true;
      }
      seen += dirents.length;
      // Entries are made a chunk at a time: a huge directory of long paths never has all of its
      // paths (up to 1 KiB each) alive at once, only its names.
      const subdirs: Pending[] = [];
      const descend = ref.depth + 1 < opts.maxDepth;
      for (let i = 0; i < dirents.length && !failed; i += ENTRY_CHUNK) {
        const entries = dirents.slice(i, i + ENTRY_CHUNK).map((d): WalkEntry => {
          const text = d.name.toString('utf8');
          return { name: d.name, text, kind: kindOf(d), relPath: ref.relPath === null ? null : childPath(ref.relPath, text, d.name) };
        });
        await onEntries(ref.handle, entries);
        for (const e of entries) {
          if (descend && e.kind === 'directory' && (e.relPath !== null || opts.descendUnaddressable)) subdirs.push({ parent: ref, name: e.name, relPath: e.relPath });
        }
      }
      ref.refs += subdirs.length; // taken synchronously with the return: each Pending holds one
      return subdirs;
    } catch (err) {
      failed = true;
      throw err;
    } finally {
      await release(ref);
    }
  };

  const openChild = async (item: Pending): Promise<Pending[]> => {
    let handle: FileHandle | undefined;
    try {
      if (!failed && !truncated) handle = await fs.promises.open(procPath(item.parent.handle, item.name), DIR_FLAGS);
    } catch (err) {
      // Replaced by a link or a file since readdir, or gone: nothing to descend into.
      const code = errnoOf(err);
      if (code !== 'ENOENT' && !isNotDirectoryErrno(code)) {
        failed = true;
        throw err;
      }
    } finally {
      await release(item.parent);
    }
    if (handle === undefined) return [];
    return visit({ handle, refs: 1, relPath: item.relPath, depth: item.parent.depth + 1 });
  };

  const spawn = async (item: Pending): Promise<void> => {
    const children = await run(() => openChild(item));
    await settleAll(children.map(spawn));
  };

  const top = await visit({ handle: await reopenDir(root), refs: 1, relPath: opts.rootPath ?? '', depth: 0 });
  await settleAll(top.map(spawn));
  return { truncated };
}

function kindOf(d: fs.Dirent<Buffer>): WalkEntry['kind'] {
  if (d.isFile()) return 'file';
  if (d.isDirectory()) return 'directory';
  if (d.isSymbolicLink()) return 'symlink';
  return 'other';
}

/** The child's API path, or null if the name is not UTF-8, holds a backslash, or the path gets too long. */
export function childPath(parent: string, text: string, name: Buffer): string | null {
  if (text.includes('\uFFFD') && !Buffer.from(text).equals(name)) return null;
  if (text.includes('\\')) return null;
  const full = parent === '' ? text : `${parent}/${text}`;
  return Buffer.byteLength(full) <= MAX_PATH_BYTES ? full : null;
}

/** Runs at most n tasks at once; the newest waiter goes first so the walk stays depth-first. */
function createLifoLimiter(n: number): <T>(task: () => Promise<T>) => Promise<T> {
  let running = 0;
  const waiting: (() => void)[] = [];
  return async (task) => {
    if (running >= n) await new Promise<void>((resolve) => waiting.push(resolve));
    else running += 1;
    try {
      return await task();
    } finally {
      const next = waiting.pop();
      if (next) next(); // hand our slot over
      else running -= 1;
    }
  };
}
