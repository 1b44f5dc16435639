// The on-disk side of a session's lifecycle: its workspace (plain or a quota image), its shared
// volumes, its removal, and what a crash left in the store.
import type { Stats } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { sessionDir, workspaceOf, type StoreLayout } from './session-store.js';
import { chownTreeSafe, removeTreeSafe } from '../workspace/workspace-fs.js';
import { detachImageMount } from '../workspace/workspace-image.js';
import { mountWorkspaceDir, newWorkspace, type WorkspaceOptions } from '../workspace/workspace-dir.js';
import { createQuotaWorkspace, mountQuotaWorkspace, removeQuotaWorkspace, unmountQuotaWorkspace } from '../workspace/workspace-quota.js';

/**
 * Remove what a crash left: staged uploads, one-shot workspaces and pool entries (with their quota
 * images, which may still be mounted, and for the pool may have an older quota size).
 */
export async function clearLeftovers(layout: StoreLayout, logger: Logger): Promise<void> {
  for (const entry of await fs.readdir(layout.staging)) await removeTreeSafe(path.join(layout.staging, entry));
  for (const parent of [layout.oneshot, layout.pool]) {
    for (const entry of await fs.readdir(parent, { withFileTypes: true })) {
      const dir = path.join(parent, entry.name);
      if (entry.isDirectory()) {
        await detachImageMount(dir, logger).catch(() => undefined);
        await removeQuotaWorkspace(dir, path.join(dir, 'workspace'), logger).catch(() => undefined);
      }
      await removeTreeSafe(dir);
    }
  }
}

/** Where a session's workspace came from: kept on disk, claimed from the pool, or built now. */
export type WorkspaceSource = 'kept' | 'pool' | 'built';

/** Create the session's workspace, or re-attach a kept one. */
export async function prepareWorkspace(layout: StoreLayout, id: string, opts: WorkspaceOptions): Promise<WorkspaceSource> {
  const { identity, logger } = opts;
  const dir = sessionDir(layout, id);
  const workspace = workspaceOf(layout, id);
  // No session dir (the usual case) means no kept workspace either: one lstat answers both.
  const dirStat = await lstatOrNull(dir);
  const kept = dirStat === null ? null : await lstatOrNull(workspace);
  if (kept !== null) {
    if (!kept.isDirectory()) throw new Error(`workspace of ${id} is not a directory`);
    await mountWorkspaceDir(dir, logger);
    if (identity) await chownTreeSafe(workspace, identity.uid, identity.gid);
    return 'kept';
  }
  // A pool entry is renamed to be the session dir, so that must not exist (rename(2) would
  // silently replace an empty one); a leftover session dir gets a workspace built in it.
  return newWorkspace(dir, dirStat === null ? opts : { ...opts, pool: undefined });
}

async function lstatOrNull(p: string): Promise<Stats | null> {
  return fs.lstat(p).catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  });
}

/**
 * Create a shared volume directory if needed, owned by the service and the sandboxes' group. With
 * quotas on, the volume is a loop-mounted image of its own (mounted nosuid,nodev): a read-write
 * volume could otherwise fill the host disk and leave setuid files on it. A volume that already
 * holds files from before quotas were on stays a plain directory, with a warning.
 */
export async function ensureVolume(
  layout: StoreLayout, name: string, group: number | undefined, quotaBytes: number | null, logger: Logger,
): Promise<void> {
  const dir = path.join(layout.volumes, name);
  await fs.mkdir(dir, { recursive: true, mode: 0o2775 });
  const st = await fs.lstat(dir);
  if (!st.isDirectory()) throw new Error(`volume ${name} is not a directory`);
  const setOwner = async () => {
    // Every sandbox shares one group; a volume belongs to the service and that group.
    if (group === undefined) return;
    await fs.lchown(dir, 0, group);
    await fs.chmod(dir, 0o2775);
  };
  await setOwner();
  if (quotaBytes === null) return;
  const imageDir = path.join(layout.volumeImages, name);
  await fs.mkdir(imageDir, { recursive: true, mode: 0o700 });
  if (await mountQuotaWorkspace(imageDir, dir, logger)) return;
  if ((await fs.readdir(dir)).length > 0) {
    logger.warn({ volume: name }, 'volume holds files from before quotas were on: it stays a plain directory without a quota');
    return;
  }
  await createQuotaWorkspace(imageDir, dir, quotaBytes, null, logger);
  await setOwner();
}

/** Unmount every volume image (at shutdown; ensureVolume mounts them again). */
export async function unmountVolumes(layout: StoreLayout, logger: Logger): Promise<void> {
  for (const name of await fs.readdir(layout.volumes)) await unmountQuotaWorkspace(path.join(layout.volumes, name), logger);
}
