// The shared layout of a quota image, for sessions with a writable root: one image per session
// whose space the workspace and the root layer (the overlay's upper and work dirs) share, so
// writes to `/` and to /workspace count against one quota. The image is mounted at
// `<dir>/image` (root-owned, 0700, inside the service-owned session dir: never bound into a
// sandbox) and holds `workspace/` and `root/`; `<dir>/workspace` is a bind mount of
// `<dir>/image/workspace`, so the files API, change tracking and the sandbox's /workspace see
// the workspace only, and the root layer is reachable only as the overlay built on it.
// The plain layout (the image's root is the workspace) stays for every other dir; a dir has the
// shared layout exactly when `<dir>/image` is a directory.
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { QuotaError, isQuotaMounted, mountQuotaWorkspace, unmountQuotaWorkspace, type QuotaLogger } from './workspace-quota.js';

const TOOL_ENV = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };
const TIMEOUT_MS = 30_000;

export const imageMountOf = (dir: string) => path.join(dir, 'image');
/** The root layer's directory (overlay upper/work dirs go below it) in the shared layout. */
export const imageRootLayerOf = (dir: string) => path.join(dir, 'image', 'root');
const imageWorkspaceOf = (dir: string) => path.join(dir, 'image', 'workspace');

export async function hasSharedLayout(dir: string): Promise<boolean> {
  const st = await fs.lstat(imageMountOf(dir)).catch(() => null);
  return st !== null && st.isDirectory();
}

async function tool(args: string[], logger: QuotaLogger | undefined, what: string): Promise<void> {
  const r = await execa('mount', args, { reject: false, timeout: TIMEOUT_MS, extendEnv: false, env: TOOL_ENV, stdin: 'ignore', cleanup: false });
  if (r.exitCode === 0) return;
  logger?.warn({ args, detail: `${r.stderr}${r.stdout}`.slice(0, 2000) }, `workspace quota: ${what}`);
  throw new QuotaError(what);
}

/** A directory of ours (never a link): the sandbox can write inside image/workspace, not beside it. */
async function requireDir(p: string, logger: QuotaLogger | undefined): Promise<void> {
  const st = await fs.lstat(p).catch(() => null);
  if (st === null || !st.isDirectory()) {
    logger?.warn({ dir: p }, 'workspace quota: the shared image is damaged');
    throw new QuotaError('the workspace image is invalid');
  }
}

async function bindWorkspace(dir: string, logger: QuotaLogger | undefined): Promise<void> {
  await requireDir(imageWorkspaceOf(dir), logger);
  await tool(['--bind', imageWorkspaceOf(dir), path.join(dir, 'workspace')], logger, 'could not mount the workspace');
}

/**
 * Turns the plain layout of a new, empty workspace (its image mounted on `<dir>/workspace`) into
 * the shared one. The image stays attached throughout (bound at `<dir>/image` before the
 * workspace mount goes), so no loop device is released or set up again.
 */
export async function convertToSharedLayout(dir: string, logger?: QuotaLogger): Promise<void> {
  const workspace = path.join(dir, 'workspace');
  const image = imageMountOf(dir);
  if (!(await isQuotaMounted(workspace)) || (await fs.readdir(workspace)).length > 0) {
    throw new QuotaError('the workspace is not a new quota workspace');
  }
  const st = await fs.lstat(workspace);
  await fs.mkdir(image, { mode: 0o700 });
  await tool(['--bind', workspace, image], logger, 'could not mount the workspace image');
  const u = await execa('umount', [workspace], { reject: false, timeout: TIMEOUT_MS, extendEnv: false, env: TOOL_ENV, stdin: 'ignore', cleanup: false });
  if (u.exitCode !== 0 || (await isQuotaMounted(workspace))) {
    logger?.warn({ workspace, detail: `${u.stderr}`.slice(0, 500) }, 'workspace quota: could not unmount the workspace');
    throw new QuotaError('could not unmount the workspace');
  }
  // The image's root is the service's now; the workspace keeps the owner and mode it had.
  await fs.lchown(image, 0, 0);
  await fs.chmod(image, 0o700);
  await fs.mkdir(imageWorkspaceOf(dir), { mode: 0o755 });
  await fs.lchown(imageWorkspaceOf(dir), st.uid, st.gid);
  await fs.chmod(imageWorkspaceOf(dir), st.mode & 0o7777);
  await fs.mkdir(imageRootLayerOf(dir), { mode: 0o700 });
  await bindWorkspace(dir, logger);
}

/** Whether the visible mount on `<dir>/workspace` is the bind of the image's workspace/ (not its root). */
async function isWorkspaceBind(dir: string): Promise<boolean> {
  const real = await fs.realpath(path.join(dir, 'workspace')).catch(() => null);
  const text = await fs.readFile('/proc/self/mountinfo', 'utf8');
  const top = text.split('\n').map((l) => l.split(' ')).filter((f) => f[4] === real).at(-1);
  return top?.[3] === '/workspace';
}

async function umountOnce(p: string, logger: QuotaLogger | undefined): Promise<void> {
  const r = await execa('umount', [p], { reject: false, timeout: TIMEOUT_MS, extendEnv: false, env: TOOL_ENV, stdin: 'ignore', cleanup: false });
  if (r.exitCode === 0) return;
  logger?.warn({ path: p, detail: `${r.stderr}`.slice(0, 500) }, 'workspace quota: busy, unmounting lazily');
  await execa('umount', ['-l', p], { reject: false, timeout: TIMEOUT_MS, extendEnv: false, env: TOOL_ENV, stdin: 'ignore', cleanup: false });
}

/** workspace/ and root/ (made again when a crash cut a conversion short, while both were still empty). */
async function ensureLayoutDirs(dir: string): Promise<void> {
  const image = imageMountOf(dir);
  await fs.lchown(image, 0, 0);
  await fs.chmod(image, 0o700);
  for (const [sub, mode] of [[imageWorkspaceOf(dir), 0o755], [imageRootLayerOf(dir), 0o700]] as const) {
    await fs.mkdir(sub, { mode }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
  }
}

/** After a restart, or a kept workspace re-attached: the image at `<dir>/image`, then the bind. */
export async function mountSharedLayout(dir: string, logger?: QuotaLogger): Promise<void> {
  const workspace = path.join(dir, 'workspace');
  if (!(await isQuotaMounted(imageMountOf(dir)))) {
    // A bind left without its image mount (an interrupted unmount) would hold the loop device.
    if (await isQuotaMounted(workspace)) await unmountQuotaWorkspace(workspace, logger);
    if (!(await mountQuotaWorkspace(dir, imageMountOf(dir), logger))) throw new QuotaError('the workspace image is missing');
  }
  // A conversion cut short may have left the image's root on the workspace: never expose root/.
  for (let i = 0; i < 4 && (await isQuotaMounted(workspace)) && !(await isWorkspaceBind(dir)); i++) await umountOnce(workspace, logger);
  await ensureLayoutDirs(dir);
  if (!(await isQuotaMounted(workspace))) await bindWorkspace(dir, logger);
}

/** Unmounts `<dir>/image` only (lazily when busy); the workspace's own unmount releases the image. */
export async function detachImageMount(dir: string, logger?: QuotaLogger): Promise<void> {
  const image = imageMountOf(dir);
  for (let i = 0; i < 4 && (await isQuotaMounted(image)); i++) await umountOnce(image, logger);
}
