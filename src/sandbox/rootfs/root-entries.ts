// The top-level entries of a root filesystem (an imported tree, or a session's writable overlay
// over one) as the sandbox's `/` is built from them. Read at each start, since a writable root's
// top level can change between executions; the directories are then opened O_PATH|O_NOFOLLOW by
// spawn, so an entry swapped for a symlink in between fails closed instead of binding its target.
import fs from 'node:fs';
import { ROOT_NAMES_PROVIDED, type RootEntry } from '../bwrap-args.js';

export function readRootEntries(rootDir: string, writable: boolean): RootEntry[] {
  const entries: RootEntry[] = [];
  for (const d of fs.readdirSync(rootDir, { withFileTypes: true })) {
    if (ROOT_NAMES_PROVIDED.has(d.name)) continue;
    if (d.isDirectory()) entries.push({ kind: 'dir', name: d.name, writable });
    else if (d.isSymbolicLink()) entries.push({ kind: 'symlink', name: d.name, target: fs.readlinkSync(`${rootDir}/${d.name}`) });
    // Plain files at the top level (.dockerenv) are left out: only a directory can be bound from a descriptor here.
  }
  return entries.sort((a, b) => (a.name < b.name ? -1 : 1));
}
