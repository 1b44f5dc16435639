// Sessions created with writable_root: true. Their writes to `/` go to an overlay's upper layer,
// never inside /workspace. With quotas on, the layer is `root/` on the session's one quota image,
// beside the workspace (the shared layout of workspace-image.ts: the image is mounted at
// <session dir>/image and /workspace is a bind of its workspace/), so writes to `/` and to
// /workspace share one budget. Sessions made before that layout, a kept plain-layout workspace
// re-created with writable_root, and quotas off keep the older root layer: <session dir>/root-layer/
// laid out like a workspace dir (its own image with quotas on; a plain dir with them off).
// The overlay is mounted at <session dir>/root at the session's first sandbox (about 90 ms,
// once), unmounted at delete, clear_data=false and shutdown, and mounted again after a restart by
// the next sandbox. In a venv environment (the host view) there are two overlays instead, over
// the host's /usr (<session dir>/root-usr) and over the venv (<session dir>/root-venv), each with
// its own upper and work directories in the same layer; the rest of the host view stays read-only.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Environment } from '../sandbox/environments.js';
import { mountWritableRoot, unmountWritableRoot, WritableRootError } from '../sandbox/rootfs/writable-root.js';
import { WritableRootUnavailableError } from '../errors.js';
import { newWorkspace, removeWorkspaceDir, type WorkspaceOptions } from '../workspace/workspace-dir.js';
import { mountQuotaWorkspace, unmountQuotaWorkspace } from '../workspace/workspace-quota.js';
import { convertToSharedLayout, hasSharedLayout, imageRootLayerOf } from '../workspace/workspace-image.js';
import type { WorkspaceSource } from './session-workspace.js';
import { sessionDir, type StoreLayout } from './session-store.js';

export const rootLayerOf = (layout: StoreLayout, id: string) => path.join(sessionDir(layout, id), 'root-layer');
export const mergedRootOf = (layout: StoreLayout, id: string) => path.join(sessionDir(layout, id), 'root');
const mergedUsrOf = (layout: StoreLayout, id: string) => path.join(sessionDir(layout, id), 'root-usr');
const mergedVenvOf = (layout: StoreLayout, id: string) => path.join(sessionDir(layout, id), 'root-venv');
const legacyLayerOf = (layout: StoreLayout, id: string) => path.join(rootLayerOf(layout, id), 'workspace');
const hasLegacyLayer = async (layout: StoreLayout, id: string) => (await fs.lstat(rootLayerOf(layout, id)).catch(() => null)) !== null;

/** Where the overlays' upper and work dirs go: root/ on the shared image, or the older root layer. */
async function layerDirOf(layout: StoreLayout, id: string): Promise<string> {
  return (await hasLegacyLayer(layout, id)) ? legacyLayerOf(layout, id) : imageRootLayerOf(sessionDir(layout, id));
}

/** Why a writable root cannot be had here; null when it can. */
export function writableRootRefusal(isRoot: boolean): string | null {
  return isRoot ? null : 'the service does not run as root, which mounting an overlay needs';
}

/** The overlays of a session: [lower, layer subdirectory, mount point]. */
function overlaysOf(layout: StoreLayout, id: string, env: Environment, layer: string): [string, string, string][] {
  if (env.rootDir !== null) return [[env.rootDir, layer, mergedRootOf(layout, id)]];
  const usr: [string, string, string] = ['/usr', path.join(layer, 'usr'), mergedUsrOf(layout, id)];
  return env.venvDir === null ? [usr] : [usr, [env.venvDir, path.join(layer, 'venv'), mergedVenvOf(layout, id)]];
}

export class SessionRoots {
  private readonly mounting = new Map<string, Promise<void>>();
  /** Sessions whose overlays this process mounted (or found mounted): no mount table read per execution. */
  private readonly mounted = new Set<string>();

  constructor(private readonly layout: StoreLayout, private readonly logger: Logger) {}

  /**
   * At create, after the workspace: a new quota workspace gets the shared layout (one image for
   * both); a kept one already has its layer (either kind); otherwise the older root layer is made.
   */
  async prepare(id: string, source: WorkspaceSource, opts: Omit<WorkspaceOptions, 'identity'>): Promise<void> {
    const dir = sessionDir(this.layout, id);
    if (await hasLegacyLayer(this.layout, id)) {
      await mountQuotaWorkspace(rootLayerOf(this.layout, id), legacyLayerOf(this.layout, id), this.logger);
      return;
    }
    if (await hasSharedLayout(dir)) return;
    if (opts.quotaBytes !== null && source !== 'kept') {
      await convertToSharedLayout(dir, this.logger);
      return;
    }
    await newWorkspace(rootLayerOf(this.layout, id), { ...opts, identity: null });
  }

  /** The session's environment with `/` its merged overlay, mounted first when it is not. */
  async environment(id: string, env: Environment, owner: { uid: number; gid: number } | null): Promise<Environment> {
    if (owner === null) throw new WritableRootUnavailableError(writableRootRefusal(false) ?? 'not available');
    let pending = this.mounting.get(id);
    if (pending === undefined && !this.mounted.has(id)) {
      pending = (async () => {
        if (await hasLegacyLayer(this.layout, id)) await mountQuotaWorkspace(rootLayerOf(this.layout, id), legacyLayerOf(this.layout, id), this.logger);
        const overlays = overlaysOf(this.layout, id, env, await layerDirOf(this.layout, id));
        for (const [lowerDir, layerDir, mergedDir] of overlays) {
          await fs.mkdir(layerDir, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
            if (err.code !== 'EEXIST') throw err;
          });
          const treeOwnerId = (await fs.stat(lowerDir)).uid;
          await mountWritableRoot({ lowerDir, layerDir, mergedDir, treeOwnerId, owner });
        }
        this.mounted.add(id);
      })().finally(() => this.mounting.delete(id));
      this.mounting.set(id, pending);
    }
    try {
      await pending;
    } catch (err) {
      if (err instanceof WritableRootError) {
        this.logger.error({ session_id: id, detail: err.detail }, err.message);
        throw new WritableRootUnavailableError('its overlay could not be mounted (see the service log)');
      }
      throw err;
    }
    if (env.rootDir !== null) return { ...env, rootDir: mergedRootOf(this.layout, id), writableRoot: true };
    return { ...env, writableRoot: true, writableUsrDir: mergedUsrOf(this.layout, id), venvDir: env.venvDir === null ? null : mergedVenvOf(this.layout, id) };
  }

  /** Delete with clear_data=false, shutdown: the layer stays on disk, mounted again on next use. */
  async unmount(id: string): Promise<void> {
    await this.mounting.get(id)?.catch(() => undefined);
    this.mounted.delete(id);
    for (const merged of [mergedRootOf(this.layout, id), mergedUsrOf(this.layout, id), mergedVenvOf(this.layout, id)]) await unmountWritableRoot(merged);
    if (await hasLegacyLayer(this.layout, id)) await unmountQuotaWorkspace(legacyLayerOf(this.layout, id), this.logger);
  }

  /** Before the session dir is removed: nothing may still be mounted below it. */
  async remove(id: string): Promise<void> {
    await this.unmount(id);
    if (await fs.lstat(rootLayerOf(this.layout, id)).catch(() => null)) await removeWorkspaceDir(rootLayerOf(this.layout, id), this.logger);
    for (const merged of [mergedRootOf(this.layout, id), mergedUsrOf(this.layout, id), mergedVenvOf(this.layout, id)]) await fs.rmdir(merged).catch(() => undefined);
  }
}
