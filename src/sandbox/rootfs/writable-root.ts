// A session's writable root: kernel overlayfs mounted by the service (as root, on the host) over
// an idmapped view of the shared rootfs, its upper and work directories on a file system of the
// session's own (the root-layer quota image), at a mount point only the service can reach. The
// sandbox gets the merged tree's top-level directories read-write (see root-entries.ts); inside,
// it is root of its own user namespace, which is the session's unprivileged host uid outside.
// Measured on Debian 12's kernel: overlayfs accepts an idmapped lower layer; bwrap 0.8 has no
// --overlay options, and mounting inside the sandbox would need the mount syscalls the seccomp
// filter refuses, so the service mounts it (overlay-mount.py) and owns the mount.
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';

const HELPER = new URL('./overlay-mount.py', import.meta.url).pathname;
const TOOL_ENV = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };
const TIMEOUT_MS = 30_000;

/** Generic on purpose: the detail (host paths) goes to the caller's log. */
export class WritableRootError extends Error {
  override readonly name = 'WritableRootError';
  constructor(message: string, readonly detail: string) {
    super(message);
  }
}

export interface WritableRootSpec {
  /** The shared tree (read-only, owned by ROOTFS_UID). */
  lowerDir: string;
  /** Root of the session's root-layer file system: upper/ and work/ are made in it. */
  layerDir: string;
  /** Mount point of the merged tree (service-owned, 0700 parent chain is fine: bwrap gets fds). */
  mergedDir: string;
  /** The uid/gid owning the shared tree's files (ROOTFS_UID), shown as `owner` through the overlay. */
  treeOwnerId: number;
  owner: { uid: number; gid: number };
}

async function mountPointsOfType(fsType: string): Promise<Set<string>> {
  const text = await fs.readFile('/proc/self/mountinfo', 'utf8');
  const out = new Set<string>();
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-', 6);
    if (sep > 0 && f[sep + 1] === fsType && f[4] !== undefined) out.add(f[4].replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))));
  }
  return out;
}

export async function isWritableRootMounted(mergedDir: string): Promise<boolean> {
  const real = await fs.realpath(mergedDir).catch(() => null);
  return real !== null && (await mountPointsOfType('overlay')).has(real);
}

/** A directory of ours at `dir` (made when missing); anything else there is refused, never followed. */
async function plainDir(dir: string, mode: number, owner: { uid: number; gid: number } | null): Promise<void> {
  await fs.mkdir(dir, { mode }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
  const st = await fs.lstat(dir);
  if (!st.isDirectory()) throw new WritableRootError('the writable root layer is damaged', `${dir} is not a directory`);
  if (owner && (st.uid !== owner.uid || st.gid !== owner.gid)) await fs.lchown(dir, owner.uid, owner.gid);
}

/** Idempotent: an overlay already mounted there is kept. */
export async function mountWritableRoot(spec: WritableRootSpec): Promise<void> {
  if (await isWritableRootMounted(spec.mergedDir)) return;
  await plainDir(path.join(spec.layerDir, 'upper'), 0o755, spec.owner);
  await plainDir(path.join(spec.layerDir, 'work'), 0o700, null);
  await plainDir(spec.mergedDir, 0o755, null);
  const r = await execa('/usr/bin/python3', [HELPER, spec.lowerDir, path.join(spec.layerDir, 'upper'), path.join(spec.layerDir, 'work'), spec.mergedDir,
    String(spec.treeOwnerId), String(spec.owner.uid), String(spec.owner.gid)], { reject: false, timeout: TIMEOUT_MS, extendEnv: false, env: TOOL_ENV, stdin: 'ignore', cleanup: false });
  if (r.exitCode !== 0 || !(await isWritableRootMounted(spec.mergedDir))) {
    throw new WritableRootError('the writable root could not be mounted', `${r.stderr}${r.stdout}`.slice(0, 2000));
  }
}

/** Idempotent; lazily when busy (a sandbox still running keeps its copy of the mount until it ends). */
export async function unmountWritableRoot(mergedDir: string): Promise<void> {
  for (let i = 0; i < 4 && (await isWritableRootMounted(mergedDir)); i++) {
    const r = await execa('umount', [mergedDir], { reject: false, timeout: TIMEOUT_MS, extendEnv: false, env: TOOL_ENV, stdin: 'ignore', cleanup: false });
    if (r.exitCode !== 0) await execa('umount', ['-l', mergedDir], { reject: false, timeout: TIMEOUT_MS, extendEnv: false, env: TOOL_ENV, stdin: 'ignore', cleanup: false });
  }
}
