// The pool of quota workspaces built ahead, on real loop devices: run as root. Skipped only
// outside CI when this machine cannot loop-mount; in CI an unavailable quota is a failure.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { storeLayout } from '../../src/sessions/session-store.js';
import { prepareWorkspace } from '../../src/sessions/session-workspace.js';
import { mountWorkspaceDir, newWorkspace, removeWorkspaceDir, unmountWorkspaceDir } from '../../src/workspace/workspace-dir.js';
import { WorkspacePool } from '../../src/workspace/workspace-pool.js';
import { QUOTA_IMAGE_NAME, detectQuotaSupport, unmountQuotaWorkspace } from '../../src/workspace/workspace-quota.js';
import { waitUntil } from '../helpers/host-processes.js';
import { removeTempDir, sleep } from '../helpers/host-env.js';
import { expectQuotaMount, loopBackingFiles, mountsUnder } from '../helpers/mounts.js';

const MiB = 1024 * 1024;
const OWNER = { uid: 201345, gid: 201345 };
const status = await detectQuotaSupport();
const skip = !status.available && !process.env.CI;

let base = '';
let poolDir = '';
let sessionsDir = '';
let pools: WorkspacePool[] = [];
const warnings: string[] = [];
const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) });

function makePool(size: number, quotaBytes = 8 * MiB, shared = false): WorkspacePool {
  const pool = new WorkspacePool({ dir: poolDir, size, quotaBytes, logger, shared });
  pools.push(pool);
  return pool;
}

