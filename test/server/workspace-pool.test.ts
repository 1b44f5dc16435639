// Session creates served from the pool of quota workspaces, through the HTTP API with the real
// sandbox: what a session gets, what the metrics and /readyz say, start-up and shutdown.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { createQuotaWorkspace } from '../../src/workspace/workspace-quota.js';
import { createTestApp, useTestApp, type AppUnderTest } from '../helpers/app.js';
import { removeTempDir } from '../helpers/host-env.js';
import { waitUntil } from '../helpers/host-processes.js';
import { createSession, execute, listPaths } from '../helpers/http.js';
import { expectQuotaMount, loopBackingFiles, mountsUnder } from '../helpers/mounts.js';

const MiB = 1024 * 1024;
const QUOTA = { WORKSPACE_QUOTA_BYTES: String(8 * MiB) };

async function metric(t: AppUnderTest, name: string): Promise<number> {
  const text = (await t.app.inject({ method: 'GET', url: '/metrics' })).body;
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? 0 : Number(line.split(' ')[1]);
}

const created = (t: AppUnderTest, source: 'pool' | 'built') => metric(t, `bubble_sandbox_workspaces_created_total{source="${source}"}`);

async function readyPool(t: AppUnderTest): Promise<unknown> {
  return (await t.app.inject({ method: 'GET', url: '/readyz' })).json<{ checks: { workspace_pool: unknown } }>().checks.workspace_pool;
}

const waitForPool = (t: AppUnderTest, n: number) => waitUntil(() => t.sessions.workspacePool.ready, (r) => r === n, 30_000);

