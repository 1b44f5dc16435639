// Brings a workspace snapshot up to date from the names the change tracker reported, instead of
// scanning the whole tree: every reported name is forgotten together with everything the
// snapshot held below it, then looked at again (a file is lstat-ed, a directory walked), so
// the result equals a scan whatever order creates, renames and deletes came in. Nothing here
// follows a link: directories are opened from the root with O_NOFOLLOW, names lstat-ed.
//
// Hard links: a write through one name reports only that name, and a link made and removed again
// reports only itself, yet every name of the inode changes (its times, its link count). So the
// names of the snapshot whose inode was touched are looked at again too, unless the inode is
// known to have a single name.
import fs from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import type { PathBudget } from './bounded-paths.js';
import type { DirtyDir } from './change-tracker.js';
import { DIR_FLAGS, PathNotDirectoryError, WorkspaceFileNotFoundError, errnoOf, isNotDirectoryErrno, openDirChain, procPath, withRoot } from './safe-open.js';
import { diffSnapshots, entryOf, lstatEach, scanWorkspace, type SnapshotDiff, type SnapshotEntry, type WorkspaceSnapshot } from './workspace-scan.js';
import { childPath } from './workspace-walk.js';

/**
 * Updates `snapshot` in place and returns what changed. On null (the snapshot would outgrow
 * maxEntries) or an error the snapshot is left as it was, and the caller scans instead.
 */
export async function applyChanges(
  workspaceDir: string, snapshot: WorkspaceSnapshot, dirty: readonly DirtyDir[], touchedInos: readonly number[],
  opts: { maxEntries: number; budget?: PathBudget },
): Promise<SnapshotDiff | null> {
  const roots = outermost(apiPaths(dirty));
  const old = new Map<string, SnapshotEntry>();
  const forget = (p: string) => {
    const entry = snapshot.get(p);
    if (entry !== undefined) old.set(p, entry);
  };
  for (const p of roots) forget(p);
  const dirRoots = new Set(roots.filter((p) => snapshot.dirs.has(p)));
  if (dirRoots.size > 0) for (const key of snapshot.keys()) if (underAny(key, dirRoots)) forget(key);

  const fresh = new Map<string, SnapshotEntry>();
  let truncated = false;
  await withRoot(workspaceDir, async (root) => {
    const budget = () => opts.maxEntries - (snapshot.size - old.size) - fresh.size;
    truncated = await lookAt(root, roots, fresh, budget);
    const linked = inodesToFollow([...old.values(), ...fresh.values()], touchedInos);
    if (linked.size === 0) return;
    const others = [...snapshot].filter(([p, e]) => linked.has(e.ino) && !old.has(p) && !fresh.has(p)).map(([p]) => p);
    for (const p of others) forget(p);
    truncated = (await lookAt(root, others, fresh, budget)) || truncated;
  });
  if (truncated || snapshot.size - old.size + fresh.size > opts.maxEntries) return null;
  for (const p of old.keys()) snapshot.delete(p);
  if (dirRoots.size > 0) for (const dir of [...snapshot.dirs]) if (dirRoots.has(dir) || underAny(dir, dirRoots)) snapshot.dirs.delete(dir);
  for (const [p, entry] of fresh) snapshot.record(p, entry);
  return diffSnapshots(old, fresh, opts.budget);
}

/**
 * Inodes whose other names in the snapshot must be looked at: every one with several links
 * among the entries just looked at, and every touched one, except those the entries show with a
 * single link only (then no other name exists: the snapshot's link counts are current as of the
 * last look, and a link made since would show up here with a count above one).
 */
function inodesToFollow(entries: readonly SnapshotEntry[], touched: readonly number[]): Set<number> {
  const single = new Set<number>();
  const multi = new Set<number>();
  for (const e of entries) (e.nlink > 1 ? multi : single).add(e.ino);
  const out = new Set(multi);
  for (const ino of touched) if (!single.has(ino) || multi.has(ino)) out.add(ino);
  return out;
}

/** lstat each path; a file goes into `into`, a directory is walked. Returns whether the budget cut a walk short. */
async function lookAt(root: FileHandle, paths: readonly string[], into: Map<string, SnapshotEntry>, budget: () => number): Promise<boolean> {
  let truncated = false;
  for (const [parent, names] of groupByParent(paths)) {
    let dir: FileHandle;
    try {
      dir = await openDirChain(root, parent === '' ? [] : parent.split('/'));
    } catch (err) {
      if (err instanceof WorkspaceFileNotFoundError || err instanceof PathNotDirectoryError) continue; // gone, or now a link
      throw err;
    }
    try {
      const subdirs: string[] = [];
      await lstatEach(names.map((n) => procPath(dir, n)), (i, st) => {
        const name = names[i] as string;
        const p = parent === '' ? name : `${parent}/${name}`;
        if (st.isFile()) into.set(p, entryOf(st));
        else if (st.isDirectory()) subdirs.push(name);
      });
      for (const name of subdirs) {
        let sub: FileHandle;
        try {
          sub = await fs.promises.open(procPath(dir, name), DIR_FLAGS);
        } catch (err) {
          const code = errnoOf(err);
          if (code === 'ENOENT' || isNotDirectoryErrno(code)) continue;
          throw err;
        }
        try {
          const rootPath = parent === '' ? name : `${parent}/${name}`;
          const scanned = await scanWorkspace(sub, { maxEntries: Math.max(0, budget()), rootPath });
          for (const { path, size, mtimeMs, ctimeMs, ino, nlink } of scanned.files) into.set(path, { size, mtimeMs, ctimeMs, ino, nlink });
          truncated ||= scanned.truncated;
        } finally {
          await sub.close();
        }
      }
    } finally {
      await dir.close();
    }
  }
  return truncated;
}

/** The reported names as API paths; names the API cannot address are left out, as a scan leaves them. */
function apiPaths(dirty: readonly DirtyDir[]): Set<string> {
  const out = new Set<string>();
  for (const { dir, names } of dirty) {
    let dirPath: string | null = '';
    if (dir.length > 0) {
      for (const part of splitBytes(dir)) {
        dirPath = part.length === 0 ? null : childPath(dirPath, part.toString('utf8'), part);
        if (dirPath === null) break;
      }
    }
    if (dirPath === null) continue;
    for (const name of names) {
      if (name.length === 0 || name.includes(0x2f)) continue;
      const p = childPath(dirPath, name.toString('utf8'), name);
      if (p !== null) out.add(p);
    }
  }
  return out;
}

function splitBytes(b: Buffer): Buffer[] {
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = b.indexOf(0x2f); i >= 0; i = b.indexOf(0x2f, start)) {
    parts.push(b.subarray(start, i));
    start = i + 1;
  }
  parts.push(b.subarray(start));
  return parts;
}

/** Drops every path below another one of the set: looking at the ancestor covers it. */
function outermost(paths: Set<string>): string[] {
  return [...paths].filter((p) => !underAny(p, paths));
}

function underAny(p: string, dirs: ReadonlySet<string>): boolean {
  for (let i = p.lastIndexOf('/'); i > 0; i = p.lastIndexOf('/', i - 1)) if (dirs.has(p.slice(0, i))) return true;
  return false;
}

function groupByParent(paths: readonly string[]): Map<string, string[]> {
  const groups = new Map<string, string[]>();
  for (const p of paths) {
    const i = p.lastIndexOf('/');
    const parent = i < 0 ? '' : p.slice(0, i);
    const list = groups.get(parent);
    if (list) list.push(p.slice(i + 1));
    else groups.set(parent, [p.slice(i + 1)]);
  }
  return groups;
}
