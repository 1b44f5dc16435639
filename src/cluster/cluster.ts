// One replica's view of the others: where a session lives (its id's prefix, else a remembered
// answer, else asking every peer), how loaded each replica is (for placement), and calls to a
// peer. Framework-free: the Fastify side is src/server/cluster-plugin.ts.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { peerHeaders } from './cluster-secret.js';
import { forwardRequest, forwardUpgrade, type ForwardEvents, type PeerTarget } from './forward-http.js';
import { nodeOfId, type ClusterNodes } from './nodes.js';
import { choosePlacement, type NodeLoad } from './placement.js';
import { callPeer, type PeerAnswer } from './peer-call.js';

export interface ClusterDeps {
  nodes: ClusterNodes;
  /** CLUSTER_SECRET (config.ts requires it whenever there are peers). */
  secret: string;
  /** PEER_TIMEOUT_SECONDS in ms. */
  timeoutMs: number;
  /** Whether this replica holds a live session with the id. */
  isLocal: (id: string) => boolean;
  localLoad: () => NodeLoad;
  logger: Pick<Logger, 'warn' | 'info' | 'debug'>;
}

/** Where a session is: here (or nowhere: the local routes answer 404), on a peer, or maybe on a peer that is down. */
export type Location = { at: 'here' } | { at: 'peer'; node: string } | { at: 'unreachable'; nodes: string[] };

/** Owners learnt by asking (client-chosen ids); bounded, the oldest forgotten first. */
const MAX_REMEMBERED = 100_000;

export class Cluster {
  private readonly agent = new http.Agent({ keepAlive: true, maxFreeSockets: 64 });
  private readonly owners = new Map<string, string>();

  constructor(private readonly deps: ClusterDeps) {}

  get self(): string {
    return this.deps.nodes.self;
  }

  get peerIds(): string[] {
    return [...this.deps.nodes.peers.keys()];
  }

  private target(node: string): PeerTarget {
    const base = this.deps.nodes.peers.get(node);
    if (base === undefined) throw new Error(`unknown node ${node}`);
    return { base, agent: this.agent, connectTimeoutMs: this.deps.timeoutMs };
  }

  private get headers(): Record<string, string> {
    return peerHeaders(this.self, this.deps.secret);
  }

  async locate(id: string): Promise<Location> {
    if (this.deps.isLocal(id)) return { at: 'here' };
    const prefixed = nodeOfId(id, this.deps.nodes);
    if (prefixed !== null) return prefixed === this.self ? { at: 'here' } : { at: 'peer', node: prefixed };
    const remembered = this.owners.get(id);
    if (remembered !== undefined) return { at: 'peer', node: remembered };
    const down: string[] = [];
    const answers = await Promise.all(this.peerIds.map(async (node) => {
      try {
        const a = await this.call(node, 'GET', `/cluster/v1/sessions/${encodeURIComponent(id)}`, {});
        return a.status === 200 ? node : null;
      } catch {
        down.push(node);
        return null;
      }
    }));
    const owner = answers.find((n) => n !== null);
    if (owner) {
      this.remember(id, owner);
      return { at: 'peer', node: owner };
    }
    return down.length > 0 ? { at: 'unreachable', nodes: down.sort() } : { at: 'here' };
  }

  remember(id: string, node: string): void {
    if (nodeOfId(id, this.deps.nodes) !== null) return; // the id says it already
    this.owners.delete(id);
    this.owners.set(id, node);
    if (this.owners.size > MAX_REMEMBERED) this.owners.delete(this.owners.keys().next().value ?? '');
  }

  forget(id: string): void {
    this.owners.delete(id);
  }

  /** This replica's load now. */
  localLoadNow(): NodeLoad {
    return this.deps.localLoad();
  }

  /** Every replica's load that answered in time (this one's always). */
  async loads(): Promise<NodeLoad[]> {
    const peers = await Promise.all(this.peerIds.map(async (node) => {
      try {
        const a = await this.call(node, 'GET', '/cluster/v1/load', {});
        return a.status === 200 ? { ...(JSON.parse(a.text) as NodeLoad), node_id: node } : null;
      } catch {
        return null;
      }
    }));
    return [this.deps.localLoad(), ...peers.filter((l): l is NodeLoad => l !== null)];
  }

  /** The node a new session should go to; null when none can take it. */
  async place(): Promise<string | null> {
    return choosePlacement(await this.loads(), this.self);
  }

  /** A JSON call to a peer with the cluster headers; `total` false leaves the time to the peer (a create). */
  call(node: string, method: string, path: string, headers: Record<string, string>, body?: string, total = true): Promise<PeerAnswer> {
    return callPeer(this.target(node), method, path, { ...headers, ...this.headers }, body, total ? this.deps.timeoutMs : null);
  }

  /** Pipes the request to `node`; `headers` are added (the request id, so both replicas log the same one). */
  forward(node: string, req: IncomingMessage, res: ServerResponse, on: ForwardEvents, headers: Record<string, string> = {}): void {
    forwardRequest(req, res, this.target(node), { ...headers, ...this.headers }, on);
  }

  forwardUpgrade(node: string, req: IncomingMessage, socket: Duplex, head: Buffer, on: Pick<ForwardEvents, 'unavailable'>): void {
    forwardUpgrade(req, socket, head, this.target(node), this.headers, on);
  }

  close(): void {
    this.agent.destroy();
  }
}
