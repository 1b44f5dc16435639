// Two replicas in one process (real apps listening on loopback) with an API key: the key is
// checked before any hop (a request without it never reaches the owner), travels with a
// forwarded request, and serves the merged listing; the cluster secret is needed on top of it
// for anything that says it was forwarded.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { bwrapUsable, IS_ROOT } from '../helpers/sandbox.js';
import { createTestApp, type TestApp } from '../helpers/app.js';
import { freePort } from '../helpers/host-env.js';
import { call, CLUSTER_SECRET } from '../helpers/cluster.js';

const KEY = 'cluster-api-key-0123456789abcdef';
const AUTH = { authorization: `Bearer ${KEY}` };

describe.skipIf(!IS_ROOT || !bwrapUsable())('two replicas with an API key', () => {
  const apps: TestApp[] = [];
  const bases: string[] = [];

  beforeAll(async () => {
    const ports = [await freePort(), await freePort()];
    const peers = JSON.stringify({ a: `http://127.0.0.1:${ports[0]}`, b: `http://127.0.0.1:${ports[1]}` });
    for (const [i, node] of ['a', 'b'].entries()) {
      const t = await createTestApp({
        NODE_ID: node, PEERS: peers, CLUSTER_SECRET, API_KEY: KEY,
        SANDBOX_UID_BASE: String(660_000 + i * 1000), SANDBOX_UID_COUNT: '200', MAX_SESSIONS: '20', MAX_QUEUED_EXECUTIONS: '16', WORKSPACE_POOL_SIZE: '0',
      });
      apps.push(t);
      await t.app.listen({ host: '127.0.0.1', port: ports[i] ?? 0 });
      bases.push(`http://127.0.0.1:${ports[i] ?? 0}`);
    }
  }, 60_000);
  afterAll(async () => {
    for (const t of apps) await t.close();
  });

  test('the key is checked before the hop and travels with it', async () => {
    const [a, b] = bases as [string, string];
    const made = await call(a, 'POST', '/v1/sessions', { json: {}, headers: AUTH });
    expect(made.status, made.text).toBe(201);
    const s = made.json<{ session_id: string; node_id: string }>();
    expect(s.node_id).toBe('a');
    expect(s.session_id).toMatch(/^a-[0-9a-f]{32}$/);

    const before = apps[0]?.sessions.count;
    const refused = await call(b, 'GET', `/v1/sessions/${s.session_id}`);
    expect(refused.status).toBe(401);
    expect(refused.json()).toMatchObject({ code: 'UNAUTHORIZED' });
    expect((await call(b, 'POST', '/v1/sessions', { json: {} })).status).toBe(401);
    expect(apps[0]?.sessions.count).toBe(before);

    const exec = await call(b, 'POST', `/v1/sessions/${s.session_id}/execute`, { json: { command: 'echo via-b' }, headers: AUTH });
    expect(exec.status, exec.text).toBe(200);
    expect(exec.json<{ stdout: string }>().stdout).toBe('via-b\n');

    const list = await call(b, 'GET', '/v1/sessions', { headers: AUTH });
    expect(list.json<{ sessions: { session_id: string }[]; unavailable_nodes: string[] }>()).toMatchObject({ unavailable_nodes: [] });
    expect(list.json<{ sessions: { session_id: string }[] }>().sessions.map((x) => x.session_id)).toContain(s.session_id);
  });

  test('the API key alone does not make a request "forwarded": that needs the cluster secret', async () => {
    const [a] = bases as [string, string];
    const claim = await call(a, 'GET', '/v1/sessions', { headers: { ...AUTH, 'x-bubble-forwarded-by': 'b' } });
    expect(claim.status).toBe(401);
    expect(claim.json()).toMatchObject({ code: 'CLUSTER_UNAUTHORIZED' });
    expect((await call(a, 'GET', '/cluster/v1/load', { headers: AUTH })).status).toBe(401);
    const load = await call(a, 'GET', '/cluster/v1/load', { headers: { 'x-bubble-cluster-secret': CLUSTER_SECRET } });
    expect(load.json()).toMatchObject({ node_id: 'a', max_sessions: 20, draining: false });
  });
});
