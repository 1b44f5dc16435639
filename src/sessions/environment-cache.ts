// Environment lookups for sessions, reused for a few seconds.
import { findEnvironment, type Environment } from '../sandbox/environments.js';
import { EnvironmentNotFoundError, EnvironmentUnavailableError } from '../errors.js';

const ENVIRONMENT_CACHE_MS = 5000;

export class EnvironmentCache {
  private readonly entries = new Map<string, { at: number; env: Environment | null }>();

  constructor(private readonly environmentsDir: string, private readonly workspaceDir: string, private readonly now: () => number) {}

  /**
   * Environments change only when an operator rebuilds them, so a lookup is reused for a few
   * seconds instead of reading pyproject.toml and resolving the venv on every execution.
   */
  async resolve(name: string): Promise<Environment> {
    const hit = this.entries.get(name);
    let env: Environment | null;
    // A miss is not kept: a rootfs imported a moment ago must be found at once.
    if (hit && hit.env !== null && this.now() - hit.at < ENVIRONMENT_CACHE_MS) env = hit.env;
    else {
      env = await findEnvironment(this.environmentsDir, name, this.workspaceDir);
      this.entries.set(name, { at: this.now(), env });
    }
    if (!env) throw new EnvironmentNotFoundError(name);
    if (!env.usable) throw new EnvironmentUnavailableError(name, env.reason ?? 'not usable');
    return env;
  }
}
