// Who the replicas are (NODE_ID, PEERS or PEER_URL_PATTERN, as config.ts resolved them) and which
// one a session id names. A session id made by a replica starts with its node id and a dash
// (n1-3f9c...); an id a client chose carries no such promise, so only a known node id counts.
import type { Config } from '../config.js';

export interface ClusterNodes {
  /** This replica's node id; '' on a single replica. */
  readonly self: string;
  /** The other replicas: node id → base URL (no trailing slash). */
  readonly peers: ReadonlyMap<string, string>;
}

export function clusterNodes(config: Pick<Config, 'nodeId' | 'peers'>): ClusterNodes {
  const peers = new Map(Object.entries(config.peers).filter(([id]) => id !== config.nodeId));
  return { self: config.nodeId, peers };
}

/** Whether there is any other replica to forward to. */
export function isClustered(nodes: ClusterNodes): boolean {
  return nodes.peers.size > 0;
}

/** The node whose prefix the id carries (self included), or null when it names no known node. */
export function nodeOfId(id: string, nodes: ClusterNodes): string | null {
  const dash = id.indexOf('-');
  if (dash < 1) return null;
  const prefix = id.slice(0, dash);
  return prefix === nodes.self || nodes.peers.has(prefix) ? prefix : null;
}

/** The session id of a /v1/sessions/<id>/... URL (percent-decoded), or null. */
export function sessionIdOfUrl(url: string): string | null {
  const m = /^\/v1\/sessions\/([^/?#]+)/.exec(url);
  if (!m?.[1]) return null;
  try {
    const id = decodeURIComponent(m[1]);
    return /^[A-Za-z0-9_-]{1,64}$/.test(id) ? id : null;
  } catch {
    return null;
  }
}
