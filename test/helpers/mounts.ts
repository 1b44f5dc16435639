// The kernel's view of quota mounts and loop devices, read independently of the code under test.
import { execFileSync } from 'node:child_process';
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
