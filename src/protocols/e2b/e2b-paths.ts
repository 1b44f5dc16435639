// E2B paths → workspace paths. An E2B sandbox's home, /home/user, is the session's workspace:
// `/home/user/a/b` and the relative `a/b` both name the workspace file a/b. Any other absolute
// path is refused (never resolved on the host, never mapped elsewhere), and `.`/`..` components
// are refused by the workspace's own path rules rather than normalised away.
import { InvalidPathError, validateRelativePath } from '../../workspace/workspace-fs.js';
import { invalidArgument } from './e2b-errors.js';

export const E2B_HOME = '/home/user';

/** The workspace path components of an E2B path ([] for /home/user itself). */
export function workspaceParts(e2bPath: string, field = 'path'): string[] {
  let rel: string;
  if (e2bPath === E2B_HOME || e2bPath === `${E2B_HOME}/`) return [];
  if (e2bPath.startsWith(`${E2B_HOME}/`)) rel = e2bPath.slice(E2B_HOME.length + 1);
  else if (e2bPath.startsWith('/')) throw invalidArgument(`${field} '${e2bPath.slice(0, 200)}' is outside ${E2B_HOME}: this sandbox exposes only its workspace, ${E2B_HOME}`);
  else if (e2bPath.startsWith('~/')) rel = e2bPath.slice(2);
  else rel = e2bPath;
  rel = rel.replace(/\/+$/, '');
  if (rel === '' || rel === '.') return [];
  try {
    return validateRelativePath(rel);
  } catch (err) {
    if (err instanceof InvalidPathError) throw invalidArgument(`${field} '${e2bPath.slice(0, 200)}': ${err.message}`);
    throw err;
  }
}

export function e2bPathOf(relPath: string): string {
  return relPath === '' ? E2B_HOME : `${E2B_HOME}/${relPath}`;
}
