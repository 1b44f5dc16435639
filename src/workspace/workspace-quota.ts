// Per-session disk quota: the workspace directory is the mount point of a sparse ext4 image of
// N bytes, so a write past N fails with ENOSPC inside the sandbox and the host never gives the
// session more than N bytes. The image lives in the session dir (service-owned, 0711), which the
// sandbox cannot write, so neither the image nor the mount point can be swapped for a link.
// The host-side image must never be mounted twice through two loop devices (two ext4 instances
// on one file corrupt it), so a mount is refused while any loop device still holds the image.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';

export const QUOTA_IMAGE_NAME = 'workspace.img';
/** mkfs.ext4 needs some room for its metadata; below this the quota would be mostly overhead. */
export const MIN_QUOTA_BYTES = 1024 * 1024;

// No journal: a scratch workspace does not need one and it would cost 1 MiB of an 8 MiB quota.
// lazy_itable_init=0 costs nothing on a sparse file (mke2fs punches holes) and means the kernel's
// lazyinit thread never writes into the image after mount. -m 0: the owner gets all of it.
const MKFS_ARGS = ['-q', '-F', '-m', '0', '-O', '^has_journal'];
const MOUNT_OPTIONS = 'loop,nosuid,nodev';
const TOOL_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const TOOL_TIMEOUT_MS = 30_000;
const FSCK_TIMEOUT_MS = 120_000;
// The kernel detaches an autoclear loop device asynchronously after the last close.
const LOOP_RELEASE_WAIT_MS = 3000;

export interface QuotaStatus { available: boolean; reason: string | null }
export interface QuotaOwner { uid: number; gid: number }
export interface QuotaLogger { warn(obj: object, msg?: string): void }

/** Messages are generic on purpose: host paths go to the logger, never to HTTP clients. */
export class QuotaError extends Error {
  readonly code = 'WORKSPACE_QUOTA';
  readonly statusCode = 500;
  override name = 'QuotaError';
}

interface ToolResult { ok: boolean; exitCode: number | undefined; stdout: string; detail: string }

async function run(file: string, args: string[], timeout = TOOL_TIMEOUT_MS): Promise<ToolResult> {
  const r = await execa(file, args, {
    reject: false, timeout, forceKillAfterDelay: 2000, stdin: 'ignore',
    extendEnv: false, env: { PATH: TOOL_PATH, LC_ALL: 'C' },
    // No kill-on-exit hook: execa's (signal-exit) re-raises SIGTERM/SIGINT when it sees no other
    // listener, and main.ts listens with once(), so a signal arriving while mkfs or mount ran (the
    // workspace pool builds in the background) killed the service before its graceful shutdown.
    // These tools must finish anyway: a mount cut short is worse, and shutdown waits for them.
    cleanup: false,
  });
  const detail = [r.stderr, r.stdout, r.timedOut ? 'timed out' : '', r.originalMessage ?? '']
    .filter((s) => typeof s === 'string' && s !== '').join(' | ').slice(0, 2000);
  return { ok: !r.failed && r.exitCode === 0, exitCode: r.exitCode, stdout: typeof r.stdout === 'string' ? r.stdout : '', detail };
}

function fail(logger: QuotaLogger | undefined, message: string, details: object): never {
  logger?.warn(details, `workspace quota: ${message}`);
  throw new QuotaError(message);
}

const errnoOf = (err: unknown): string | undefined =>
  typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : undefined;

// ---- mount table -------------------------------------------------------------------------

interface MountEntry { mountPoint: string; fsType: string; source: string }

const unescapeMountField = (s: string): string =>
  s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));

async function readMounts(): Promise<MountEntry[]> {
  const text = await fs.promises.readFile('/proc/self/mountinfo', 'utf8');
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-', 6);
    const mp = f[4];
    const fsType = f[sep + 1];
    const source = f[sep + 2];
    if (sep < 0 || mp === undefined || fsType === undefined || source === undefined) continue;
    out.push({ mountPoint: unescapeMountField(mp), fsType, source: unescapeMountField(source) });
  }
  return out;
}

async function realDir(dir: string): Promise<string | null> {
  try {
    return await fs.promises.realpath(dir);
  } catch (err) {
    if (['ENOENT', 'ENOTDIR'].includes(errnoOf(err) ?? '')) return null;
    throw err;
  }
}

/** Resolved, so it compares equal to the kernel's view of a loop device's backing file. */
async function imagePath(sessionDir: string): Promise<string> {
  return path.join((await realDir(sessionDir)) ?? path.resolve(sessionDir), QUOTA_IMAGE_NAME);
}

