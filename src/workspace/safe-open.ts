// Primitives for touching a workspace that sandboxed code can write. The sandbox can plant
// symlinks (`out.txt -> /etc/shadow`, `d -> /etc`), FIFOs and sockets anywhere in it, and the
// service often runs as root, so no host-side operation may resolve a workspace path in one go.
// Node has no openat(), so we walk one component at a time through
// `/proc/self/fd/<dirfd>/<component>`: the kernel follows the magic link to the directory we
// hold open and then looks up the single component, which O_NOFOLLOW stops if it is a link.
// A directory held open stays the same inode even if the sandbox renames things around it.
import fs from 'node:fs';
import type { Dirent } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';

const C = fs.constants;
/** O_PATH is missing from fs.constants; this is its Linux value. */
export const O_PATH = 0o10000000;
/** Every directory component: never a link, and O_NONBLOCK so nothing special can stall us. */
export const DIR_FLAGS = C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW | C.O_NONBLOCK;
/** Final files for reading: a FIFO opens at once (and is then refused), a link fails ELOOP. */
export const READ_FLAGS = C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK;
/** New files: O_EXCL refuses any existing name, including a dangling link. */
export const CREATE_FLAGS = C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW | C.O_NONBLOCK;

export const MAX_PATH_BYTES = 1024;
export const MAX_COMPONENT_BYTES = 255;

export class InvalidPathError extends Error {
  readonly code = 'INVALID_PATH';
  readonly statusCode = 400;
  override name = 'InvalidPathError';
}

/** A component before the last is a symlink, a file or anything else but a directory. */
export class PathNotDirectoryError extends InvalidPathError {
  override name = 'PathNotDirectoryError';
  constructor() {
    super('a parent component of the path is not a directory (symbolic links are never followed)');
  }
}

export class WorkspaceFileNotFoundError extends Error {
  readonly code = 'FILE_NOT_FOUND';
  readonly statusCode = 404;
  override name = 'WorkspaceFileNotFoundError';
  constructor(message = 'file not found') {
    super(message);
  }
}

export class UploadTooLargeError extends Error {
  readonly code = 'UPLOAD_TOO_LARGE';
  readonly statusCode = 413;
  override name = 'UploadTooLargeError';
  constructor(readonly maxBytes: number) {
    super(`upload exceeds the limit of ${maxBytes} bytes`);
  }
}

export interface Owner {
  uid: number;
  gid: number;
}

/** A workspace root: a trusted host path, or a directory handle the caller keeps owning. */
export type WorkspaceRoot = string | FileHandle;

const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

/** Splits an API path into its components, or throws InvalidPathError saying what is wrong. */
export function validateRelativePath(p: string): string[] {
  if (typeof p !== 'string' || p.length === 0) throw new InvalidPathError('path is empty');
  if (p.includes('\0')) throw new InvalidPathError('path contains a NUL byte');
  if (p.includes('\\')) throw new InvalidPathError('path contains a backslash');
  if (p.startsWith('/')) throw new InvalidPathError('path must be relative (no leading /)');
  // A lone surrogate would be encoded as U+FFFD and name a different file than the one asked for.
  if (LONE_SURROGATE.test(p)) throw new InvalidPathError('path is not valid Unicode');
  if (Buffer.byteLength(p) > MAX_PATH_BYTES) {
    throw new InvalidPathError(`path is longer than ${MAX_PATH_BYTES} bytes`);
  }
  const parts = p.split('/');
  for (const part of parts) {
    if (part === '') throw new InvalidPathError('path contains an empty component');
    if (part === '.' || part === '..') throw new InvalidPathError(`'${part}' components are not allowed`);
    if (Buffer.byteLength(part) > MAX_COMPONENT_BYTES) {
      throw new InvalidPathError(`a path component is longer than ${MAX_COMPONENT_BYTES} bytes`);
    }
  }
  return parts;
}

/** `/proc/self/fd/<fd>[/<name>]`; Buffer names keep bytes that are not valid UTF-8 intact. */
export function procPath(dir: FileHandle): string;
export function procPath(dir: FileHandle, name: string): string;
export function procPath(dir: FileHandle, name: Buffer): Buffer;
export function procPath(dir: FileHandle, name?: string | Buffer): string | Buffer {
  const base = `/proc/self/fd/${dir.fd}`;
  if (name === undefined) return base;
  if (typeof name === 'string') return `${base}/${name}`;
  return Buffer.concat([Buffer.from(`${base}/`), name]);
}

export function errnoOf(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string'
    ? err.code
    : undefined;
}

