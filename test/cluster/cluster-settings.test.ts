// NODE_ID, PEERS, PEER_URL_PATTERN and CLUSTER_SECRET as loadConfig resolves them, which replica
// a session id names, and where placement puts a new session.
import { describe, expect, test } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';
import { clusterNodes, isClustered, nodeOfId, sessionIdOfUrl } from '../../src/cluster/nodes.js';
import { choosePlacement, type NodeLoad } from '../../src/cluster/placement.js';

const SECRET = { BUBBLE_SANDBOX_CLUSTER_SECRET: 's'.repeat(20) };
const P = 'BUBBLE_SANDBOX_';

describe('cluster settings', () => {
  test('a single replica by default: no node id, no peers, not clustered', () => {
    const c = loadConfig({});
    expect(c.nodeId).toBe('');
    expect(c.peers).toEqual({});
    expect(isClustered(clusterNodes(c))).toBe(false);
  });

  test('PEERS may list this replica too; the others are its peers', () => {
    const c = loadConfig({ [`${P}NODE_ID`]: 'n1', [`${P}PEERS`]: '{"n1":"http://a:8000","n2":"http://b:8000/"}', ...SECRET });
    const nodes = clusterNodes(c);
    expect(nodes.self).toBe('n1');
    expect([...nodes.peers]).toEqual([['n2', 'http://b:8000']]);
  });

  test('other replicas need NODE_ID and CLUSTER_SECRET; bad PEERS are named', () => {
    expect(() => loadConfig({ [`${P}PEERS`]: '{"n2":"http://b:8000"}', ...SECRET })).toThrow(/NODE_ID must say which one/);
    expect(() => loadConfig({ [`${P}NODE_ID`]: 'n1', [`${P}PEERS`]: '{"n2":"http://b:8000"}' })).toThrow(/CLUSTER_SECRET must be set/);
    expect(() => loadConfig({ [`${P}PEERS`]: '{"N-2":"http://b"}' })).toThrow(ConfigError);
    expect(() => loadConfig({ [`${P}PEERS`]: '{"n2":"ftp://b"}' })).toThrow(/BUBBLE_SANDBOX_PEERS/);
    expect(() => loadConfig({ [`${P}NODE_ID`]: 'n-1' })).toThrow(/BUBBLE_SANDBOX_NODE_ID/);
  });

  test('PEER_URL_PATTERN + PEER_COUNT: peers n0.. from the StatefulSet names, NODE_ID from the host name', () => {
    const env = { [`${P}PEER_URL_PATTERN`]: 'http://bs-{i}.bs-peers:8000', [`${P}PEER_COUNT`]: '3', ...SECRET };
    const c = loadConfig({ ...env, HOSTNAME: 'bs-1' });
    expect(c.nodeId).toBe('n1');
    expect(c.peers).toEqual({ n0: 'http://bs-0.bs-peers:8000', n1: 'http://bs-1.bs-peers:8000', n2: 'http://bs-2.bs-peers:8000' });
    expect(loadConfig({ ...env, HOSTNAME: 'whatever', [`${P}NODE_ID`]: 'n2' }).nodeId).toBe('n2');
    expect(() => loadConfig({ ...env, HOSTNAME: 'laptop' })).toThrow(/does not end in a StatefulSet ordinal/);
    expect(() => loadConfig({ ...env, [`${P}PEER_COUNT`]: '0', HOSTNAME: 'bs-1' })).toThrow(/needs BUBBLE_SANDBOX_PEER_COUNT/);
    expect(() => loadConfig({ ...env, HOSTNAME: 'bs-1', [`${P}PEERS`]: '{"n9":"http://x"}' })).toThrow(/set one/);
    expect(() => loadConfig({ [`${P}PEER_URL_PATTERN`]: 'http://no-ordinal:8000' })).toThrow(/\{i\}/);
  });
});

describe('which replica an id names', () => {
  const nodes = clusterNodes({ nodeId: 'n1', peers: { n1: 'http://a', n2: 'http://b' } });
  test('a known node id and a dash; anything else names none', () => {
    expect(nodeOfId('n2-3f9c', nodes)).toBe('n2');
    expect(nodeOfId('n1-3f9c', nodes)).toBe('n1');
    expect(nodeOfId('n3-3f9c', nodes)).toBeNull();
    expect(nodeOfId('my-session', nodes)).toBeNull();
    expect(nodeOfId('n2', nodes)).toBeNull();
  });
  test('the session id of a raw URL, decoded and checked', () => {
    expect(sessionIdOfUrl('/v1/sessions/n2-ab/processes/3/pty?access_token=x')).toBe('n2-ab');
    expect(sessionIdOfUrl('/v1/sessions/a%2Fb/pty')).toBeNull();
    expect(sessionIdOfUrl('/v1/volumes/x')).toBeNull();
  });
});

describe('placement', () => {
  const load = (node_id: string, sessions: number, running = 0, over: Partial<NodeLoad> = {}): NodeLoad => ({ node_id, sessions, max_sessions: 50, running, queued: 0, max_running: 4, draining: false, ...over });
  test('the replica with the most free session and execution slots', () => {
    expect(choosePlacement([load('n0', 3), load('n1', 1), load('n2', 2)], 'n0')).toBe('n1');
    expect(choosePlacement([load('n0', 1, 4), load('n1', 1, 0)], 'n0')).toBe('n1');
  });
  test('a draining or full replica takes none; none left: null', () => {
    expect(choosePlacement([load('n0', 0, 0, { draining: true }), load('n1', 9)], 'n0')).toBe('n1');
    expect(choosePlacement([load('n0', 50), load('n1', 0, 0, { draining: true })], 'n0')).toBeNull();
  });
  test('ties: the asked replica, else spread over the tied ones', () => {
    expect(choosePlacement([load('n0', 1), load('n1', 1), load('n2', 1)], 'n1')).toBe('n1');
    const picks = [0, 0.4, 0.8].map((r) => choosePlacement([load('n0', 2), load('n1', 1), load('n2', 1)], 'n0', () => r));
    expect(picks).toEqual(['n1', 'n1', 'n2']);
  });
});
