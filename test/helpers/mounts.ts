// The kernel's view of quota mounts and loop devices, read independently of the code under test.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import { expect } from 'vitest';

export interface Mount { point: string; options: string[]; fsType: string; source: string }

/** Mounts at or below `dir` (a resolved path), from /proc/self/mountinfo. */
export function mountsUnder(dir: string): Mount[] {
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' '))
    .filter((f) => f[4] === dir || f[4]?.startsWith(`${dir}/`))
    .map((f) => ({ point: f[4] ?? '', options: (f[5] ?? '').split(','), fsType: f[f.indexOf('-') + 1] ?? '', source: f[f.indexOf('-') + 2] ?? '' }));
}

/** The one mount on `dir`, checked to be a quota image: loop-backed ext4, nosuid, nodev. */
export function expectQuotaMount(dir: string): void {
  const mounts = mountsUnder(dir);
  expect(mounts.map((m) => m.point)).toEqual([dir]);
  const [m] = mounts;
  expect(m?.fsType).toBe('ext4');
  expect(m?.source).toMatch(/^\/dev\/loop\d+$/);
  expect(m?.options).toEqual(expect.arrayContaining(['rw', 'nosuid', 'nodev']));
}

/** Backing files of every loop device attached now. */
export function loopBackingFiles(): string[] {
  return execFileSync('losetup', ['-l', '-n', '-O', 'BACK-FILE'], { encoding: 'utf8' }).split('\n').map((l) => l.trim()).filter(Boolean);
}

/**
 * Runs `script` with /bin/sh as `uid` in a minimal bwrap sandbox with `ws` bound read-write at
 * /workspace (the cwd): what a sandboxed process does to a workspace, without the service.
 */
export function runInBwrap(ws: string, script: string, uid: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bwrap', ['--unshare-all', '--die-with-parent', '--ro-bind', '/usr', '/usr',
      '--symlink', 'usr/bin', '/bin', '--symlink', 'usr/lib', '/lib', '--symlink', 'usr/lib64', '/lib64',
      '--proc', '/proc', '--dev', '/dev', '--bind', ws, '/workspace', '--chdir', '/workspace',
      '--', '/bin/sh', '-c', script], { uid, gid: uid, cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', reject);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, out }); });
  });
}