describe.skipIf(skip)('workspace pool (loop-mounted ext4 built ahead)', () => {
  beforeAll(() => {
    base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'bubble-pool-test-')));
    fs.chmodSync(base, 0o711);
    poolDir = path.join(base, 'pool');
    sessionsDir = path.join(base, 'sessions');
    fs.mkdirSync(poolDir, { mode: 0o711 });
    fs.mkdirSync(sessionsDir, { mode: 0o711 });
  });

  afterEach(async () => {
    for (const pool of pools) await pool.close();
    pools = [];
    for (const name of fs.readdirSync(sessionsDir)) await removeWorkspaceDir(path.join(sessionsDir, name), logger);
    warnings.length = 0;
  });

  afterAll(() => {
    if (base === '') return;
    removeTempDir(base);
  });

  it('fills to its size one entry at a time; each is a mounted, empty, service-owned quota image', async () => {
    const pool = makePool(3);
    let inFlight = 0;
    const sampler = setInterval(() => {
      inFlight = Math.max(inFlight, fs.readdirSync(poolDir).length - pool.readyCount);
    }, 2);
    try {
      pool.start();
      expect(await waitUntil(() => pool.readyCount, (n) => n === 3, 30_000)).toBe(3);
    } finally {
      clearInterval(sampler);
    }
    expect(inFlight).toBeLessThanOrEqual(1); // never two builds at once
    const entries = fs.readdirSync(poolDir);
    expect(entries).toHaveLength(3);
    for (const name of entries) {
      const entry = path.join(poolDir, name);
      expect(name).toMatch(/^[0-9a-f]{24}$/);
      expect(fs.lstatSync(entry).mode & 0o7777).toBe(0o711);
      const img = fs.lstatSync(path.join(entry, QUOTA_IMAGE_NAME));
      expect([img.isFile(), img.mode & 0o777, img.uid, img.size]).toEqual([true, 0o600, 0, 8 * MiB]);
      const ws = path.join(entry, 'workspace');
      expectQuotaMount(ws);
      const root = fs.lstatSync(ws);
      expect([root.uid, root.gid, root.mode & 0o7777]).toEqual([0, 0, 0o755]);
      expect(fs.readdirSync(ws)).toEqual([]);
    }
    expect(warnings).toEqual([]);
  });

  it('a claim renames an entry into place for the owner: still a quota mount, and the pool refills', async () => {
    const pool = makePool(2);
    pool.start();
    await waitUntil(() => pool.readyCount, (n) => n === 2, 30_000);
    const target = path.join(sessionsDir, 'claimed');
    const built = Math.max(...fs.readdirSync(poolDir).map((e) => fs.lstatSync(path.join(poolDir, e, 'workspace')).mtimeMs));
    await sleep(50);
    const before = Date.now();
    expect(await pool.claim(target, OWNER)).toBe(true);
    expect(pool.readyCount).toBe(1);
    const ws = path.join(target, 'workspace');
    expectQuotaMount(ws);
    const root = fs.lstatSync(ws);
    expect([root.uid, root.gid, root.mode & 0o7777]).toEqual([OWNER.uid, OWNER.gid, 0o755]);
    // The claim's time, not the build's. The claim sets whole milliseconds, which come back
    // through seconds-and-nanoseconds as e.g. ...851.999 for ...852: hence the 1 ms allowance.
    expect(root.mtimeMs).toBeGreaterThanOrEqual(before - 1);
    expect(root.mtimeMs).toBeGreaterThan(built + 40);
    expect(fs.readdirSync(ws)).toEqual([]);
    expect(fs.lstatSync(target).mode & 0o7777).toBe(0o711);
    expect(fs.lstatSync(path.join(target, QUOTA_IMAGE_NAME)).mode & 0o777).toBe(0o600);
    expect(fs.readdirSync(poolDir)).toHaveLength(1);
    // The quota came along: the image is the one the mount writes to.
    expect(() => fs.writeFileSync(path.join(ws, 'big'), Buffer.alloc(16 * MiB, 1))).toThrow(/ENOSPC/);
    expect(fs.statSync(path.join(target, QUOTA_IMAGE_NAME)).blocks * 512).toBeLessThanOrEqual(9 * MiB);
    expect(await waitUntil(() => pool.readyCount, (n) => n === 2, 30_000)).toBe(2);
    // Removing the claimed workspace finds its loop device under the new path and releases it.
    await removeWorkspaceDir(target, logger);
    expect(mountsUnder(target)).toEqual([]);
    expect(loopBackingFiles().filter((f) => f.startsWith(target))).toEqual([]);
    expect(fs.existsSync(target)).toBe(false);
  });

  it('a shared-layout entry (writable roots): one image for workspace/ and root/, the workspace a bind, remounted after a restart', async () => {
    const pool = makePool(1, 8 * MiB, true);
    pool.start();
    await waitUntil(() => pool.readyCount, (n) => n === 1, 30_000);
    const target = path.join(sessionsDir, 'shared');
    expect(await pool.claim(target, OWNER)).toBe(true);
    const ws = path.join(target, 'workspace');
    const image = path.join(target, 'image');
    const check = () => {
      expect(mountsUnder(target).map((m) => m.point).sort()).toEqual([image, ws]);
      for (const m of mountsUnder(target)) {
        expect(m.fsType).toBe('ext4');
        expect(m.options).toEqual(expect.arrayContaining(['nosuid', 'nodev']));
      }
      expect(loopBackingFiles().filter((f) => f.startsWith(target))).toEqual([path.join(target, QUOTA_IMAGE_NAME)]);
      const root = fs.lstatSync(ws);
      expect([root.uid, root.gid, root.mode & 0o7777]).toEqual([OWNER.uid, OWNER.gid, 0o755]);
      expect(fs.lstatSync(image).mode & 0o7777).toBe(0o700);
      expect(fs.readdirSync(image).sort()).toEqual(['root', 'workspace']);
    };
    check();
    expect(fs.readdirSync(ws)).toEqual([]);
    // One budget: 5 MiB in root/ leaves no room for 5 MiB in the workspace (8 MiB image).
    fs.writeFileSync(path.join(image, 'root', 'layer'), Buffer.alloc(5 * MiB, 1));
    expect(() => fs.writeFileSync(path.join(ws, 'big'), Buffer.alloc(5 * MiB, 1))).toThrow(/ENOSPC/);
    expect(fs.readdirSync(ws)).toEqual(['big']);
    fs.unlinkSync(path.join(ws, 'big'));
    fs.writeFileSync(path.join(ws, 'kept'), 'k');
    // As at shutdown and the next start: both mounts go, and come back in the same layout.
    await unmountWorkspaceDir(target, logger);
    expect(mountsUnder(target)).toEqual([]);
    expect(loopBackingFiles().filter((f) => f.startsWith(target))).toEqual([]);
    expect(await mountWorkspaceDir(target, logger)).toBe(true);
    check();
    expect(fs.readdirSync(ws)).toEqual(['kept']);
    expect(fs.statSync(path.join(image, 'root', 'layer')).size).toBe(5 * MiB);
    // The pool's refilled shared entry goes at close with both its mounts.
    await pool.close();
    expect(mountsUnder(poolDir)).toEqual([]);
    expect(loopBackingFiles().filter((f) => f.startsWith(poolDir))).toEqual([]);
    await removeWorkspaceDir(target, logger);
    expect(fs.existsSync(target)).toBe(false);
    expect(mountsUnder(target)).toEqual([]);
    expect(loopBackingFiles().filter((f) => f.startsWith(target))).toEqual([]);
    expect(warnings).toEqual([]);
  });

  it('a conversion to the shared layout cut short by a crash is completed at the next mount: root/ never shows in the workspace', async () => {
    const target = path.join(sessionsDir, 'half');
    await newWorkspace(target, { identity: OWNER, quotaBytes: 8 * MiB, logger });
    const ws = path.join(target, 'workspace');
    const image = path.join(target, 'image');
    // The first step of convertToSharedLayout only: the image's root bound at image/, still on workspace/ too.
    fs.mkdirSync(image, { mode: 0o700 });
    execFileSync('mount', ['--bind', ws, image]);
    expect(await mountWorkspaceDir(target, logger)).toBe(true);
    expect(mountsUnder(target).map((m) => m.point).sort()).toEqual([image, ws]);
    expect(fs.readdirSync(image).sort()).toEqual(['root', 'workspace']);
    expect(fs.readdirSync(ws)).toEqual([]);
    expect(fs.lstatSync(image).mode & 0o7777).toBe(0o700);
    await removeWorkspaceDir(target, logger);
    expect(mountsUnder(target)).toEqual([]);
    expect(loopBackingFiles().filter((f) => f.startsWith(target))).toEqual([]);
  });

  it('an empty pool claims nothing and leaves the target alone', async () => {
    const pool = makePool(1);
    const target = path.join(sessionsDir, 'nothing');
    expect(await pool.claim(target, OWNER)).toBe(false); // not started: nothing built
    expect(fs.existsSync(target)).toBe(false);
    expect(fs.readdirSync(poolDir)).toEqual([]);
  });

  it('close stops refilling and leaves no entry, mount or loop device behind', async () => {
    const pool = makePool(3);
    pool.start();
    await waitUntil(() => pool.readyCount, (n) => n >= 1, 30_000);
    await pool.close(); // with a build most likely in flight
    expect(pool.readyCount).toBe(0);
    expect(fs.readdirSync(poolDir)).toEqual([]);
    expect(mountsUnder(poolDir)).toEqual([]);
    expect(loopBackingFiles().filter((f) => f.startsWith(poolDir))).toEqual([]);
    expect(await pool.claim(path.join(sessionsDir, 'after-close'), OWNER)).toBe(false);
    expect(fs.readdirSync(poolDir)).toEqual([]); // the claim did not start a build
  });

  it('prepareWorkspace claims for a new session only: a kept workspace is re-attached, a leftover session dir is built in', async () => {
    const layout = storeLayout(base);
    const pool = makePool(1);
    pool.start();
    await waitUntil(() => pool.readyCount, (n) => n === 1, 30_000);
    const opts = { identity: OWNER, quotaBytes: 8 * MiB, pool, logger };
    // rename(2) would silently replace an empty dir: a leftover one must not be swapped for an entry.
    fs.mkdirSync(path.join(sessionsDir, 'leftover'), { mode: 0o711 });
    expect(await prepareWorkspace(layout, 'leftover', opts)).toBe('built');
    expect(pool.readyCount).toBe(1);
    expectQuotaMount(path.join(sessionsDir, 'leftover', 'workspace'));
    expect(await prepareWorkspace(layout, 'fresh', opts)).toBe('pool');
    expect(pool.readyCount).toBe(0);
    const ws = path.join(sessionsDir, 'fresh', 'workspace');
    fs.writeFileSync(path.join(ws, 'kept.txt'), 'kept');
    await unmountQuotaWorkspace(ws); // as a delete with clear_data=false leaves it
    expect(await prepareWorkspace(layout, 'fresh', opts)).toBe('kept');
    expectQuotaMount(ws);
    expect(fs.readdirSync(ws)).toEqual(['kept.txt']);
    await waitUntil(() => pool.readyCount, (n) => n === 1, 30_000);
    expect(await prepareWorkspace(layout, 'no-quota', { ...opts, quotaBytes: null })).toBe('built');
    expect(pool.readyCount).toBe(1);
    expect(mountsUnder(path.join(sessionsDir, 'no-quota'))).toEqual([]);
  });

  it('a pool closed before it was started builds nothing: no entry would have an owner to remove it', async () => {
    // As when the service's close() runs while its start is still on the way to pool.start().
    const pool = makePool(2);
    await pool.close();
    pool.start();
    await sleep(1500); // an unguarded start has built (and loop-mounted) its first entry by now
    expect(pool.readyCount).toBe(0);
    expect(fs.readdirSync(poolDir)).toEqual([]);
    expect(loopBackingFiles().filter((f) => f.startsWith(poolDir))).toEqual([]);
  });

  it('a failing build is logged, cleaned up and retried later, never thrown', async () => {
    const pool = makePool(1, 1000); // below the minimum quota: every build fails
    pool.start();
    const logged = await waitUntil(() => warnings.join('\n'), (w) => w.includes('could not build a workspace'), 10_000);
    expect(logged).toContain('retry_in_ms');
    expect(pool.readyCount).toBe(0);
    expect(await waitUntil(() => fs.readdirSync(poolDir), (d) => d.length === 0, 10_000)).toEqual([]);
    await pool.close(); // clears the retry timer
    expect(fs.readdirSync(poolDir)).toEqual([]);
  });
});
