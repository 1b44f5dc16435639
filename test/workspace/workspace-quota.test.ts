// Real kernel, real loop devices, real bwrap: run as root. Skipped only outside CI when the
// probe says this machine cannot loop-mount; in CI an unavailable quota is a failure.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  QUOTA_IMAGE_NAME, QuotaError, createQuotaWorkspace, detectQuotaSupport, isQuotaMounted,
  mountQuotaWorkspace, removeQuotaWorkspace, unmountQuotaWorkspace,
} from '../../src/workspace/workspace-quota.js';
import { loopBackingFiles, runInBwrap } from '../helpers/mounts.js';
import { removeTempDir, unmountAllUnder } from '../helpers/host-env.js';

const UID = 201234;
const MiB = 1024 * 1024;
const status = await detectQuotaSupport();
const skip = !status.available && !process.env.CI;

interface Session { dir: string; ws: string; img: string }
let base = '';
let sessions: Session[] = [];
let counter = 0;

function makeSession(owner = UID, mode = 0o755): Session {
  const dir = path.join(base, 'sessions', `s${++counter}`);
  fs.mkdirSync(dir, { mode: 0o711 });
  const ws = path.join(dir, 'workspace');
  fs.mkdirSync(ws);
  fs.chmodSync(ws, mode);
  fs.chownSync(ws, owner, owner);
  const s = { dir, ws, img: path.join(dir, QUOTA_IMAGE_NAME) };
  sessions.push(s);
  return s;
}

/** Mountinfo lines whose mount point is exactly `dir` (independent of the module's parser). */
function mountLines(dir: string): string[] {
  const real = fs.realpathSync(dir);
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.split(' ')[4] === real);
}

const loopsFor = (img: string): string => execFileSync('losetup', ['-j', img], { encoding: 'utf8' }).trim();

const runSandbox = (ws: string, script: string) => runInBwrap(ws, script, UID);