/** The visible (last) mount on `dir` if it is a loop-backed ext4, i.e. one of ours. */
async function quotaMountOn(dir: string): Promise<MountEntry | null> {
  const real = await realDir(dir);
  if (real === null) return null;
  const top = (await readMounts()).filter((m) => m.mountPoint === real).at(-1);
  return top !== undefined && top.fsType === 'ext4' && /^\/dev\/loop\d+$/.test(top.source) ? top : null;
}

export async function isQuotaMounted(workspaceDir: string): Promise<boolean> {
  return (await quotaMountOn(workspaceDir)) !== null;
}

/** Every mount point at or below `dir` (resolved; none when it does not exist). */
export async function mountPointsUnder(dir: string): Promise<string[]> {
  const real = await realDir(dir);
  if (real === null) return [];
  return (await readMounts()).map((m) => m.mountPoint).filter((p) => p === real || p.startsWith(`${real}/`));
}

// ---- loop devices ------------------------------------------------------------------------
// Read from sysfs: every spawned tool costs tens of milliseconds, and release is polled.

const LOOP_DEV = /^\/dev\/(loop\d+)$/;

async function sysLoop(name: string, file: string): Promise<string | null> {
  const text = await fs.promises.readFile(`/sys/block/${name}/loop/${file}`, 'utf8').catch(() => null);
  return text === null ? null : text.replace(/\n$/, '');
}

const sameFile = (backing: string | null, image: string): boolean =>
  backing === image || backing === `${image} (deleted)`;

/** Loop devices (`loopN`) whose backing file is `image` (an absolute, resolved path). */
async function loopsHolding(image: string): Promise<string[]> {
  const names = await fs.promises.readdir('/sys/block').catch(() => null);
  if (names === null) {
    const r = await run('losetup', ['-n', '-O', 'NAME', '-j', image]);
    return r.stdout.split(/\s+/).flatMap((d) => LOOP_DEV.exec(d)?.[1] ?? []);
  }
  // All at once: one by one, a host with 75 loop devices spent ~15 ms per look, several looks per delete.
  const loops = names.filter((n) => /^loop\d+$/.test(n));
  const backing = await Promise.all(loops.map((name) => sysLoop(name, 'backing_file')));
  return loops.filter((_name, i) => sameFile(backing[i] ?? null, image));
}

async function waitForRelease(image: string): Promise<string[]> {
  const deadline = Date.now() + LOOP_RELEASE_WAIT_MS;
  // The detach usually lands within a few ms of the unmount: look again soon, then less often.
  for (let pause = 1; ; pause = Math.min(pause * 2, 10)) {
    const held = await loopsHolding(image);
    if (held.length === 0 || Date.now() > deadline) return held;
    await new Promise((r) => setTimeout(r, pause));
  }
}

/**
 * Waits for the loop devices holding `image` to go. mount -o loop sets autoclear, so the kernel
 * detaches on the last close; a device without it is detached here. One still held after the
 * wait belongs to a mount that lives on elsewhere (lazy unmount, a running sandbox's namespace)
 * and detaches when that goes: reported, not an error.
 */
async function releaseImage(image: string, logger: QuotaLogger | undefined): Promise<void> {
  for (const name of await loopsHolding(image)) {
    if ((await sysLoop(name, 'autoclear')) !== '1') await run('losetup', ['-d', `/dev/${name}`]);
  }
  const held = await waitForRelease(image);
  if (held.length > 0) logger?.warn({ image, held }, 'workspace quota: loop device still in use, it detaches on release');
}

// ---- serialisation: one operation per workspace at a time within this process -----------

const locks = new Map<string, Promise<unknown>>();

async function withLock<T>(workspaceDir: string, fn: () => Promise<T>): Promise<T> {
  const key = path.resolve(workspaceDir);
  const next = (locks.get(key) ?? Promise.resolve()).catch(() => undefined).then(fn);
  const tail = next.catch(() => undefined);
  locks.set(key, tail);
  try {
    return await next;
  } finally {
    if (locks.get(key) === tail) locks.delete(key);
  }
}

// ---- operations --------------------------------------------------------------------------

