// One network namespace per session (or per one-shot run with a network policy), shared by all of
// its sandboxes, and everything that lives as long as it: the namespace descriptor, the helper
// (ports.sock; in allowlist also 127.0.0.1:3128 → the egress proxy, and the connections it
// relays once the proxy has decided), the egress proxy (allowlist; it takes the helper's
// connections over the helper's IPC channel and listens on no path), slirp4netns (outbound), and
// the run dir holding the sockets. The SessionNetwork is their one owner: close() releases all of
// them, in this order — helper (with it every egress connection), slirp, proxy, run dir,
// namespace descriptor — and may be called any number of times.
//
// In mode none the helper starts at the first connectPort (ports/{port}), not with the namespace: a
// session that never reaches into its network costs no helper process (~20 MB, ~65 ms), and a
// helper that died there is simply started again (the namespace itself is held by its fd).
//
// Inside, the namespace holds only `lo` (plus tap0 in outbound). Sandboxes join it through
// SandboxSpec.netnsPath; they run in a user namespace of their own, so they hold no capability
// over it (no `ip link add`, no raw sockets).
import fs from 'node:fs/promises';
import type net from 'node:net';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { parseCidrs, type EgressPolicy, type NetworkMode } from './egress-policy.js';
import { IDLE_TIMEOUT_MS, MAX_CONNECTIONS_PER_PROXY, startEgressProxy, type EgressDecision, type EgressProxy } from './egress-proxy.js';
import { PortConnectError, startNetnsHelper, type NetnsHelper } from './netns-helper.js';
import { createNetns, type HeldNetns } from './netns.js';
import { startOutbound, type Outbound } from './outbound.js';

export { PortConnectError } from './netns-helper.js';

/** Where the sandbox finds the egress proxy in allowlist mode (the helper listens there). */
export const PROXY_PORT = 3128;
const PROXY_URL = `http://127.0.0.1:${PROXY_PORT}`;
// Servers of the session itself stay reachable directly (the proxy refuses loopback).
const NO_PROXY = 'localhost,127.0.0.1,::1';

export interface SessionNetworkOptions {
  /** Session id (or one-shot id): names the run dir in logs. */
  key: string;
  mode: NetworkMode;
  /** The session's sandbox uid: the helper drops to it. */
  identity: { uid: number; gid: number } | null;
  /** e.g. <workspace_dir>/run/net/<key>: emptied and made (0711) here, removed by close(). Its parents must be searchable by identity. */
  runDir: string;
  /** allowlist only; read on every new connection. */
  policy: () => EgressPolicy;
  allowPrivate: readonly string[];
  logger: Logger;
  onEgressDecision?: (d: EgressDecision) => void;
  /** allowlist: the helper's limits for the connections it holds (tests shorten them); default the proxy's own. */
  egressLimits?: { idleSeconds: number; maxConnections: number };
}

export interface SessionNetwork {
  readonly mode: NetworkMode;
  /** What spawnSandbox needs to put the sandbox in this namespace. */
  readonly netnsPath: string;
  /** Variables the sandbox gets (allowlist: HTTP_PROXY... = http://127.0.0.1:3128 and lowercase; else {}). */
  readonly env: Readonly<Record<string, string>>;
  /** Why the network stopped working (its helper died), or null: the owner should close it and make a new one. */
  readonly failure: string | null;
  /** Connect to a TCP port inside the namespace (PortConnectError with code ECONNREFUSED when nothing listens). */
  connectPort?(port: number): Promise<net.Socket>;
  close(): Promise<void>;
}

function proxyEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY']) {
    env[name] = PROXY_URL;
    env[name.toLowerCase()] = PROXY_URL;
  }
  env.NO_PROXY = NO_PROXY;
  env.no_proxy = NO_PROXY;
  return env;
}

