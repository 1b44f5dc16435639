// Limits as a user of the HTTP API meets them: the workspace disk quota, /tmp, memory, and two
// sessions under different host uids.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { useTestApp } from '../helpers/app.js';
import { createSession, execute } from '../helpers/http.js';
import { mountsUnder } from '../helpers/mounts.js';

const MiB = 1024 * 1024;
const t = useTestApp({ WORKSPACE_QUOTA_BYTES: String(8 * MiB), VOLUME_QUOTA_BYTES: String(8 * MiB), TMP_SIZE_BYTES: String(4 * MiB), MEMORY_LIMIT_BYTES: String(128 * MiB) });

describe('disk', () => {
  it('filling the workspace stops at the quota with ENOSPC, and the host disk holds no more than the quota', async () => {
    expect(t.sessions.quota.enabled).toBe(true);
    await createSession(t.app, { session_id: 'filler' });
    const r = await execute(t.app, 'filler', { command: 'dd if=/dev/urandom of=big bs=1M count=32 2>&1; stat -c %s big' });
    expect(r.stdout).toContain('No space left on device');
    const written = Number(r.stdout.trim().split('\n').pop());
    expect(written).toBeGreaterThan(4 * MiB);
    expect(written).toBeLessThanOrEqual(8 * MiB);
    const image = path.join(path.dirname(t.sessions.workspaceDir('filler')), 'workspace.img');
    expect(fs.statSync(image).blocks * 512).toBeLessThanOrEqual(9 * MiB);
    // The session keeps working once space is freed.
    const after = await execute(t.app, 'filler', { command: 'rm big; echo ok > small.txt; cat small.txt' });
    expect(after.stdout).toBe('ok\n');
  }, 60_000);

  it('a read-write volume has a quota of its own and is mounted nosuid,nodev', async () => {
    await createSession(t.app, { session_id: 'vol-filler', volumes: { bulk: 'rw' } });
    const r = await execute(t.app, 'vol-filler', { command: 'dd if=/dev/urandom of=/volumes/bulk/big bs=1M count=32 2>&1; stat -c %s /volumes/bulk/big; rm /volumes/bulk/big' });
    expect(r.stdout).toContain('No space left on device');
    expect(Number(r.stdout.trim().split('\n').pop())).toBeLessThanOrEqual(8 * MiB);
    const volumeDir = path.join(t.workspaceDir, 'volumes', 'bulk');
    const mount = mountsUnder(volumeDir).find((m) => m.point === volumeDir);
    expect(mount).toBeDefined();
    expect(mount?.options.join(',')).toMatch(/nosuid/);
    expect(mount?.options.join(',')).toMatch(/nodev/);
  }, 60_000);

  it('filling /tmp stops at its size', async () => {
    await createSession(t.app, { session_id: 'tmpfill' });
    const r = await execute(t.app, 'tmpfill', { command: 'dd if=/dev/zero of=/tmp/big bs=1M count=16 2>&1 | head -1' });
    expect(r.stdout).toContain('No space left on device');
  });
});

describe('memory and identity', () => {
  it('an allocation past the memory limit is reported as oom, and the session answers the next request', async () => {
    await createSession(t.app, { session_id: 'hungry' });
    const r = await execute(t.app, 'hungry', { script: "b = bytearray(1024 * 1024 * 1024)\nprint('survived')" });
    expect(r.status).toBe('oom');
    expect(r.stdout).toBe('');
    expect((await execute(t.app, 'hungry', { command: 'echo next' })).stdout).toBe('next\n');
  }, 30_000);

  it('two sessions run under different host uids, neither of them root', async () => {
    await createSession(t.app, { session_id: 'uid-a' });
    await createSession(t.app, { session_id: 'uid-b' });
    await execute(t.app, 'uid-a', { command: 'touch mine' });
    await execute(t.app, 'uid-b', { command: 'touch mine' });
    const a = fs.statSync(path.join(t.sessions.workspaceDir('uid-a'), 'mine')).uid;
    const b = fs.statSync(path.join(t.sessions.workspaceDir('uid-b'), 'mine')).uid;
    expect(a).not.toBe(b);
    if (process.getuid?.() === 0) {
      expect(a).not.toBe(0);
      expect(b).not.toBe(0);
    }
  });
});
