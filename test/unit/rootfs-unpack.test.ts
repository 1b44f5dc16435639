// The hardened extractor on its own, outside any sandbox and as whoever runs the tests (root in
// CI): its checks must hold without the unprivileged sandbox around it, the second layer.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { PROJECT_ROOT } from '../helpers/host-env.js';
import { makeTempDir, removeTempDir } from '../helpers/server-process.js';

const UNPACK = path.join(PROJECT_ROOT, 'src', 'sandbox', 'rootfs', 'unpack.py');
const HOSTILE = path.join(PROJECT_ROOT, 'test', 'fixtures', 'rootfs', 'hostile_tar.py');
let dir: string;
let canary: string;
beforeAll(() => {
  dir = makeTempDir('bs-unpack-');
  canary = makeTempDir('bs-unpack-canary-', 0o777);
});
afterAll(() => {
  removeTempDir(dir);
  removeTempDir(canary);
});

function unpack(kind: string): { status: number | null; stdout: string; stderr: string; target: string } {
  const archive = path.join(dir, `${kind}.tar`);
  expect(spawnSync('/usr/bin/python3', [HOSTILE, kind, archive, canary]).status).toBe(0);
  const target = path.join(dir, `${kind}-out`);
  const r = spawnSync('/usr/bin/python3', [UNPACK, target], { input: fs.readFileSync(archive), encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, target };
}

test.each(['absolute', 'dotdot', 'symlink-write', 'hardlink-outside', 'hardlink-absolute', 'corrupt'])('%s is refused (exit 3, one line) and writes nothing outside', (kind) => {
  const r = unpack(kind);
  expect(r.status).toBe(3);
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
  expect(fs.readdirSync(canary)).toEqual([]);
});

test('setuid and setgid bits are stripped even when run as root', () => {
  const r = unpack('setuid');
  expect(r.status, r.stderr).toBe(0);
  expect(fs.statSync(path.join(r.target, 'usr/bin/su')).mode & 0o7777).toBe(0o755);
  expect(fs.statSync(path.join(r.target, 'usr/bin/wall')).mode & 0o7777).toBe(0o755);
});

test('device nodes and FIFOs are never made, even as root', () => {
  const r = unpack('device');
  expect(r.status, r.stderr).toBe(0);
  expect(r.stdout).toMatch(/skipped_devices=2/);
  expect(fs.existsSync(path.join(r.target, 'dev', 'console'))).toBe(false);
  expect(fs.existsSync(path.join(r.target, 'dev', 'fifo'))).toBe(false);
});
