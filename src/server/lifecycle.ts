// What the service's start sequence owns, and how a start that fails is told. Each step that
// makes something outside the process (the uid-range record, cgroups, the change-tracking helper,
// pool images with their loop devices, mounts, the listener) adds its release here as soon as it
// exists; a failure releases them all, newest first, each even when one before it failed, and
// within a deadline, so a failed start exits within seconds whatever hangs.
import type { Logger } from 'pino';
import { ConfigError, ENV_PREFIX } from '../config.js';

interface Owned { what: string; release: () => Promise<void> }

export class OwnedResources {
  private readonly owned: Owned[] = [];

  constructor(private readonly logger: Pick<Logger, 'warn'>) {}

  add(what: string, release: () => Promise<void>): void {
    this.owned.push({ what, release });
  }

  /** Releases everything, newest first; false when the deadline came first (what is left is logged). */
  async releaseAll(deadlineMs: number): Promise<boolean> {
    const left = this.owned.splice(0).reverse();
    const work = (async () => {
      while (left.length > 0) {
        const next = left[0];
        if (next === undefined) break;
        try {
          await next.release();
        } catch (err) {
          this.logger.warn({ err, what: next.what }, 'could not release what the start made');
        }
        left.shift();
      }
    })();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), deadlineMs);
    });
    const done = await Promise.race([work.then(() => true), timedOut]);
    clearTimeout(timer);
    if (!done) this.logger.warn({ left: left.map((o) => o.what), deadline_ms: deadlineMs }, 'gave up waiting for these to be released');
    return done;
  }
}

function errnoOf(err: unknown): { code?: unknown; syscall?: unknown } {
  return typeof err === 'object' && err !== null ? err : {};
}

/** One line saying why the service did not start (or stopped), for stderr and the supervisor's log. */
export function startFailureReason(err: unknown, listen: { host: string; port: number }): string {
  const { code, syscall } = errnoOf(err);
  const where = `${listen.host}:${listen.port}`;
  if (syscall === 'listen' || code === 'EADDRINUSE') {
    if (code === 'EADDRINUSE') return `cannot listen on ${where}: port ${listen.port} is already in use by another process (stop it, or set ${ENV_PREFIX}PORT)`;
    if (code === 'EACCES') return `cannot listen on ${where}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE; set ${ENV_PREFIX}PORT)`;
    if (code === 'EADDRNOTAVAIL') return `cannot listen on ${where}: no such address on this machine (${ENV_PREFIX}HOST)`;
  }
  const message = err instanceof Error ? err.message : String(err);
  return (message.split('\n').find((l) => l.trim() !== '') ?? 'unknown error').trim();
}

/** Exit status of a failed start: 2 for settings (as the command line's bad input), 1 otherwise. */
export function startFailureStatus(err: unknown): number {
  return err instanceof ConfigError ? 2 : 1;
}
