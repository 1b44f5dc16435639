// Quota workspaces built ahead of need: formatting and loop-mounting an image takes ~50 ms, so a
// session create claims a ready one (a chown and a rename) and the pool builds the next one in
// the background. An entry is <workspace_dir>/pool/<random hex>/ laid out like a session dir
// (workspace.img, workspace/ with the image mounted nosuid,nodev on it), owned by the service
// (0711, image 0600) until claimed, and never visible to a sandbox. Entries are built one at a
// time, so the pool never takes both cores from executions, and only a completely built entry is
// in `ready`, so a claim never sees half of one. A pool with `shared` builds entries in the
// shared layout (image at <entry>/image, <entry>/workspace a bind of its workspace/).
// A build spawns mkfs and mount, and forking the service blocks its event loop for about 12 ms
// each here: a build waits until the create that claimed an entry has answered (settled), and
// a moment more without claims, so that it does not land on that create nor on the next ones of
// a burst; it then runs while the client is busy elsewhere (or deleting).
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { newWorkspace, removeWorkspaceDir } from './workspace-dir.js';
import { convertToSharedLayout } from './workspace-image.js';

const QUIET_MS = 5;
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 60_000;

export interface WorkspacePoolOptions {
  /** Where entries are built: on the file system of the sessions dir, so a rename moves them. */
  dir: string;
  size: number;
  quotaBytes: number;
  logger: Logger;
  onReadyChanged?: ((ready: number) => void) | undefined;
  /** Entries in the shared layout (workspace-image.ts), for sessions with a writable root. */
  shared?: boolean;
}

export class WorkspacePool {
  private readonly ready: string[] = [];
  private building: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private lastClaim = -Infinity;
  private failures = 0;
  private running = false;
  private closed = false;

  constructor(private readonly opts: WorkspacePoolOptions) {}

  get readyCount(): number {
    return this.ready.length;
  }

  /**
   * Begin filling in the background (start-up does not wait for it). Never after close(): an
   * entry built then would have no owner left to remove it, and its loop device would stay.
   */
  start(): void {
    if (this.closed) return;
    this.running = true;
    this.fill();
  }

  /**
   * Makes a ready entry the session dir `target` (which must not exist), its workspace root owned
   * by `owner`. False when none is ready or the claim failed: the caller builds a workspace itself.
   */
  async claim(target: string, owner: { uid: number; gid: number } | null): Promise<boolean> {
    this.lastClaim = performance.now();
    const entry = this.ready.shift();
    this.fill();
    if (entry === undefined) return false;
    this.changed();
    const workspace = path.join(entry, 'workspace');
    try {
      // The root keeps mode 0755 (lchown leaves a directory's mode alone); only the owner changes,
      // as mkfs's root_owner would have set it for a workspace built on the spot.
      // Times of the claim, not of the build: a pooled workspace looks like one made now.
      const now = new Date();
      await Promise.all([owner ? fs.lchown(workspace, owner.uid, owner.gid) : undefined, fs.lutimes(workspace, now, now)]);
      // The entry, not the workspace: a mount point cannot be renamed (EBUSY), while renaming
      // its parent is allowed and the mount (and the loop device's backing file) follows it.
      await fs.rename(entry, target);
      return true;
    } catch (err) {
      this.opts.logger.warn({ err, entry }, 'workspace pool: could not claim a workspace, building one instead');
      await removeWorkspaceDir(entry, this.opts.logger).catch((e: unknown) => this.opts.logger.warn({ err: e, entry }, 'workspace pool: could not remove an entry'));
      return false;
    }
  }

  /** The create that claimed an entry has answered: the quiet time starts now. */
  settled(): void {
    this.lastClaim = performance.now();
    this.fill();
  }

  /** Stop refilling, wait for a build in flight, unmount and remove every entry. */
  async close(): Promise<void> {
    this.closed = true;
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.building;
    const entries = this.ready.splice(0);
    this.changed();
    for (const entry of entries) {
      await removeWorkspaceDir(entry, this.opts.logger).catch((err: unknown) => this.opts.logger.warn({ err, entry }, 'workspace pool: could not remove an entry'));
    }
  }

  private fill(): void {
    if (!this.running || this.building !== null || this.timer !== null || this.ready.length >= this.opts.size) return;
    const wait = this.lastClaim + QUIET_MS - performance.now();
    if (wait > 0) {
      this.fillIn(wait);
      return;
    }
    this.building = this.buildOne().then(() => {
      this.building = null;
      this.fill();
    });
  }

  /** Never rejects: a failure is logged and retried later, with a growing delay. */
  private async buildOne(): Promise<void> {
    const entry = path.join(this.opts.dir, randomBytes(12).toString('hex'));
    try {
      await newWorkspace(entry, { identity: null, quotaBytes: this.opts.quotaBytes, logger: this.opts.logger });
      if (this.opts.shared === true) await convertToSharedLayout(entry, this.opts.logger);
      this.ready.push(entry);
      this.failures = 0;
      this.changed();
    } catch (err) {
      await removeWorkspaceDir(entry, this.opts.logger).catch(() => undefined);
      const delay = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** this.failures++);
      this.opts.logger.warn({ err, retry_in_ms: delay }, 'workspace pool: could not build a workspace, retrying later');
      this.fillIn(delay);
    }
  }

  private fillIn(ms: number): void {
    if (!this.running) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.fill();
    }, ms);
    this.timer.unref();
  }

  private changed(): void {
    this.opts.onReadyChanged?.(this.ready.length);
  }
}
