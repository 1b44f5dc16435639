// The cursor of GET /v1/sessions/{id}/files: the last path of the previous page, base64url. The
// server keeps no state per listing; the next page is the files whose path sorts after it. It
// is opaque to clients only by convention, so a cursor is checked like any other path.
import { validateRelativePath } from '../workspace/workspace-fs.js';
import { BadRequestError } from '../errors.js';

export function encodeListCursor(lastPath: string): string {
  return Buffer.from(lastPath, 'utf8').toString('base64url');
}

/** The path a cursor resumes after; 400 INVALID_CURSOR when it is not one this server made. */
export function decodeListCursor(cursor: string): string {
  const bad = () => new BadRequestError('INVALID_CURSOR', 'querystring.cursor: not a cursor from a previous page; start again without one');
  if (!/^[A-Za-z0-9_-]+$/.test(cursor)) throw bad();
  const bytes = Buffer.from(cursor, 'base64url');
  const path = bytes.toString('utf8');
  // Only the canonical encoding of valid UTF-8 round-trips.
  if (encodeListCursor(path) !== cursor) throw bad();
  try {
    validateRelativePath(path);
  } catch {
    throw bad();
  }
  return path;
}