describe('with a pool of 2', () => {
  const t = useTestApp({ ...QUOTA, WORKSPACE_POOL_SIZE: '2' });
  beforeAll(async () => {
    expect(t.sessions.quota.enabled).toBe(true);
  });

  it('fills in the background to its size, as /readyz and the metrics say', async () => {
    expect(await waitForPool(t, 2)).toBe(2);
    const pool = path.join(fs.realpathSync(t.workspaceDir), 'pool');
    const entries = fs.readdirSync(pool);
    expect(entries).toHaveLength(2);
    for (const name of entries) expectQuotaMount(path.join(pool, name, 'workspace'));
    expect(await readyPool(t)).toEqual({ size: 2, ready: 2 });
    expect(await metric(t, 'bubble_sandbox_workspace_pool_ready')).toBe(2);
  });

  it('a create takes a ready workspace: a quota mount owned by the session uid, empty, and full at the quota', async () => {
    await waitForPool(t, 2);
    const before = { pool: await created(t, 'pool'), built: await created(t, 'built') };
    await createSession(t.app, { session_id: 'pooled' });
    expect({ pool: await created(t, 'pool'), built: await created(t, 'built') }).toEqual({ pool: before.pool + 1, built: before.built });
    const ws = path.join(fs.realpathSync(t.workspaceDir), 'sessions', 'pooled', 'workspace');
    expect(t.sessions.workspaceDir('pooled')).toBe(path.join(t.workspaceDir, 'sessions', 'pooled', 'workspace'));
    expectQuotaMount(ws);
    expect(await listPaths(t.app, 'pooled')).toEqual([]);
    // What the sandbox sees is what a workspace built on the spot looks like.
    const r = await execute(t.app, 'pooled', { command: 'echo "$(id -u):$(id -g)"; stat -c "%u:%g %a" /workspace; ls -A /workspace | wc -l' });
    const [ids, root, count] = r.stdout.trim().split('\n');
    expect(ids).not.toBe('0:0');
    expect(root).toBe(`${ids} 755`);
    expect(count).toBe('0');
    const { uid_slot: slot } = JSON.parse(fs.readFileSync(path.join(path.dirname(ws), 'meta.json'), 'utf8')) as { uid_slot: number };
    const st = fs.lstatSync(ws);
    expect({ uid: st.uid, gid: st.gid }).toEqual(t.sandbox.identityFor(slot));
    // Changed files come from fanotify on the claimed image, as on one built on the spot.
    expect(t.sessions.changeTracking.mode).toBe('fanotify');
    const made = await execute(t.app, 'pooled', { command: 'echo x > made.txt' });
    expect(made.files.created).toEqual(['made.txt']);
    expect(t.sessions.changes.isTracked('pooled')).toBe(true);
    const fill = await execute(t.app, 'pooled', { command: 'dd if=/dev/urandom of=big bs=1M count=32 2>&1; stat -c %s big' });
    expect(fill.stdout).toContain('No space left on device');
    expect(Number(fill.stdout.trim().split('\n').pop())).toBeLessThanOrEqual(8 * MiB);
    expect(fs.statSync(path.join(path.dirname(ws), 'workspace.img')).blocks * 512).toBeLessThanOrEqual(9 * MiB);
  }, 60_000);

  it('creates beyond the pool size are built on the spot, and the pool refills afterwards', async () => {
    await waitForPool(t, 2);
    const before = { pool: await created(t, 'pool'), built: await created(t, 'built') };
    const ids = ['burst-1', 'burst-2', 'burst-3', 'burst-4', 'burst-5'];
    const answers = await Promise.all(ids.map((id) => t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: id } })));
    expect(answers.map((a) => a.statusCode)).toEqual([201, 201, 201, 201, 201]);
    const fromPool = (await created(t, 'pool')) - before.pool;
    const built = (await created(t, 'built')) - before.built;
    expect(fromPool + built).toBe(5);
    expect(fromPool).toBeGreaterThanOrEqual(2);
    expect(built).toBeGreaterThanOrEqual(1); // the pool ran dry: nobody was refused or kept waiting for it
    for (const id of ids) expectQuotaMount(path.join(fs.realpathSync(t.workspaceDir), 'sessions', id, 'workspace'));
    expect(await waitForPool(t, 2)).toBe(2);
    expect(await metric(t, 'bubble_sandbox_workspace_pool_ready')).toBe(2);
  }, 60_000);

  it('a one-shot execution runs in a pooled workspace too: the quota holds, and nothing is left after the answer', async () => {
    await waitForPool(t, 2);
    const before = { pool: await created(t, 'pool'), built: await created(t, 'built') };
    const res = await t.app.inject({
      method: 'POST', url: '/v1/execute',
      payload: { command: 'echo "$(id -u) $(stat -c %u /workspace) $(ls -A | wc -l)" && echo out > out.txt && dd if=/dev/zero of=big bs=1M count=32 2>&1 | head -1' },
    });
    expect(res.statusCode).toBe(200);
    const body = res.json<{ stdout: string; files: { created: string[]; outputs: { path: string }[] } }>();
    const [uid, owner, count] = body.stdout.split('\n')[0]?.split(' ') ?? [];
    expect(uid).not.toBe('0');
    expect(owner).toBe(uid);
    expect(count).toBe('0');
    expect(body.stdout).toContain('No space left on device');
    expect(body.files.created).toEqual(['big', 'out.txt']);
    expect({ pool: await created(t, 'pool'), built: await created(t, 'built') }).toEqual({ pool: before.pool + 1, built: before.built });
    const root = fs.realpathSync(t.workspaceDir);
    await t.sessions.oneShotRemovalsSettled(); // the run's workspace goes after the answer
    // Less the place prepared (with a warm sandbox) for the next one-shot run, see one-shot-warm.ts.
    const prepared = await t.sessions.oneShotWarm.preparedDirs();
    expect(fs.readdirSync(path.join(root, 'oneshot')).filter((e) => !prepared.includes(e))).toEqual([]);
    expect(mountsUnder(path.join(root, 'oneshot')).filter((m) => !prepared.some((e) => m.point.startsWith(path.join(root, 'oneshot', e))))).toEqual([]);
  }, 60_000);

  it('a kept workspace is re-attached with its files, not swapped for a pool entry', async () => {
    await createSession(t.app, { session_id: 'kept' });
    await execute(t.app, 'kept', { command: 'echo still > here.txt' });
    expect((await t.app.inject({ method: 'DELETE', url: '/v1/sessions/kept?clear_data=false' })).statusCode).toBe(204);
    await waitForPool(t, 2);
    const before = { pool: await created(t, 'pool'), built: await created(t, 'built') };
    await createSession(t.app, { session_id: 'kept' });
    expect({ pool: await created(t, 'pool'), built: await created(t, 'built') }).toEqual(before);
    expect(t.sessions.workspacePool.ready).toBe(2);
    expect((await execute(t.app, 'kept', { command: 'cat here.txt' })).stdout).toBe('still\n');
  });
});

