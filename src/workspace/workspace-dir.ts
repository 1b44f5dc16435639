// A workspace directory's own life, apart from any session: `dir`/workspace, made empty (claimed
// from the pool, or built now with its quota image) and removed again (image unmounted first,
// nothing followed). Sessions, one-shot executions and the pool all lay their dirs out this way.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { removeTreeSafe } from './workspace-fs.js';
import type { WorkspacePool } from './workspace-pool.js';
import { createQuotaWorkspace, mountQuotaWorkspace, removeQuotaWorkspace, unmountQuotaWorkspace } from './workspace-quota.js';
import { detachImageMount, hasSharedLayout, mountSharedLayout } from './workspace-image.js';

export interface WorkspaceOptions {
  identity: { uid: number; gid: number } | null;
  /** Quota image size for a new workspace, or null when quotas are off. */
  quotaBytes: number | null;
  /** Ready quota workspaces (of quotaBytes) to claim instead of building one. */
  pool?: Pick<WorkspacePool, 'claim'> | undefined;
  logger: Logger;
}

/**
 * A new, empty workspace at `dir`/workspace owned by the identity: claimed from the pool when
 * one is ready (`dir` must not exist then), else made now, with its quota image when quotas are on.
 */
export async function newWorkspace(dir: string, opts: WorkspaceOptions): Promise<'pool' | 'built'> {
  const { identity, quotaBytes, logger } = opts;
  if (quotaBytes !== null && opts.pool && (await opts.pool.claim(dir, identity))) return 'pool';
  const workspace = path.join(dir, 'workspace');
  await fs.mkdir(dir, { recursive: true, mode: 0o711 });
  await fs.mkdir(workspace, { mode: 0o755 });
  if (identity) await fs.lchown(workspace, identity.uid, identity.gid);
  if (quotaBytes !== null) await createQuotaWorkspace(dir, workspace, quotaBytes, identity, logger);
  return 'built';
}

/** Unmount the quota image (if any) of a dir laid out like a session's (workspace.img, workspace/),
 * a session's, a pool entry or a one-shot's, then remove it without following links. */
export async function removeWorkspaceDir(dir: string, logger: Logger): Promise<void> {
  await detachImageMount(dir, logger);
  await removeQuotaWorkspace(dir, path.join(dir, 'workspace'), logger);
  await removeTreeSafe(dir);
}

/** Mounts the quota image of `dir` again, in either layout (see workspace-image.ts); false when it has none. */
export async function mountWorkspaceDir(dir: string, logger: Logger): Promise<boolean> {
  if (!(await hasSharedLayout(dir))) return mountQuotaWorkspace(dir, path.join(dir, 'workspace'), logger);
  await mountSharedLayout(dir, logger);
  return true;
}

/** Unmounts the quota image of `dir` (either layout); the files stay for mountWorkspaceDir. */
export async function unmountWorkspaceDir(dir: string, logger: Logger): Promise<void> {
  await detachImageMount(dir, logger);
  await unmountQuotaWorkspace(path.join(dir, 'workspace'), logger);
}
