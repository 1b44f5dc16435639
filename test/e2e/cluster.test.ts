// Three real replicas on this machine behind a plain round-robin TCP proxy (each its own
// workspace dir, port and host uid range): a session made through one works through every one
// (upload, execute, NDJSON streaming, run_code, download, a pty WebSocket), listing merges, new
// sessions spread, a request that claims to be forwarded needs the cluster secret, a replica
// told to stop drains (its running execution finishes, new sessions go elsewhere), then only its
// sessions answer 503 NODE_UNAVAILABLE with Retry-After, and it brings them back with their files.
import http from 'node:http';
import { Sandbox } from '@e2b/code-interpreter';
import { Sandbox as BaseSandbox } from 'e2b';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { bwrapUsable, IS_ROOT } from '../helpers/sandbox.js';
import { call, CLUSTER_SECRET, multipart, restartReplica, roundRobinProxy, startReplicas, type Replica, type RoundRobinProxy } from '../helpers/cluster.js';
import { killAllServers, makeTempDir, removeTempDir } from '../helpers/server-process.js';
import { closed, openWs, until } from '../helpers/ws.js';
import { call as mcpCall, connectHttp, textOf } from '../protocols/mcp/mcp-kit.js';

type Info = { session_id: string; node_id: string };
type Exec = { status: string; stdout: string; result?: string | null };

// Not useTempDirs: it kills every server after each test, and these replicas live through the file.
const dirs: string[] = [];
const tempDir = (prefix: string) => {
  const d = makeTempDir(prefix);
  dirs.push(d);
  return d;
};