describe.skipIf(skip)('workspace quota (loop-mounted ext4)', () => {
  beforeAll(() => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'bubble-quota-test-'));
    fs.chmodSync(base, 0o711); // the sandbox uid must traverse to its bind source
    fs.mkdirSync(path.join(base, 'sessions'), { mode: 0o711 });
  });

  afterEach(async () => {
    for (const s of sessions) {
      await removeQuotaWorkspace(s.dir, s.ws).catch(() => undefined);
    }
    sessions = [];
    if (base !== '') unmountAllUnder(fs.realpathSync(base));
  });

  afterAll(() => {
    if (base === '') return;
    removeTempDir(fs.realpathSync(base));
  });

  it('reports support on this machine', () => {
    expect(status).toEqual({ available: true, reason: null });
  });

  it('mounts an 8 MiB ext4 workspace owned by the sandbox uid, empty, nosuid+nodev but exec', async () => {
    const s = makeSession();
    await createQuotaWorkspace(s.dir, s.ws, 8 * MiB, { uid: UID, gid: UID });
    const lines = mountLines(s.ws);
    expect(lines).toHaveLength(1);
    const line = lines[0] ?? '';
    expect(line).toMatch(/ - ext4 \/dev\/loop\d+ /);
    const opts = (line.split(' ')[5] ?? '').split(',');
    expect(opts).toEqual(expect.arrayContaining(['rw', 'nosuid', 'nodev']));
    expect(opts).not.toContain('noexec');
    expect(await isQuotaMounted(s.ws)).toBe(true);
    const st = fs.statSync(s.ws);
    expect([st.uid, st.gid]).toEqual([UID, UID]);
    expect(fs.readdirSync(s.ws)).toEqual([]);
    const img = fs.statSync(s.img);
    expect(img.size).toBe(8 * MiB);
    expect(img.mode & 0o777).toBe(0o600);
    expect(img.blocks * 512).toBeLessThan(MiB); // sparse until written
  });

  it('stops a sandboxed dd at the quota with ENOSPC and the host image stays within it', async () => {
    const s = makeSession();
    await createQuotaWorkspace(s.dir, s.ws, 8 * MiB, { uid: UID, gid: UID });
    const r = await runSandbox(s.ws, [
      "printf '#!/bin/sh\\necho script-ran\\n' > run.sh && chmod +x run.sh && ./run.sh",
      'dd if=/dev/zero of=big bs=1M count=20; echo rc=$?',
    ].join('; '));
    expect(r.out).toContain('script-ran');
    expect(r.out).toContain('No space left on device');
    expect(r.out).toContain('rc=1');
    expect(fs.statSync(path.join(s.ws, 'big')).uid).toBe(UID);
    const written = fs.statSync(path.join(s.ws, 'big')).size;
    expect(written).toBeGreaterThan(6 * MiB);
    expect(written).toBeLessThan(8 * MiB);
    const allocated = fs.statSync(s.img).blocks * 512;
    console.log(`quota 8 MiB: sandbox wrote ${written} bytes, image allocates ${allocated} bytes on the host`);
    expect(allocated).toBeLessThanOrEqual(8 * MiB + 64 * 1024);
    expect(allocated).toBeGreaterThan(written);
  });

  it('keeps files across unmount and mount, and takes owner and mode from the dir when owner is null', async () => {
    const s = makeSession(UID, 0o700);
    await createQuotaWorkspace(s.dir, s.ws, 8 * MiB, null);
    expect(fs.statSync(s.ws).uid).toBe(UID);
    expect(fs.statSync(s.ws).mode & 0o777).toBe(0o700);
    fs.mkdirSync(path.join(s.ws, 'sub'));
    fs.writeFileSync(path.join(s.ws, 'sub', 'keep.txt'), 'persisted\n');
    await unmountQuotaWorkspace(s.ws);
    expect(await isQuotaMounted(s.ws)).toBe(false);
    expect(mountLines(s.ws)).toHaveLength(0);
    expect(fs.readdirSync(s.ws)).toEqual([]); // the bare mount point underneath
    expect(loopsFor(s.img)).toBe(''); // autoclear released the device
    expect(await mountQuotaWorkspace(s.dir, s.ws)).toBe(true);
    expect(fs.readFileSync(path.join(s.ws, 'sub', 'keep.txt'), 'utf8')).toBe('persisted\n');
    expect(fs.readdirSync(s.ws)).toEqual(['sub']); // clean fsck did not bring lost+found back
    expect(fs.statSync(s.ws).uid).toBe(UID);
  });

  it('remove leaves no mount, no image and no loop device', async () => {
    const s = makeSession();
    await createQuotaWorkspace(s.dir, s.ws, 8 * MiB, { uid: UID, gid: UID });
    expect(loopsFor(s.img)).toMatch(/^\/dev\/loop\d+:/);
    fs.writeFileSync(path.join(s.ws, 'f'), 'x');
    await removeQuotaWorkspace(s.dir, s.ws);
    expect(await isQuotaMounted(s.ws)).toBe(false);
    expect(mountLines(s.ws)).toHaveLength(0);
    expect(fs.existsSync(s.img)).toBe(false);
    expect(loopBackingFiles().filter((f) => f.startsWith(s.dir))).toEqual([]);
    await removeQuotaWorkspace(s.dir, s.ws); // idempotent
    expect(await mountQuotaWorkspace(s.dir, s.ws)).toBe(false); // no image any more
  });

  it('creates and removes 12 workspaces in a row without exhausting loop devices', async () => {
    const creates: number[] = [];
    const removes: number[] = [];
    for (let i = 0; i < 12; i++) {
      const s = makeSession();
      let t = performance.now();
      await createQuotaWorkspace(s.dir, s.ws, 64 * MiB, { uid: UID, gid: UID });
      creates.push(performance.now() - t);
      expect(await isQuotaMounted(s.ws)).toBe(true);
      fs.writeFileSync(path.join(s.ws, 'data'), Buffer.alloc(MiB, 1));
      t = performance.now();
      await removeQuotaWorkspace(s.dir, s.ws);
      removes.push(performance.now() - t);
      expect(loopsFor(s.img)).toBe('');
      expect(fs.existsSync(s.img)).toBe(false);
    }
    expect(loopBackingFiles().filter((f) => f.startsWith(base))).toEqual([]);
    const fmt = (xs: number[]): string => {
      const sorted = [...xs].sort((a, b) => a - b);
      return `min ${sorted[0]?.toFixed(0)} ms, median ${sorted[6]?.toFixed(0)} ms, max ${sorted[11]?.toFixed(0)} ms`;
    };
    console.log(`12 x 64 MiB quota workspaces: create ${fmt(creates)}; remove ${fmt(removes)}`);
    expect([...creates].sort((a, b) => a - b)[6]).toBeLessThan(1000);
  });

  it('is idempotent: double unmount, mount when mounted, concurrent mounts give one mount', async () => {
    const s = makeSession();
    await createQuotaWorkspace(s.dir, s.ws, 8 * MiB, { uid: UID, gid: UID });
    expect(await mountQuotaWorkspace(s.dir, s.ws)).toBe(true);
    expect(mountLines(s.ws)).toHaveLength(1);
    await unmountQuotaWorkspace(s.ws);
    await unmountQuotaWorkspace(s.ws);
    expect(mountLines(s.ws)).toHaveLength(0);
    const both = await Promise.all([mountQuotaWorkspace(s.dir, s.ws), mountQuotaWorkspace(s.dir, s.ws)]);
    expect(both).toEqual([true, true]);
    expect(mountLines(s.ws)).toHaveLength(1);
    expect(execFileSync('losetup', ['-j', s.img], { encoding: 'utf8' }).trim().split('\n')).toHaveLength(1);
  });

  it('unmounts lazily when busy and refuses to mount the image twice until it is released', async () => {
    const s = makeSession();
    await createQuotaWorkspace(s.dir, s.ws, 8 * MiB, { uid: UID, gid: UID });
    fs.writeFileSync(path.join(s.ws, 'data'), 'kept');
    const fd = fs.openSync(path.join(s.ws, 'data'), 'r'); // makes plain umount fail with EBUSY
    const warnings: string[] = [];
    const logger = { warn: (_o: object, msg?: string): void => { warnings.push(msg ?? ''); } };
    try {
      await unmountQuotaWorkspace(s.ws, logger);
      expect(await isQuotaMounted(s.ws)).toBe(false);
      expect(warnings.join('\n')).toContain('lazily');
      expect(loopsFor(s.img)).toMatch(/^\/dev\/loop\d+:/); // still held by the open file
      const err = await mountQuotaWorkspace(s.dir, s.ws, logger).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(QuotaError);
      expect(mountLines(s.ws)).toHaveLength(0);
    } finally {
      fs.closeSync(fd);
    }
    expect(await mountQuotaWorkspace(s.dir, s.ws)).toBe(true); // waits for the autoclear
    expect(fs.readFileSync(path.join(s.ws, 'data'), 'utf8')).toBe('kept');
    expect(execFileSync('losetup', ['-j', s.img], { encoding: 'utf8' }).trim().split('\n')).toHaveLength(1);
  });

  it('checks an image that was not cleanly unmounted and hides the recreated lost+found', async () => {
    const s = makeSession();
    await createQuotaWorkspace(s.dir, s.ws, 8 * MiB, { uid: UID, gid: UID });
    fs.writeFileSync(path.join(s.ws, 'data'), 'kept');
    await unmountQuotaWorkspace(s.ws);
    execFileSync('debugfs', ['-w', '-R', 'ssv state 0', s.img], { stdio: 'ignore' }); // as after a crash
    const warnings: string[] = [];
    const logger = { warn: (_o: object, msg?: string): void => { warnings.push(msg ?? ''); } };
    expect(await mountQuotaWorkspace(s.dir, s.ws, logger)).toBe(true);
    expect(warnings.join('\n')).toContain('repaired');
    expect(fs.readdirSync(s.ws)).toEqual(['data']);
    expect(fs.readFileSync(path.join(s.ws, 'data'), 'utf8')).toBe('kept');
  });

  it('refuses bad input with a QuotaError that names no path, leaving no image behind', async () => {
    const s = makeSession();
    fs.writeFileSync(path.join(s.ws, 'existing'), 'x');
    const err = await createQuotaWorkspace(s.dir, s.ws, 8 * MiB, null).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QuotaError);
    expect((err as Error).message).not.toContain(base);
    expect(fs.existsSync(s.img)).toBe(false);
    fs.rmSync(path.join(s.ws, 'existing'));
    await expect(createQuotaWorkspace(s.dir, s.ws, 1000, null)).rejects.toBeInstanceOf(QuotaError);
    await expect(createQuotaWorkspace(s.dir, s.ws, 8 * MiB + 0.5, null)).rejects.toBeInstanceOf(QuotaError);
    await expect(createQuotaWorkspace(s.dir, s.ws, 8 * MiB, { uid: -1, gid: 0 })).rejects.toBeInstanceOf(QuotaError);
    expect(fs.existsSync(s.img)).toBe(false);
    expect(await isQuotaMounted(s.ws)).toBe(false);
    await createQuotaWorkspace(s.dir, s.ws, 8 * MiB, null);
    await expect(createQuotaWorkspace(s.dir, s.ws, 8 * MiB, null)).rejects.toBeInstanceOf(QuotaError);
    expect(mountLines(s.ws)).toHaveLength(1); // the failed second create did not disturb the first
    expect(fs.existsSync(s.img)).toBe(true);
  });
});