/** Returns the images whose loop devices it saw released (none after a lazy unmount). */
async function unmountLocked(workspaceDir: string, logger: QuotaLogger | undefined): Promise<Set<string>> {
  const images = new Set<string>();
  let lazy = false;
  // A loop, not a single umount: an accidental double mount must not leave a layer behind.
  for (let i = 0; i < 8; i++) {
    const mount = await quotaMountOn(workspaceDir);
    if (mount === null) {
      if (lazy) return new Set();
      for (const image of images) await releaseImage(image, logger);
      return images;
    }
    const backing = await sysLoop(LOOP_DEV.exec(mount.source)?.[1] ?? '', 'backing_file');
    if (backing !== null) images.add(backing.replace(/ \(deleted\)$/, ''));
    const r = await run('umount', [mount.mountPoint]);
    if (r.ok) continue;
    logger?.warn({ workspaceDir, detail: r.detail }, 'workspace quota: busy, unmounting lazily');
    lazy = true;
    const l = await run('umount', ['-l', mount.mountPoint]);
    if (!l.ok) fail(logger, 'could not unmount the workspace', { workspaceDir, detail: l.detail });
  }
  fail(logger, 'could not unmount the workspace', { workspaceDir, reason: 'still mounted after 8 unmounts' });
}

async function fsckImage(image: string, logger: QuotaLogger | undefined): Promise<boolean> {
  // -p repairs what is safe; a no-journal fs that was not cleanly unmounted gets a full check.
  const r = await run('e2fsck', ['-p', image], FSCK_TIMEOUT_MS);
  if (r.exitCode === 0) return false;
  if (r.exitCode === 1 || r.exitCode === 2) {
    logger?.warn({ image, detail: r.detail }, 'workspace quota: file system repaired');
    return true;
  }
  return fail(logger, 'the workspace file system check failed', { image, exitCode: r.exitCode, detail: r.detail });
}

async function mountImage(image: string, workspaceDir: string, logger: QuotaLogger | undefined): Promise<void> {
  const r = await run('mount', ['-t', 'ext4', '-o', MOUNT_OPTIONS, image, workspaceDir]);
  if (!r.ok || !(await isQuotaMounted(workspaceDir))) {
    fail(logger, 'could not mount the workspace', { image, workspaceDir, detail: r.detail });
  }
}

async function requirePlainDir(dir: string, logger: QuotaLogger | undefined): Promise<fs.Stats> {
  const st = await fs.promises.lstat(dir).catch(() => null);
  if (st === null || !st.isDirectory()) fail(logger, 'the workspace directory is missing', { dir });
  return st;
}

async function mountLocked(sessionDir: string, workspaceDir: string, logger: QuotaLogger | undefined): Promise<boolean> {
  const image = await imagePath(sessionDir);
  const st = await fs.promises.lstat(image).catch((err: unknown) => {
    if (errnoOf(err) === 'ENOENT') return null;
    throw err;
  });
  if (st === null) return false;
  if (!st.isFile()) fail(logger, 'the workspace image is invalid', { image });
  if (await isQuotaMounted(workspaceDir)) return true;
  await requirePlainDir(workspaceDir, logger);
  // Still held (lazy unmount, or a sandbox's namespace keeps the old mount): wait, never double-mount.
  const held = await waitForRelease(image);
  if (held.length > 0) fail(logger, 'the workspace is still in use', { image, held });
  const repaired = await fsckImage(image, logger);
  await mountImage(image, path.resolve(workspaceDir), logger);
  // A full fsck recreates lost+found; drop it again when empty (rmdir never follows a link).
  if (repaired) await fs.promises.rmdir(path.join(workspaceDir, 'lost+found')).catch(() => undefined);
  return true;
}

