// Warm sandboxes for one-shot executions (POST /v1/execute): per environment, one throw-away
// workspace with a uid slot of its own and a warm sandbox already waiting in it, built after a
// one-shot run of that environment (off the request path). The next one-shot run of the
// environment without a network takes the workspace and slot as its own, writes its input files
// in, and claims the sandbox (the warm pool checks the sandbox still matches: limits, ...). The
// workspace goes after the run as any one-shot workspace does.
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Environment } from '../sandbox/environments.js';
import type { ResourceLimits } from '../sandbox/types.js';
import type { WarmPool } from '../sandbox/warm/warm-pool.js';

export interface OneShotPlace {
  dir: string;
  workspace: string;
  slot: number;
  identity: { uid: number; gid: number } | null;
}

export interface OneShotWarmDeps {
  warm: WarmPool | null;
  /** Where one-shot run directories live (StoreLayout.oneshot). */
  root: string;
  reserveSlot(): number;
  releaseSlot(slot: number): void;
  identityForSlot(slot: number): { uid: number; gid: number } | null;
  newWorkspace(dir: string, identity: { uid: number; gid: number } | null): Promise<void>;
  removeWorkspace(dir: string): Promise<void>;
  isClosing(): boolean;
  logger: Logger;
}

interface Prepared extends OneShotPlace {
  owner: string;
}

/** A one-shot run directory: <root>/<24 hex>/workspace. */
export function newOneShotPlace(root: string): { dir: string; workspace: string } {
  const dir = path.join(root, randomBytes(12).toString('hex'));
  return { dir, workspace: path.join(dir, 'workspace') };
}

export class OneShotWarm {
  /** By environment name: one prepared place each at most. */
  private readonly ready = new Map<string, Prepared>();
  private readonly building = new Set<string>();
  private readonly work = new Set<Promise<void>>();

  constructor(private readonly deps: OneShotWarmDeps) {}

  /** The prepared place of this environment, now the caller's (it releases the slot and removes the workspace as usual). */
  take(environment: Environment): OneShotPlace | null {
    const p = this.ready.get(environment.name);
    if (!p) return null;
    this.ready.delete(environment.name);
    return p;
  }

  /** Give back one prepared place (its slot is wanted by a run); false when there is none. */
  async releaseOne(): Promise<boolean> {
    const first = this.ready.keys().next();
    if (first.done === true) return false;
    await this.drop(first.value);
    return true;
  }

  /** After a one-shot run of `environment`: prepare the next in the background. */
  prepare(environment: Environment, limits: ResourceLimits): void {
    const warm = this.deps.warm;
    if (!warm?.enabled || this.deps.isClosing()) return;
    const name = environment.name;
    const existing = this.ready.get(name);
    // One whose warm sandbox the pool has ended (idle, memory) is rebuilt.
    if (existing && warm.owners().includes(existing.owner)) return;
    if (this.building.has(name)) return;
    this.building.add(name);
    const job = (async () => {
      if (existing) await this.drop(name);
      let slot: number;
      try {
        slot = this.deps.reserveSlot();
      } catch {
        return; // every one-shot slot is in use: nothing to prepare now
      }
      const { dir, workspace } = newOneShotPlace(this.deps.root);
      const identity = this.deps.identityForSlot(slot);
      try {
        await this.deps.newWorkspace(dir, identity);
      } catch (err) {
        this.deps.releaseSlot(slot);
        this.deps.logger.warn({ err }, 'could not prepare a one-shot workspace ahead');
        return;
      }
      const owner = `oneshot:${path.basename(dir)}`;
      if (this.deps.isClosing()) {
        await this.deps.removeWorkspace(dir);
        this.deps.releaseSlot(slot);
        return;
      }
      this.ready.set(name, { dir, workspace, slot, identity, owner });
      warm.prestart(owner, { environment, workspaceDir: workspace, volumes: [], limits, identity });
    })().finally(() => this.building.delete(name));
    this.track(job);
  }

  private async drop(name: string): Promise<void> {
    const p = this.ready.get(name);
    if (!p) return;
    this.ready.delete(name);
    await this.deps.warm?.dropOwner(p.owner);
    await this.deps.removeWorkspace(p.dir).catch((err: unknown) => this.deps.logger.warn({ err }, 'could not remove a prepared one-shot workspace'));
    this.deps.releaseSlot(p.slot);
  }

  private track(job: Promise<void>): void {
    this.work.add(job);
    void job.finally(() => this.work.delete(job));
  }

  /** Every prepared place goes (shutdown); resolves once they are gone. */
  async close(): Promise<void> {
    while (this.work.size > 0) await Promise.all([...this.work]);
    for (const name of [...this.ready.keys()]) await this.drop(name);
  }

  /** Environments with a place prepared now (for tests and operators). */
  preparedEnvironments(): string[] {
    return [...this.ready.keys()].sort();
  }

  /** The run directories prepared now (names under the one-shot root), being made included. */
  async preparedDirs(): Promise<string[]> {
    while (this.work.size > 0) await Promise.all([...this.work]);
    return [...this.ready.values()].map((p) => path.basename(p.dir)).sort();
  }
}
