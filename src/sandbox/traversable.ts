// bwrap mounts bind sources by path, as the sandbox's unprivileged uid: every directory above a
// workspace or a venv must let others in (o+x). This finds the first one that does not.
import fs from 'node:fs';
import path from 'node:path';

/** The first directory on the way to `target` (itself included) that others cannot enter, or null. */
export function untraversableAncestor(target: string): string | null {
  if (process.getuid?.() !== 0) return null; // sandboxes then run as us: owner permissions apply
  let dir = path.resolve(target);
  for (;;) {
    try {
      if ((fs.statSync(dir).mode & 0o001) === 0) return dir;
    } catch {
      return null; // missing: reported elsewhere
    }
    const parent = path.dirname(dir);
    if (parent === dir) return null;
    dir = parent;
  }
}
