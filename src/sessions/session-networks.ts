// The network namespaces of sessions (and of one-shot runs with a policy): one SessionNetwork per
// key, made at first use (the first execution or interpreter start), so a session that never runs
// anything costs no namespace or helper, and a restart of the service simply makes it again on
// next use (servers that ran in the old one are gone with it). Closed on delete, expiry and shutdown.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { outboundAvailable } from '../sandbox/network/outbound.js';
import type { EgressDecision } from '../sandbox/network/egress-proxy.js';
import { clearNetworkLeftovers, createSessionNetwork, type SessionNetwork } from '../sandbox/network/session-network.js';
import { NetworkModeUnavailableError } from '../errors.js';
import { egressPolicyOf, NETWORK_MODES, type NetworkModeName, type NetworkPolicy } from './network-policy.js';

/** What a sandbox needs of its network: the namespace to join (absent: a private one) and its variables. */
export interface NetworkJoin {
  readonly netnsPath?: string | undefined;
  readonly env: Readonly<Record<string, string>>;
}

const NO_JOIN: NetworkJoin = Object.freeze({ env: Object.freeze({}) });

export interface NetworkAvailability {
  modes: NetworkModeName[];
  unavailable: Partial<Record<NetworkModeName, string>>;
}

export interface SessionNetworksDeps {
  /** Where run directories go (<workspace_dir>/run/net): cleared at start. */
  root: string;
  allowPrivate: readonly string[];
  logger: Logger;
  onEgressDecision?: ((d: EgressDecision) => void) | undefined;
  /**
   * A failed network of `key` is about to be replaced: whatever still holds its namespace path (a
   * session's interpreter) must go first, or a restart of it would enter the old path, whose
   * descriptor number may by then name another namespace.
   */
  onReplacing?: ((key: string) => Promise<void>) | undefined;
}

/** What the allowlist helper needs on the host: the interpreter it runs on and nsenter. */
const ALLOWLIST_TOOLS = ['/usr/bin/python3', '/usr/bin/nsenter'];

function availability(): NetworkAvailability {
  const unavailable: NetworkAvailability['unavailable'] = {};
  const missing = ALLOWLIST_TOOLS.filter((p) => !isExecutable(p));
  if (process.getuid?.() !== 0) unavailable.allowlist = 'needs the service to run as root (network namespaces)';
  else if (missing.length > 0) unavailable.allowlist = `missing ${missing.join(', ')}`;
  const outbound = outboundAvailable();
  if (!outbound.available) unavailable.outbound = outbound.reason ?? 'slirp4netns or nftables missing';
  else if (unavailable.allowlist !== undefined) unavailable.outbound = unavailable.allowlist;
  return { modes: NETWORK_MODES.filter((m) => unavailable[m] === undefined), unavailable };
}

function isExecutable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export class SessionNetworks {
  private readonly live = new Map<string, Promise<SessionNetwork>>();
  /** Checked once at start; a host that gains a tool needs a restart to offer the mode. */
  readonly available: NetworkAvailability = availability();

  constructor(private readonly deps: SessionNetworksDeps) {}

  async init(): Promise<void> {
    await fs.promises.mkdir(this.deps.root, { recursive: true, mode: 0o711 });
    await clearNetworkLeftovers(this.deps.root);
    for (const [mode, reason] of Object.entries(this.available.unavailable)) this.deps.logger.warn({ mode, reason }, 'network mode unavailable');
  }

  /** Throws NETWORK_MODE_UNAVAILABLE for a mode this host cannot give; before anything is made. */
  assertAvailable(mode: NetworkModeName): void {
    const reason = this.available.unavailable[mode];
    if (reason !== undefined) throw new NetworkModeUnavailableError(mode, reason);
  }

  /**
   * What a sandbox of `key` joins: its network namespace, made on first use, and the variables
   * that go with it. `policy` is read on every new connection of the egress proxy, so the
   * caller's record stays the source of truth. A failed make is not kept, and a network whose
   * helper died is closed and made anew (servers that ran in it are gone; the next run works).
   * Without a sandbox identity (the service is not root) mode none keeps bwrap's own private
   * namespace per execution: there is no namespace to share then.
   */
  async join(key: string, opts: { policy: () => NetworkPolicy; identity: { uid: number; gid: number } | null }): Promise<NetworkJoin> {
    const mode = opts.policy().mode;
    if (mode === 'none' && opts.identity === null) return NO_JOIN;
    const existing = this.live.get(key);
    if (existing) {
      const network = await existing;
      if (network.failure === null) return network;
      this.deps.logger.warn({ key, reason: network.failure }, 'network namespace failed; making a new one');
      await this.deps.onReplacing?.(key);
      await this.close(key);
    }
    const made = createSessionNetwork({
      key,
      mode,
      identity: opts.identity,
      runDir: path.join(this.deps.root, runDirName(key)),
      policy: () => egressPolicyOf(opts.policy()),
      allowPrivate: this.deps.allowPrivate,
      logger: this.deps.logger,
      // The proxy logs each decision itself (session id, host, port; never a path): here, only counted.
      onEgressDecision: (d) => this.deps.onEgressDecision?.(d),
    });
    this.live.set(key, made);
    made.catch(() => {
      if (this.live.get(key) === made) this.live.delete(key);
    });
    return made;
  }

  has(key: string): boolean {
    return this.live.has(key);
  }

  get size(): number {
    return this.live.size;
  }

  async close(key: string): Promise<void> {
    const made = this.live.get(key);
    if (!made) return;
    this.live.delete(key);
    const network = await made.catch(() => null);
    await network?.close().catch((err: unknown) => this.deps.logger.error({ err, key }, 'could not close a network namespace'));
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.live.keys()].map((k) => this.close(k)));
  }
}

/** Unix socket paths are at most 107 bytes: a short, fixed-length name instead of the 64-character id. */
function runDirName(key: string): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 16);
}