describe.skipIf(!IS_ROOT || !bwrapUsable())('three replicas behind a round-robin proxy', () => {
  let replicas: Replica[];
  let proxy: RoundRobinProxy;
  const byNode = (node: string) => {
    const r = replicas.find((x) => x.node === node);
    if (!r) throw new Error(`no replica ${node}`);
    return r;
  };

  beforeAll(async () => {
    replicas = await startReplicas(3, { uidBase: 620_000, tempDirs: (p) => tempDir(p), env: { BUBBLE_SANDBOX_SHUTDOWN_DRAIN_SECONDS: '3' } });
    proxy = await roundRobinProxy(() => replicas.map((r) => r.port));
  }, 90_000);
  afterAll(async () => {
    await proxy.close();
    await killAllServers();
    for (const d of dirs.splice(0)) removeTempDir(d);
  });

  async function create(base: string, body: Record<string, unknown> = {}): Promise<Info> {
    const res = await call(base, 'POST', '/v1/sessions', { json: body });
    expect(res.status, res.text).toBe(201);
    return res.json<Info>();
  }

  test('a session made through the proxy works through every replica', async () => {
    const s = await create(proxy.baseUrl);
    expect(s.session_id.startsWith(`${s.node_id}-`)).toBe(true);
    for (const [i, r] of replicas.entries()) {
      const form = await multipart([{ name: `f${i}.txt`, content: `from ${r.node}\n` }]);
      const up = await call(r.baseUrl, 'POST', `/v1/sessions/${s.session_id}/files`, { body: form.body, headers: form.headers });
      expect(up.status, up.text).toBe(201);

      const exec = await call(r.baseUrl, 'POST', `/v1/sessions/${s.session_id}/execute`, { json: { command: `cat f${i}.txt` } });
      expect(exec.status, exec.text).toBe(200);
      expect(exec.json<Exec>().stdout).toBe(`from ${r.node}\n`);

      const stream = await call(r.baseUrl, 'POST', `/v1/sessions/${s.session_id}/execute`, { json: { command: 'echo one; sleep 0.2; echo two' }, headers: { accept: 'application/x-ndjson' } });
      expect(stream.status, stream.text).toBe(200);
      expect(stream.headers['content-type']).toMatch(/^application\/x-ndjson/);
      const events = stream.text.trim().split('\n').map((l) => JSON.parse(l) as { type: string; data?: string });
      expect(events.filter((e) => e.type === 'stdout').map((e) => e.data).join('')).toBe('one\ntwo\n');
      expect(events.at(-1)?.type).toBe('result');

      // One persistent interpreter whichever replica is asked: each call sees the last one's state.
      const cell = await call(r.baseUrl, 'POST', `/v1/sessions/${s.session_id}/run_code`, { json: { code: i === 0 ? 'n = 1\nn' : 'n += 1\nn' } });
      expect(cell.status, cell.text).toBe(200);
      expect(cell.json<Exec>().result).toBe(String(i + 1));

      const down = await call(r.baseUrl, 'GET', `/v1/sessions/${s.session_id}/files/f${i}.txt`);
      expect(down.status).toBe(200);
      expect(down.text).toBe(`from ${r.node}\n`);
    }
    // And through the proxy, a fresh connection per request (so each goes to the next replica).
    const seen = proxy.picks.length;
    for (let i = 0; i < 3; i++) {
      const exec = await call(proxy.baseUrl, 'POST', `/v1/sessions/${s.session_id}/execute`, { json: { command: 'ls f*.txt | wc -l' } });
      expect(exec.json<Exec>().stdout.trim()).toBe('3');
    }
    expect(new Set(proxy.picks.slice(seen)).size).toBe(3);
    const other = replicas.find((r) => r.node !== s.node_id) as Replica;
    const metrics = (await call(other.baseUrl, 'GET', '/metrics')).text;
    expect(metrics).toMatch(new RegExp(`^bubble_sandbox_forwarded_requests_total\\{node="${s.node_id}",outcome="answered"\\} [1-9]`, 'm'));
  }, 120_000);

  test('a forwarded NDJSON stream is piped, not held: its first line arrives while the execution still runs', async () => {
    const s = await create(proxy.baseUrl);
    const other = replicas.find((r) => r.node !== s.node_id) as Replica;
    const owner = byNode(s.node_id);
    // The execution waits for a file that is uploaded only once its first line has come through
    // the non-owner: a forwarder that buffered the answer would hold that line and never get here.
    const command = 'echo first; while [ ! -f go.txt ]; do sleep 0.05; done; echo second';
    const lines: string[] = [];
    const done = new Promise<void>((resolve, reject) => {
      const req = http.request(`${other.baseUrl}/v1/sessions/${s.session_id}/execute`, { method: 'POST', agent: false, headers: { 'content-type': 'application/json', accept: 'application/x-ndjson' } }, (res) => {
        let buf = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buf += chunk;
          const parts = buf.split('\n');
          buf = parts.pop() ?? '';
          lines.push(...parts);
        });
        res.on('end', () => resolve());
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(JSON.stringify({ command, timeout_seconds: 60 }));
    });
    await until('the first line through the forwarder', () => lines.some((l) => l.includes('first')), 20_000);
    expect(lines.some((l) => l.includes('"result"'))).toBe(false);
    const form = await multipart([{ name: 'go.txt', content: 'go' }]);
    expect((await call(owner.baseUrl, 'POST', `/v1/sessions/${s.session_id}/files`, { body: form.body, headers: form.headers })).status).toBe(201);
    await done;
    const result = JSON.parse(lines.at(-1) ?? '{}') as { type: string; status: string };
    expect(result).toMatchObject({ type: 'result', status: 'ok' });
    expect(lines.map((l) => (JSON.parse(l) as { data?: string }).data ?? '').join('')).toBe('first\nsecond\n');
  }, 60_000);

  test('the E2B SDK through the round-robin proxy: every sandbox-side and control-plane call reaches the owner', async () => {
    const saved = { api: process.env.E2B_API_URL, sbx: process.env.E2B_SANDBOX_URL, key: process.env.E2B_API_KEY };
    Object.assign(process.env, { E2B_API_URL: proxy.baseUrl, E2B_SANDBOX_URL: proxy.baseUrl, E2B_API_KEY: 'unused-without-an-api-key' });
    try {
      const sbx = await Sandbox.create('bare');
      expect(replicas.map((r) => r.node)).toContain(sbx.sandboxId.split('-')[0]);
      // Round robin sends consecutive calls to different replicas: state, files and commands are
      // found only if each call is forwarded to the one that holds the session.
      for (let i = 0; i < 3; i++) await sbx.runCode(`n = ${i} if ${i} == 0 else n + 1`);
      expect((await sbx.runCode('n * 10')).text).toBe('20');
      await sbx.files.write('/home/user/c.txt', 'cluster');
      expect(await sbx.files.read('c.txt')).toBe('cluster');
      expect((await sbx.commands.run('cat c.txt; echo -n " $((6*7))"')).stdout).toBe('cluster 42');
      await sbx.setTimeout(120_000);
      expect((await BaseSandbox.getInfo(sbx.sandboxId)).sandboxId).toBe(sbx.sandboxId);
      await sbx.kill();
      for (const r of replicas) expect((await call(r.baseUrl, 'GET', `/v1/sessions/${sbx.sandboxId}`)).status).toBe(404);
    } finally {
      for (const [k, v] of [['E2B_API_URL', saved.api], ['E2B_SANDBOX_URL', saved.sbx], ['E2B_API_KEY', saved.key]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  }, 90_000);

  test('the MCP client through the round-robin proxy: tool calls about a session run on the replica that holds it', async () => {
    const client = await connectHttp(proxy.baseUrl, null);
    try {
      const made = await mcpCall(client, 'create_session', { environment: 'bare' });
      expect(made.isError ?? false, textOf(made)).toBe(false);
      const id = /session_id: (\S+)/.exec(textOf(made))?.[1] ?? '';
      expect(replicas.map((r) => r.node)).toContain(id.split('-')[0]);
      // Each POST of the client goes to the next replica: state and files are there only if each
      // call runs where the session lives.
      for (let i = 0; i < 3; i++) {
        const r = await mcpCall(client, 'run_code', { session_id: id, code: i === 0 ? 'n = 1' : 'n += 1' });
        expect(r.isError ?? false, textOf(r)).toBe(false);
      }
      expect(textOf(await mcpCall(client, 'run_code', { session_id: id, code: 'n * 7' }))).toContain('21');
      expect((await mcpCall(client, 'write_file', { session_id: id, path: 'm.txt', text: 'via mcp' })).isError ?? false).toBe(false);
      for (let i = 0; i < 3; i++) expect(textOf(await mcpCall(client, 'execute', { session_id: id, command: 'cat m.txt' }))).toContain('via mcp');
      expect((await mcpCall(client, 'delete_session', { session_id: id })).isError ?? false).toBe(false);
    } finally {
      await client.close();
    }
  }, 90_000);

  test('a pty WebSocket opened through a replica that does not hold the session', async () => {
    const s = await create(proxy.baseUrl);
    const owner = byNode(s.node_id);
    const other = replicas.find((r) => r.node !== s.node_id) ?? owner;
    const started = await call(owner.baseUrl, 'POST', `/v1/sessions/${s.session_id}/processes`, { json: { argv: ['/bin/bash', '--norc', '-i'], pty: { cols: 80, rows: 24 } } });
    expect(started.status, started.text).toBe(201);
    const pid = started.json<{ pid: string }>().pid;
    let screen = '';
    const ws = await openWs(`ws://127.0.0.1:${other.port}/v1/sessions/${s.session_id}/processes/${pid}/pty`, {}, (d, binary) => {
      if (binary) screen += d.toString('utf8');
    });
    ws.send(Buffer.from('echo $((6*7))-pty\n'));
    await until('the echo through the forwarded socket', () => screen.includes('42-pty'));
    ws.close();
    await closed(ws);
    await expect(openWs(`ws://127.0.0.1:${other.port}/v1/sessions/${s.session_id}/processes/999999/pty`)).rejects.toThrow('status 404');
    // A browser page of the service's own origin (the address it asked, not the owner's) may open it; another origin may not.
    const own = await openWs(`ws://127.0.0.1:${other.port}/v1/sessions/${s.session_id}/processes/${pid}/pty`, { headers: { origin: `http://127.0.0.1:${other.port}` } });
    own.close();
    await closed(own);
    await expect(openWs(`ws://127.0.0.1:${other.port}/v1/sessions/${s.session_id}/processes/${pid}/pty`, { headers: { origin: 'https://evil.example' } })).rejects.toThrow('status 403');
  }, 60_000);

  test('listing merges every replica; new sessions spread; a chosen id is found by asking', async () => {
    for (let i = 0; i < 6; i++) await create(proxy.baseUrl);
    const lists = await Promise.all(replicas.map(async (r) => (await call(r.baseUrl, 'GET', '/v1/sessions')).json<{ sessions: Info[]; unavailable_nodes: string[] }>()));
    const ids = lists.map((l) => l.sessions.map((x) => x.session_id).sort());
    expect(ids[1]).toEqual(ids[0]);
    expect(ids[2]).toEqual(ids[0]);
    expect(lists[0]?.unavailable_nodes).toEqual([]);
    const counts = replicas.map((r) => lists[0]?.sessions.filter((x) => x.node_id === r.node).length ?? 0);
    expect(Math.max(...counts) - Math.min(...counts), JSON.stringify(counts)).toBeLessThanOrEqual(1);

    const mine = await create(replicas[0]?.baseUrl ?? '', { session_id: 'chosen-by-client' });
    expect(mine.session_id).toBe('chosen-by-client');
    for (const r of replicas) {
      const again = await call(r.baseUrl, 'POST', '/v1/sessions', { json: { session_id: 'chosen-by-client' } });
      expect(again.status, again.text).toBe(200);
      expect(again.json<Info>().node_id).toBe(mine.node_id);
      const exec = await call(r.baseUrl, 'POST', '/v1/sessions/chosen-by-client/execute', { json: { command: 'echo here' } });
      expect(exec.json<Exec>().stdout).toBe('here\n');
    }
    const gone = await call(replicas[2]?.baseUrl ?? '', 'DELETE', '/v1/sessions/chosen-by-client');
    expect(gone.status).toBe(204);
    for (const r of replicas) expect((await call(r.baseUrl, 'GET', '/v1/sessions/chosen-by-client')).status).toBe(404);
  }, 120_000);

  test('a request that says it was forwarded needs the cluster secret', async () => {
    const s = await create(proxy.baseUrl);
    const owner = byNode(s.node_id);
    const claim = { 'x-bubble-forwarded-by': 'n9' };
    const refused = await call(owner.baseUrl, 'GET', `/v1/sessions/${s.session_id}`, { headers: claim });
    expect(refused.status).toBe(401);
    expect(refused.json()).toMatchObject({ code: 'CLUSTER_UNAUTHORIZED' });
    const wrong = await call(owner.baseUrl, 'GET', `/v1/sessions/${s.session_id}`, { headers: { ...claim, 'x-bubble-cluster-secret': 'not-the-secret-at-all' } });
    expect(wrong.status).toBe(401);
    expect((await call(owner.baseUrl, 'GET', '/cluster/v1/load')).status).toBe(401);
    expect((await call(owner.baseUrl, 'GET', `/cluster/v1/sessions/${s.session_id}`)).status).toBe(401);
    await expect(openWs(`ws://127.0.0.1:${owner.port}/v1/sessions/${s.session_id}/processes/1/pty`, { headers: claim })).rejects.toThrow('status 401');
    const right = await call(owner.baseUrl, 'GET', `/v1/sessions/${s.session_id}`, { headers: { ...claim, 'x-bubble-cluster-secret': CLUSTER_SECRET } });
    expect(right.status).toBe(200);
    expect((await call(owner.baseUrl, 'GET', `/cluster/v1/sessions/${s.session_id}`, { headers: { 'x-bubble-cluster-secret': CLUSTER_SECRET } })).status).toBe(200);
  }, 60_000);

  test('a stopped replica drains, then only its sessions answer 503; restarted, they come back with their files', async () => {
    const victim = replicas[1] as Replica;
    const others = replicas.filter((r) => r !== victim);
    const mine = await create(victim.baseUrl);
    // Placement picks the emptiest replica: make sessions until one lands on the victim.
    let onVictim: Info | null = mine.node_id === victim.node ? mine : null;
    for (let i = 0; i < 6 && onVictim === null; i++) {
      const s = await create(proxy.baseUrl);
      if (s.node_id === victim.node) onVictim = s;
    }
    if (onVictim === null) throw new Error('no session was placed on the victim');
    const kept = onVictim.session_id;
    const form = await multipart([{ name: 'kept.txt', content: 'still here\n' }]);
    expect((await call(victim.baseUrl, 'POST', `/v1/sessions/${kept}/files`, { body: form.body, headers: form.headers })).status).toBe(201);
    const elsewhere = await create(others[0]?.baseUrl ?? '', {});
    const otherSession = elsewhere.node_id === victim.node ? null : elsewhere.session_id;

    // SIGTERM with a running execution: it finishes; meanwhile new sessions asked of it go elsewhere.
    const running = call(others[0]?.baseUrl ?? '', 'POST', `/v1/sessions/${kept}/execute`, { json: { command: 'sleep 1; echo finished' } });
    await new Promise((r) => setTimeout(r, 300));
    const stopping = victim.server.stop('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    const during = await call(victim.baseUrl, 'POST', '/v1/sessions', { json: {} });
    expect(during.status, during.text).toBe(201);
    expect(during.json<Info>().node_id).not.toBe(victim.node);
    // A create a peer placed on it before it began draining is refused, not taken.
    const placedBefore = await call(victim.baseUrl, 'POST', '/v1/sessions', { json: {}, headers: { 'x-bubble-forwarded-by': 'n0', 'x-bubble-cluster-secret': CLUSTER_SECRET } });
    expect(placedBefore.status, placedBefore.text).toBe(503);
    expect(placedBefore.json()).toMatchObject({ code: 'SHUTTING_DOWN' });
    const finished = await running;
    expect(finished.json<Exec>().stdout).toBe('finished\n');
    expect((await stopping).code).toBe(0);

    for (const r of others) {
      const res = await call(r.baseUrl, 'GET', `/v1/sessions/${kept}/files/kept.txt`);
      expect(res.status, res.text).toBe(503);
      expect(res.json()).toMatchObject({ code: 'NODE_UNAVAILABLE' });
      expect(Number(res.headers['retry-after'])).toBeGreaterThan(0);
      if (otherSession !== null) expect((await call(r.baseUrl, 'GET', `/v1/sessions/${otherSession}`)).status).toBe(200);
      const list = (await call(r.baseUrl, 'GET', '/v1/sessions')).json<{ sessions: Info[]; unavailable_nodes: string[] }>();
      expect(list.unavailable_nodes).toEqual([victim.node]);
      expect(list.sessions.some((x) => x.node_id === victim.node)).toBe(false);
      expect((await create(r.baseUrl)).node_id).not.toBe(victim.node);
    }

    const back = await restartReplica(victim);
    replicas[1] = back;
    const res = await call(others[1]?.baseUrl ?? '', 'GET', `/v1/sessions/${kept}/files/kept.txt`);
    expect(res.status, res.text).toBe(200);
    expect(res.text).toBe('still here\n');
    const list = (await call(proxy.baseUrl, 'GET', '/v1/sessions')).json<{ sessions: Info[]; unavailable_nodes: string[] }>();
    expect(list.unavailable_nodes).toEqual([]);
    expect(list.sessions.map((x) => x.session_id)).toContain(kept);
  }, 120_000);
});