describe('without a pool', () => {
  it('WORKSPACE_POOL_SIZE=0: nothing is built ahead, and a create builds its quota workspace as before', async () => {
    const t = await createTestApp({ ...QUOTA, WORKSPACE_POOL_SIZE: '0' });
    try {
      expect(t.sessions.quota.enabled).toBe(true);
      await createSession(t.app, { session_id: 'plain' });
      expect(await created(t, 'built')).toBe(1);
      expect(await created(t, 'pool')).toBe(0);
      expectQuotaMount(path.join(fs.realpathSync(t.workspaceDir), 'sessions', 'plain', 'workspace'));
      expect(fs.readdirSync(path.join(t.workspaceDir, 'pool'))).toEqual([]);
      expect(await readyPool(t)).toEqual({ size: 0, ready: 0 });
    } finally {
      await t.close();
    }
  });

  it('WORKSPACE_QUOTA=off: the pool stays idle (a plain directory costs nothing to make)', async () => {
    const t = await createTestApp({ WORKSPACE_QUOTA: 'off', WORKSPACE_POOL_SIZE: '2' });
    try {
      await createSession(t.app, { session_id: 'plain' });
      expect(await created(t, 'built')).toBe(1);
      expect(mountsUnder(fs.realpathSync(t.workspaceDir))).toEqual([]);
      expect(fs.readdirSync(path.join(t.workspaceDir, 'pool'))).toEqual([]);
      expect(await readyPool(t)).toEqual({ size: 0, ready: 0 });
    } finally {
      await t.close();
    }
  });
});

describe('start-up and shutdown', () => {
  it('start-up removes what a previous run left in the pool (still mounted), and close leaves no mount or loop device', async () => {
    const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'bs-pool-restart-')));
    try {
      // As a crash leaves it: an entry still mounted, of another quota size.
      const stale = path.join(dir, 'pool', 'stale');
      fs.mkdirSync(path.join(stale, 'workspace'), { recursive: true, mode: 0o711 });
      await createQuotaWorkspace(stale, path.join(stale, 'workspace'), 2 * MiB, null);
      expectQuotaMount(path.join(stale, 'workspace'));
      const t = await createTestApp({ ...QUOTA, WORKSPACE_POOL_SIZE: '1' }, { workspaceDir: dir });
      try {
        expect(fs.existsSync(stale)).toBe(false);
        expect(mountsUnder(stale)).toEqual([]);
        expect(loopBackingFiles().filter((f) => f.startsWith(stale))).toEqual([]);
        expect(await waitForPool(t, 1)).toBe(1);
        const [entry] = fs.readdirSync(path.join(dir, 'pool'));
        expect(fs.statSync(path.join(dir, 'pool', entry ?? '', 'workspace.img')).size).toBe(8 * MiB);
        await createSession(t.app, { session_id: 'on-close' });
        await waitForPool(t, 1);
      } finally {
        await t.close();
      }
      expect(mountsUnder(dir)).toEqual([]);
      expect(loopBackingFiles().filter((f) => f.startsWith(dir))).toEqual([]);
      expect(fs.readdirSync(path.join(dir, 'pool'))).toEqual([]);
    } finally {
      removeTempDir(dir);
    }
  }, 60_000);
});