async function createLocked(
  sessionDir: string, workspaceDir: string, bytes: number, owner: QuotaOwner | null, logger: QuotaLogger | undefined,
): Promise<void> {
  if (!Number.isSafeInteger(bytes) || bytes < MIN_QUOTA_BYTES) fail(logger, 'invalid workspace quota size', { bytes });
  const ids = [owner?.uid, owner?.gid];
  if (ids.some((n) => n !== undefined && (!Number.isInteger(n) || n < 0 || n >= 0xffffffff))) {
    fail(logger, 'invalid workspace owner', { owner });
  }
  const ws = path.resolve(workspaceDir);
  const st = await requirePlainDir(ws, logger);
  if ((await fs.promises.readdir(ws)).length > 0 || (await isQuotaMounted(ws))) {
    fail(logger, 'the workspace directory is not empty', { ws });
  }
  const rootOwner = owner ?? { uid: st.uid, gid: st.gid };
  const image = await imagePath(sessionDir);
  let created = false;
  try {
    const fd = await fs.promises.open(image, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600)
      .catch((err: unknown) => fail(logger, errnoOf(err) === 'EEXIST' ? 'a workspace image already exists' : 'could not create the workspace image', { image, err: String(err) }));
    created = true;
    try {
      await fd.truncate(bytes); // sparse: the host pays only for blocks really written
    } finally {
      await fd.close();
    }
    const mkfs = await run('mkfs.ext4', [...MKFS_ARGS, '-E', `lazy_itable_init=0,root_owner=${rootOwner.uid}:${rootOwner.gid}`, image]);
    if (!mkfs.ok) fail(logger, 'could not format the workspace image', { image, detail: mkfs.detail });
    await mountImage(image, ws, logger);
    await fs.promises.rmdir(path.join(ws, 'lost+found'));
    if ((st.mode & 0o7777) !== 0o755) await fs.promises.chmod(ws, st.mode & 0o7777);
  } catch (err) {
    if (created) {
      await unmountLocked(ws, logger).catch(() => undefined);
      await releaseImage(image, logger).catch(() => undefined);
      await fs.promises.unlink(image).catch(() => undefined);
    }
    if (err instanceof QuotaError) throw err;
    fail(logger, 'could not set up the workspace quota', { ws, err: String(err) });
  }
}

/** Sparse image + mkfs + mount on the (existing, empty) workspace dir; on failure nothing is left. */
export async function createQuotaWorkspace(
  sessionDir: string, workspaceDir: string, bytes: number, owner: QuotaOwner | null, logger?: QuotaLogger,
): Promise<void> {
  return withLock(workspaceDir, () => createLocked(sessionDir, workspaceDir, bytes, owner, logger));
}

/** Mounts an existing image again (after a restart); false when the session has no image. */
export async function mountQuotaWorkspace(sessionDir: string, workspaceDir: string, logger?: QuotaLogger): Promise<boolean> {
  return withLock(workspaceDir, () => mountLocked(sessionDir, workspaceDir, logger));
}

/** Idempotent; falls back to a lazy unmount when busy (the loop device detaches on release). */
export async function unmountQuotaWorkspace(workspaceDir: string, logger?: QuotaLogger): Promise<void> {
  await withLock(workspaceDir, () => unmountLocked(workspaceDir, logger));
}

/** Unmounts, detaches any loop device still holding the image, deletes it. Idempotent. */
export async function removeQuotaWorkspace(sessionDir: string, workspaceDir: string, logger?: QuotaLogger): Promise<void> {
  return withLock(workspaceDir, async () => {
    const released = await unmountLocked(workspaceDir, logger);
    const image = await imagePath(sessionDir);
    // Not mounted here, or left to a lazy unmount: a device may still hold the image.
    if (!released.has(image)) await releaseImage(image, logger);
    await fs.promises.unlink(image).catch((err: unknown) => {
      if (errnoOf(err) !== 'ENOENT') fail(logger, 'could not delete the workspace image', { image, err: String(err) });
    });
  });
}

// ---- support probe ----------------------------------------------------------------------

let support: Promise<QuotaStatus> | undefined;

/** Cached: tries a real image, format, loop mount, write and removal once in a temp dir. */
export async function detectQuotaSupport(logger?: QuotaLogger): Promise<QuotaStatus> {
  support ??= probe(logger);
  return support;
}

async function probe(logger: QuotaLogger | undefined): Promise<QuotaStatus> {
  if (process.getuid?.() !== 0) return { available: false, reason: 'the service is not running as root' };
  if (!fs.existsSync('/dev/loop-control') && !fs.existsSync('/dev/loop0')) {
    return { available: false, reason: 'no loop device support' };
  }
  for (const tool of ['mkfs.ext4', 'e2fsck']) {
    if (!(await run(tool, ['-V'])).ok) return { available: false, reason: `${tool} is not installed` };
  }
  const dir = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'bubble-quota-probe-'));
  const ws = path.join(dir, 'workspace');
  try {
    await fs.promises.mkdir(ws);
    await createQuotaWorkspace(dir, ws, 2 * MIN_QUOTA_BYTES, null, logger);
    await fs.promises.writeFile(path.join(ws, 'probe'), 'ok');
    await removeQuotaWorkspace(dir, ws, logger);
    return { available: true, reason: null };
  } catch (err) {
    logger?.warn({ err: String(err) }, 'workspace quota: probe failed');
    return { available: false, reason: 'a loop-mounted ext4 image could not be set up' };
  } finally {
    await removeQuotaWorkspace(dir, ws).catch(() => undefined);
    await fs.promises.rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}