/** ELOOP: the component is a symlink; ENOTDIR: it is something else that is not a directory. */
export function isNotDirectoryErrno(code: string | undefined): boolean {
  return code === 'ELOOP' || code === 'ENOTDIR';
}

/** Opens the workspace directory itself. Its parent is service-owned, so only the last component can have been tampered with. */
export async function openWorkspaceRoot(dir: string): Promise<FileHandle> {
  return fs.promises.open(dir, DIR_FLAGS);
}

/** A second descriptor for a directory already held (no O_NOFOLLOW: the last component is the magic link itself). */
export async function reopenDir(dir: FileHandle): Promise<FileHandle> {
  return fs.promises.open(procPath(dir), C.O_RDONLY | C.O_DIRECTORY | C.O_NONBLOCK);
}

/** readdir keeping raw name bytes: a name that is not UTF-8 must still be removable. */
export async function readdirRaw(dir: FileHandle): Promise<Dirent<Buffer>[]> {
  return fs.promises.readdir(procPath(dir), { withFileTypes: true, encoding: 'buffer' });
}

/** Runs fn with a root handle, opening (and closing) it when given a path. */
export async function withRoot<T>(root: WorkspaceRoot, fn: (handle: FileHandle) => Promise<T>): Promise<T> {
  if (typeof root !== 'string') return fn(root);
  const handle = await openWorkspaceRoot(root);
  try {
    return await fn(handle);
  } finally {
    await handle.close();
  }
}

export interface OpenDirOptions {
  /** Create missing directories (mode 0o755), chowned to owner when given. */
  create?: boolean;
  owner?: Owner | undefined;
}

/**
 * Walks `components` down from `root` and returns a new handle on the last one (the caller
 * closes it). Missing → WorkspaceFileNotFoundError; a link or non-directory → PathNotDirectoryError.
 */
export async function openDirChain(
  root: FileHandle,
  components: readonly string[],
  opts: OpenDirOptions = {},
): Promise<FileHandle> {
  let current = await reopenDir(root);
  try {
    for (const name of components) {
      const next = await openChildDir(current, name, opts);
      await current.close();
      current = next;
    }
    return current;
  } catch (err) {
    await current.close();
    throw err;
  }
}

async function openChildDir(parent: FileHandle, name: string, opts: OpenDirOptions): Promise<FileHandle> {
  let created = false;
  if (opts.create) {
    try {
      // mkdir never follows a link in its last component: a planted link gives EEXIST.
      await fs.promises.mkdir(procPath(parent, name), 0o755);
      created = true;
    } catch (err) {
      if (errnoOf(err) !== 'EEXIST') throw err;
    }
  }
  let child: FileHandle;
  try {
    child = await fs.promises.open(procPath(parent, name), DIR_FLAGS);
  } catch (err) {
    const code = errnoOf(err);
    if (code === 'ENOENT') throw new WorkspaceFileNotFoundError('directory not found');
    if (isNotDirectoryErrno(code)) throw new PathNotDirectoryError();
    throw err;
  }
  if (created) {
    try {
      // Whatever sits at the name now is what we hold open, so these never touch a link target.
      await child.chmod(0o755);
      if (opts.owner) await child.chown(opts.owner.uid, opts.owner.gid);
    } catch (err) {
      await child.close();
      throw err;
    }
  }
  return child;
}

/** Opens `name` in `dir` for reading if, and only if, it is a regular file (not a link, FIFO, socket, device or directory). */
export async function openRegularFileAt(dir: FileHandle, name: string): Promise<{ handle: FileHandle; stat: fs.Stats }> {
  let handle: FileHandle;
  try {
    handle = await fs.promises.open(procPath(dir, name), READ_FLAGS);
  } catch (err) {
    const code = errnoOf(err);
    if (code === 'ENOENT' || code === 'ELOOP' || code === 'ENXIO' || code === 'ENODEV') {
      throw new WorkspaceFileNotFoundError();
    }
    throw err;
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw new WorkspaceFileNotFoundError();
    return { handle, stat };
  } catch (err) {
    await handle.close();
    throw err;
  }
}

/**
 * Like Promise.all, but waits for every promise before rethrowing the first failure. Operations
 * name files through /proc/self/fd/<n>: a handle closed while one is still queued could see
 * its number reused by another directory, so nothing may close a handle while work is in flight.
 */
export async function settleAll<T>(promises: Iterable<Promise<T>>): Promise<T[]> {
  const results = await Promise.allSettled(promises);
  const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failure) throw failure.reason;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}