export async function createSessionNetwork(opts: SessionNetworkOptions): Promise<SessionNetwork> {
  // The helper must drop to the session's uid; without one (a service not running as root)
  // there is no way to make and enter the namespace either.
  const identity = opts.identity;
  if (identity === null) throw new Error('a session network needs the sandbox identity (the service must run as root)');
  const log = opts.logger.child({ session_id: opts.key, network_mode: opts.mode });
  const t0 = performance.now();
  const timings: Record<string, number> = {};
  const lap = (name: string, since: number) => {
    timings[name] = Math.round((performance.now() - since) * 10) / 10;
  };

  const startHelper = (netnsPath: string, owner: { uid: number; gid: number }, proxy: EgressProxy | null): Promise<NetnsHelper> =>
    startNetnsHelper({
      netnsPath,
      identity: owner,
      portsSocket: path.join(opts.runDir, 'ports.sock'),
      egress: proxy ? { port: PROXY_PORT, ...(opts.egressLimits ?? { idleSeconds: IDLE_TIMEOUT_MS / 1000, maxConnections: MAX_CONNECTIONS_PER_PROXY }), accept: (s, h) => proxy.accept(s, h) } : null,
      logger: log,
    });

  let netns: HeldNetns | null = null;
  let proxy: EgressProxy | null = null;
  let helper: NetnsHelper | null = null;
  /** The helper being started (mode none starts it on demand). */
  let starting: Promise<NetnsHelper> | null = null;
  let outbound: Outbound | null = null;
  let closing: Promise<void> | null = null;

  const release = async (): Promise<void> => {
    const step = async (what: string, fn: () => Promise<void> | void) => {
      try {
        await fn();
      } catch (err) {
        log.warn({ err, step: what }, 'session network: release step failed');
      }
    };
    await step('helper', async () => {
      await starting?.catch(() => undefined);
      await helper?.kill();
    });
    await step('outbound', () => outbound?.close());
    await step('proxy', () => proxy?.close());
    await step('run dir', () => fs.rm(opts.runDir, { recursive: true, force: true }));
    await step('netns', () => netns?.close());
  };

  try {
    await fs.rm(opts.runDir, { recursive: true, force: true });
    await fs.mkdir(opts.runDir, { recursive: true, mode: 0o711 });
    await fs.chmod(opts.runDir, 0o711);

    let t = performance.now();
    netns = await createNetns();
    lap('netns_ms', t);

    if (opts.mode === 'allowlist') {
      t = performance.now();
      proxy = await startEgressProxy({
        socketPath: null,
        owner: null,
        policy: opts.policy,
        allowPrivate: parseCidrs(opts.allowPrivate),
        ...(opts.onEgressDecision ? { onDecision: opts.onEgressDecision } : {}),
        logger: log,
      });
      lap('proxy_ms', t);
    }

    if (opts.mode !== 'none') {
      t = performance.now();
      helper = await startHelper(netns.path, identity, proxy);
      lap('helper_ms', t);
    }

    if (opts.mode === 'outbound') {
      t = performance.now();
      outbound = await startOutbound(netns.path, { allowPrivate: opts.allowPrivate, logger: log });
      lap('outbound_ms', t);
    }
  } catch (err) {
    await release();
    throw err;
  }
  lap('total_ms', t0);
  log.info({ ...timings, helper_pid: helper?.pid ?? null }, 'session network ready');

  const held = netns;
  /** The running helper, started first if needed (mode none; again if it died). */
  const liveHelper = async (): Promise<NetnsHelper> => {
    if (helper !== null && (helper.failure === null || opts.mode !== 'none')) return helper;
    if (closing) throw new Error('the session network is closed');
    starting ??= (async () => {
      try {
        await helper?.kill();
        const t = performance.now();
        const started = await startHelper(held.path, identity, null);
        if (closing) {
          await started.kill();
          throw new Error('the session network is closed');
        }
        log.info({ helper_ms: Math.round((performance.now() - t) * 10) / 10, helper_pid: started.pid }, 'session network helper started');
        helper = started;
        return started;
      } finally {
        starting = null;
      }
    })();
    return starting;
  };
  return {
    mode: opts.mode,
    netnsPath: held.path,
    env: Object.freeze(opts.mode === 'allowlist' ? proxyEnv() : {}),
    // In mode none the namespace works without its helper (which only serves connectPort and is
    // started again on demand); in the other modes the sandbox's way out went with it.
    get failure() {
      return opts.mode === 'none' ? null : (helper?.failure ?? null);
    },
    connectPort: async (port) => {
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`not a TCP port: ${port}`);
      const running = await liveHelper();
      try {
        return await running.connectPort(port);
      } catch (err) {
        if (opts.mode !== 'none' || err instanceof PortConnectError || closing) throw err;
        // ports.sock did not answer: the helper died a moment ago (its exit not seen yet). Once more with a new one.
        if (helper === running) helper = null;
        await running.kill();
        return (await liveHelper()).connectPort(port);
      }
    },
    close: () => {
      closing ??= release().then(() => log.info('session network closed'));
      return closing;
    },
  };
}

/** Remove what a crashed instance left under the run dir root (stale sockets): the namespaces themselves died with it. */
export async function clearNetworkLeftovers(root: string): Promise<void> {
  await fs.mkdir(root, { recursive: true, mode: 0o711 });
  for (const name of await fs.readdir(root)) {
    await fs.rm(path.join(root, name), { recursive: true, force: true });
  }
}
