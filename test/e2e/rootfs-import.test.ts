// `bubble-sandbox rootfs import` against hostile and broken archives: each is refused or
// neutralised, nothing appears outside the target (a canary directory the archives aim at stays
// empty), and a refused import leaves no object, no name and no staging behind.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { PROJECT_ROOT } from '../helpers/host-env.js';
import { makeTempDir, removeTempDir, runCli } from '../helpers/server-process.js';

const FIXTURES = path.join(PROJECT_ROOT, 'test', 'fixtures', 'rootfs');
const canRun = process.getuid?.() === 0 || process.env.CI === 'true';

describe.skipIf(!canRun)('rootfs import', () => {
  let dir: string;
  let canary: string;
  let env: Record<string, string>;
  beforeAll(() => {
    dir = makeTempDir('bs-rootfs-import-');
    canary = makeTempDir('bs-rootfs-canary-', 0o777);
    env = { BUBBLE_SANDBOX_WORKSPACE_DIR: path.join(dir, 'ws') };
  });
  afterAll(() => {
    removeTempDir(dir);
    removeTempDir(canary);
  });

  function hostile(kind: string): string {
    const out = path.join(dir, `${kind}.tar`);
    const r = spawnSync('/usr/bin/python3', [path.join(FIXTURES, 'hostile_tar.py'), kind, out, canary], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    return out;
  }
  const store = () => path.join(dir, 'ws', 'rootfs');
  const objects = () => (fs.existsSync(path.join(store(), 'objects')) ? fs.readdirSync(path.join(store(), 'objects')) : []);
  const tree = (name: string) => {
    const rec = JSON.parse(fs.readFileSync(path.join(store(), 'names', `${name}.json`), 'utf8')) as { sha256: string };
    return path.join(store(), 'objects', rec.sha256);
  };

  test.each([
    ['absolute', /absolute member name/],
    ['dotdot', /member name with "\.\."/],
    ['symlink-write', /written through a link/],
    ['hardlink-outside', /member name with "\.\."/],
    ['hardlink-absolute', /absolute member name/],
    ['corrupt', /not a readable tar archive/],
  ])('%s: refused with one line, nothing left anywhere', async (kind, message) => {
    const before = objects().length;
    const r = await runCli(['rootfs', 'import', `bad-${kind}`, hostile(kind)], { env });
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(message);
    expect(fs.readdirSync(canary)).toEqual([]);
    expect(objects()).toHaveLength(before);
    expect(fs.existsSync(path.join(store(), 'names', `bad-${kind}.json`))).toBe(false);
    expect(fs.readdirSync(path.join(store(), 'staging'))).toEqual([]); // made by the import, empty again
  });

  test('device nodes and FIFOs are skipped, the import succeeds', async () => {
    const r = await runCli(['rootfs', 'import', 'devices', hostile('device')], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/skipped_devices=2/);
    expect(fs.existsSync(path.join(tree('devices'), 'dev', 'console'))).toBe(false);
    expect(fs.existsSync(path.join(tree('devices'), 'dev', 'fifo'))).toBe(false);
    expect(fs.readFileSync(path.join(tree('devices'), 'etc', 'ordinary'), 'utf8')).toBe('ok\n');
  });

  test('setuid and setgid bits are stripped', async () => {
    const r = await runCli(['rootfs', 'import', 'setid', hostile('setuid')], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(fs.statSync(path.join(tree('setid'), 'usr', 'bin', 'su')).mode & 0o7777).toBe(0o755);
    expect(fs.statSync(path.join(tree('setid'), 'usr', 'bin', 'wall')).mode & 0o7777).toBe(0o755);
    // Unpacked as the unprivileged ROOTFS_UID, never as root.
    if (process.getuid?.() === 0) expect(fs.statSync(path.join(tree('setid'), 'usr', 'bin', 'su')).uid).not.toBe(0);
  });

  test('the same archive twice is unpacked once; list and remove', async () => {
    const archive = path.join(dir, 'mini.tar');
    expect(spawnSync('bash', [path.join(FIXTURES, 'make-mini-rootfs.sh'), archive]).status).toBe(0);
    const first = await runCli(['rootfs', 'import', 'mini-a', archive], { env });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/Bubble Test Linux, without python3, unpacked/);
    const count = objects().length;
    const second = await runCli(['rootfs', 'import', 'mini-b', archive], { env });
    expect(second.stdout).toMatch(/reused/);
    expect(objects()).toHaveLength(count);
    const list = await runCli(['rootfs', 'list', '--json'], { env });
    const names = (JSON.parse(list.stdout) as { name: string; python: boolean }[]).map((r) => r.name);
    expect(names).toEqual(expect.arrayContaining(['mini-a', 'mini-b']));
    const envs = await runCli(['list-environments', '--json'], { env });
    expect(JSON.parse(envs.stdout)).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'mini-a', kind: 'rootfs', python: false })]));
    // The command line runs in it with -e, as it does in a venv environment.
    const run = await runCli(['exec-command', '-e', 'mini-b', '--agent', 'cat /etc/marker; ls /usr/share 2>&1 || true'], { env });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^mini-rootfs-marker\n.*cannot access '\/usr\/share'/s);
    expect((await runCli(['rootfs', 'remove', 'mini-a'], { env })).code).toBe(0);
    expect(objects()).toHaveLength(count); // still named mini-b
    expect((await runCli(['rootfs', 'remove', 'mini-b'], { env })).code).toBe(0);
    expect(objects()).toHaveLength(count - 1);
  });
});
