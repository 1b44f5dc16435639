// Shared volumes on disk, for the cap on how many may exist and for operators: which exist, how
// full their quota images are, and removal of one no session names. A volume is
// <workspace_dir>/volumes/<name>/ (ensureVolume in session-workspace.ts makes it), with quotas on
// the mount point of volume-images/<name>/workspace.img. Both parents are service-owned (0711):
// no sandbox can put a link or a file in place of a volume or its image.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { StoreLayout } from './session-store.js';
import { removeTreeSafe } from '../workspace/workspace-fs.js';
import { QUOTA_IMAGE_NAME, isQuotaMounted, removeQuotaWorkspace } from '../workspace/workspace-quota.js';

/** Volume names as the API accepts them; anything else in the directory is not a volume. */
const VOLUME_NAME = /^[A-Za-z0-9_-]{1,64}$/;

export interface VolumeUsage {
  /** Size of its quota image; null for a plain directory (quotas off, or files from before them). */
  quota_bytes: number | null;
  /** Bytes in use on its quota image; null for a plain directory. */
  used_bytes: number | null;
}

/** The volumes that exist, sorted by name. */
export async function existingVolumes(layout: StoreLayout): Promise<string[]> {
  const entries = await fs.readdir(layout.volumes, { withFileTypes: true });
  return entries.filter((e) => e.isDirectory() && VOLUME_NAME.test(e.name)).map((e) => e.name).sort();
}

export async function volumeUsage(layout: StoreLayout, name: string): Promise<VolumeUsage> {
  const dir = path.join(layout.volumes, name);
  if (!(await isQuotaMounted(dir))) return { quota_bytes: null, used_bytes: null };
  const image = await fs.lstat(path.join(layout.volumeImages, name, QUOTA_IMAGE_NAME)).catch(() => null);
  const st = await fs.statfs(dir);
  return { quota_bytes: image?.isFile() ? image.size : null, used_bytes: (st.blocks - st.bfree) * st.bsize };
}

/**
 * Unmounts the volume's quota image (lazily when busy), waits for its loop device to go (one
 * still held by a mount that lives on elsewhere detaches when that goes), deletes the image,
 * then removes the volume and its image directory without following links.
 */
export async function removeVolume(layout: StoreLayout, name: string, logger: Logger): Promise<void> {
  const dir = path.join(layout.volumes, name);
  const imageDir = path.join(layout.volumeImages, name);
  await removeQuotaWorkspace(imageDir, dir, logger);
  await removeTreeSafe(dir);
  await removeTreeSafe(imageDir);
}
