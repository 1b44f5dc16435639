// Environment lookups for sessions, reused instead of read again on every execution.
import { findEnvironment, type Environment } from '../sandbox/environments.js';
import { EnvironmentNotFoundError, EnvironmentUnavailableError } from '../errors.js';

const ENVIRONMENT_CACHE_MS = 5000;

type Finder = (environmentsDir: string, name: string, workspaceDir: string) => Promise<Environment | null>;

export class EnvironmentCache {
  private readonly entries = new Map<string, { at: number; env: Environment | null }>();
  /** Lookups under way in the background, one per name at most. */
  private readonly refreshing = new Map<string, Promise<void>>();

  constructor(
    private readonly environmentsDir: string,
    private readonly workspaceDir: string,
    private readonly now: () => number,
    private readonly find: Finder = findEnvironment,
  ) {}

  /**
   * Environments change only when an operator rebuilds them, so a lookup is reused instead of
   * reading pyproject.toml and resolving the venv on every execution. A lookup older than a few
   * seconds is still answered at once, and read again in the background for the next call: the
   * lookup costs 0.6-4 ms of file system calls here, which an agent pausing longer than that
   * between two calls (the usual case) would otherwise pay on every call, warm interpreter or
   * not. So a rebuilt environment is seen from the second call after the rebuild on, or after a
   * few seconds, whichever comes later; a miss is never kept (a rootfs imported a moment ago
   * must be found at once).
   */
  async resolve(name: string): Promise<Environment> {
    const hit = this.entries.get(name);
    let env: Environment | null;
    if (hit && hit.env !== null) {
      env = hit.env;
      if (this.now() - hit.at >= ENVIRONMENT_CACHE_MS) this.refresh(name);
    } else {
      env = await this.lookup(name);
    }
    if (!env) throw new EnvironmentNotFoundError(name);
    if (!env.usable) throw new EnvironmentUnavailableError(name, env.reason ?? 'not usable');
    return env;
  }

  /** Settles when the background lookups started so far are done (for tests and shutdown). */
  async settled(): Promise<void> {
    await Promise.all(this.refreshing.values());
  }

  private async lookup(name: string): Promise<Environment | null> {
    const env = await this.find(this.environmentsDir, name, this.workspaceDir);
    this.entries.set(name, { at: this.now(), env });
    return env;
  }

  private refresh(name: string): void {
    if (this.refreshing.has(name)) return;
    // A lookup that fails drops the entry: the next call looks up again and reports the failure.
    const done = this.lookup(name).then(() => undefined, () => {
      this.entries.delete(name);
    }).finally(() => this.refreshing.delete(name));
    this.refreshing.set(name, done);
  }
}
