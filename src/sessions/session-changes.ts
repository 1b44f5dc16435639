// What each session's executions changed, at the least cost that keeps the report exact.
//
// Every session keeps the snapshot its last execution left. With the change tracker (fanotify on
// the session's own quota file system) that snapshot is brought up to date from the names the
// kernel reported, before the run (uploads, deletes, an interpreter's background threads) and
// after it, so an execution that touches nothing costs one round trip to the helper instead of
// two scans of the tree: the one before is skipped while neither the API (workspaceChanged) nor
// the helper (its unasked "dirty") has said anything changed since the last drain. Without it, the kept snapshot is the next "before" as long as nothing
// else touched the workspace (the API calls workspaceChanged), and "after" is a scan.
// Whenever the tracker cannot vouch for a result, the session is scanned.
import type { Logger } from 'pino';
import type { PathBudget } from '../workspace/bounded-paths.js';
import type { ChangeTracker } from '../workspace/change-tracker.js';
import { SNAPSHOT_MAX_ENTRIES, type ChangeSource } from './executor.js';
import { applyChanges } from '../workspace/workspace-changes.js';
import { diffSnapshots, snapshotWorkspace, type SnapshotDiff, type WorkspaceSnapshot } from '../workspace/workspace-fs.js';

/** Catching up before a run only brings the snapshot up to date; the lists are not wanted. */
const NO_PATHS: PathBudget = { maxPaths: 0, maxBytes: 0 };

export class SessionChanges {
  /** The snapshot each session's last execution left, handed out once. */
  private readonly kept = new Map<string, WorkspaceSnapshot>();
  /** Sessions whose workspace the tracker watches. */
  private readonly watched = new Set<string>();
  /** Sessions the tracker could not watch (a workspace without a file system of its own). */
  private readonly unwatchable = new Set<string>();
  /** Watched sessions the API changed since their last drain (the helper may not have told yet). */
  private readonly touched = new Set<string>();

  private tracker: ChangeTracker | null = null;

  private readonly maxEntries: number;
  private readonly scan: (dir: string, opts: { maxEntries: number }) => Promise<WorkspaceSnapshot>;

  constructor(
    private readonly logger: Pick<Logger, 'warn'>,
    opts: { maxEntries?: number; scan?: typeof snapshotWorkspace } = {},
  ) {
    this.maxEntries = opts.maxEntries ?? SNAPSHOT_MAX_ENTRIES;
    this.scan = opts.scan ?? snapshotWorkspace;
  }

  /** From now on, workspaces are watched by `tracker` (null: scanned). */
  useTracker(tracker: ChangeTracker | null): void {
    this.tracker = tracker;
    // Snapshots kept while watched missed what the old tracker collected: none of them is current.
    for (const id of this.watched) this.kept.delete(id);
    this.watched.clear();
    this.unwatchable.clear();
    this.touched.clear();
  }

  /** Whether the session's changes are tracked (for tests and /readyz). */
  isTracked(id: string): boolean {
    return this.watched.has(id) && this.tracker?.available === true;
  }

  /** The ChangeSource of one execution; `isLive` tells whether the session still exists after it. */
  forSession(id: string, workspaceDir: string, isLive: () => boolean): ChangeSource {
    const keep = (s: WorkspaceSnapshot) => {
      if (isLive()) this.kept.set(id, s);
    };
    return {
      before: async () => {
        const kept = this.kept.get(id);
        this.kept.delete(id);
        if (kept !== undefined) {
          // Kept while unwatched: the API dropped it on any change, so it is current. Unless the
          // session can be watched now (a new tracker): then a watch and a scan start afresh.
          if (!this.watched.has(id) && !this.canWatch(id)) return kept;
          // Kept while watched: current only with what the tracker collected since (a tracker
          // that stopped took those changes with it, and the workspace is scanned). When nothing
          // was collected, as both the API and the helper tell, there is nothing to ask for.
          if (this.isTracked(id) && !this.touched.has(id) && this.tracker?.unchangedSinceDrain(id) === true) return kept;
          if (this.isTracked(id) && (await this.catchUp(id, workspaceDir, kept, NO_PATHS)) !== null) return kept;
        }
        await this.startWatching(id, workspaceDir);
        // Collected before the scan, which sees their result anyway.
        this.touched.delete(id);
        if (this.isTracked(id)) await this.tracker?.drain(id, workspaceDir);
        return this.scan(workspaceDir, { maxEntries: this.maxEntries });
      },
      after: async (before, budget) => {
        if (this.isTracked(id) && !before.truncated) {
          const diff = await this.catchUp(id, workspaceDir, before, budget);
          if (diff !== null) {
            keep(before);
            return diff;
          }
        }
        const after = await this.scan(workspaceDir, { maxEntries: this.maxEntries });
        keep(after);
        return diffSnapshots(before, after, budget);
      },
    };
  }

  /**
   * The API is changing the session's files: a watched session sees it in the next drain, which
   * the next execution must then not skip (called before the change: a drain already under way
   * may miss part of it, and the one after it will not).
   */
  workspaceChanged(id: string): void {
    if (this.watched.has(id)) this.touched.add(id);
    else this.kept.delete(id);
  }

  /**
   * The session is going: forget it and stop watching. Awaited before an unmount, as removing
   * the mark holds the workspace open for a moment.
   */
  async forget(id: string, workspaceDir: string): Promise<void> {
    this.kept.delete(id);
    this.unwatchable.delete(id);
    this.touched.delete(id);
    if (this.watched.delete(id)) await this.tracker?.unwatch(id, workspaceDir);
  }

  private canWatch(id: string): boolean {
    return this.tracker?.available === true && !this.unwatchable.has(id);
  }

  private async startWatching(id: string, workspaceDir: string): Promise<void> {
    const tracker = this.tracker;
    if (tracker === null || !this.canWatch(id) || this.watched.has(id)) return;
    if (await tracker.watch(id, workspaceDir)) this.watched.add(id);
    else this.unwatchable.add(id);
  }

  /** Applies what the tracker collected to `snapshot`; null when a scan must decide instead. */
  private async catchUp(id: string, workspaceDir: string, snapshot: WorkspaceSnapshot, budget: PathBudget | undefined): Promise<SnapshotDiff | null> {
    // Whatever the API did until now is in this drain (its events are queued as the calls return).
    this.touched.delete(id);
    const drained = await this.tracker?.drain(id, workspaceDir);
    if (drained === undefined || drained.rescan) return null;
    if (drained.dirs.length === 0 && drained.inos.length === 0) return { created: [], modified: [], deleted: [], truncated: false };
    try {
      return await applyChanges(workspaceDir, snapshot, drained.dirs, drained.inos, { maxEntries: this.maxEntries, ...(budget ? { budget } : {}) });
    } catch (err) {
      this.logger.warn({ err, session_id: id }, 'change tracker: could not apply the reported changes, scanning');
      return null;
    }
  }
}
