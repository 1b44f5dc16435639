// build/bubble-sandbox-exec on its own (no bwrap in between): each thing the former sh → env -i →
// nsenter → setpriv chain did is checked on a plain program it execs, so a lost step shows here
// first. The same properties are proven through real bwrap by isolation, limits, netns and
// self-test tests.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, test } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createCgroupManager, type ActiveCgroupManager } from '../../src/sandbox/cgroups.js';
import { createNetns } from '../../src/sandbox/network/netns.js';
import { createSandbox } from '../../src/sandbox/sandbox.js';
import { checkExecHelper, execHelperArgs } from '../../src/sandbox/spawn.js';
import { makeTempDir } from '../helpers/host-env.js';
import { DEFAULT_LIMITS, EXEC_HELPER_PATH, IS_ROOT, TEST_UID } from '../helpers/sandbox.js';

const run = promisify(execFile);
const PY = '/usr/bin/python3';
// Everything the helper could have changed, as the exec'd program sees it.
const REPORT = String.raw`
import json, os
status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines() if ':' in l)
limits = {l[:26].strip(): l[26:].split()[:2] for l in open('/proc/self/limits').read().splitlines()[1:]}
print(json.dumps({
  'environ': open('/proc/self/environ', 'rb').read().decode(),
  'uid': status['Uid'].split(), 'gid': status['Gid'].split(), 'groups': status['Groups'].split(),
  'nnp': status['NoNewPrivs'].strip(), 'limits': limits,
  'cgroup': open('/proc/self/cgroup').read(), 'netns': os.readlink('/proc/self/ns/net'),
  'fds': sorted(os.listdir('/proc/self/fd')),
}))
`;
type Report = { environ: string; uid: string[]; gid: string[]; groups: string[]; nnp: string; limits: Record<string, string[]>; cgroup: string; netns: string; fds: string[] };

const spec = { limits: { ...DEFAULT_LIMITS, openFiles: 77, fileSizeBytes: 5 * 1024 * 1024 }, cpuSeconds: 9.2, identity: null, netnsPath: undefined };

/** Descriptors a program started directly from this process gets (a test worker may pass some on). */
async function directFds(): Promise<string[]> {
  const { stdout } = await run(PY, ['-I', '-c', 'import os, json; print(json.dumps(sorted(os.listdir("/proc/self/fd"))))']);
  return JSON.parse(stdout) as string[];
}

/** The helper's report; as root it starts with supplementary groups (setpriv), which it must clear. */
async function report(args: string[], env: NodeJS.ProcessEnv = { LEAK_ME: 'x' }): Promise<Report> {
  const [cmd, ...rest] = IS_ROOT ? ['/usr/bin/setpriv', '--groups=4,24', '--', EXEC_HELPER_PATH, ...args] : [EXEC_HELPER_PATH, ...args];
  const { stdout } = await run(cmd ?? EXEC_HELPER_PATH, rest, { env });
  return JSON.parse(stdout) as Report;
}

describe('bubble-sandbox-exec', () => {
  test('sets the rlimits, execs with an empty environment and passes only stdio', async () => {
    const r = await report(execHelperArgs(spec, [], [PY, '-I', '-c', REPORT]));
    expect(r.environ).toBe(''); // the helper itself was started with LEAK_ME
    expect(r.limits['Max open files']).toEqual(['77', '77']);
    expect(r.limits['Max file size']).toEqual([String(5 * 1024 * 1024), String(5 * 1024 * 1024)]);
    expect(r.limits['Max cpu time']).toEqual(['10', '10']);
    expect(r.limits['Max core file size']).toEqual(['0', '0']);
    expect(r.fds).toEqual(await directFds()); // nothing of its own passed on
  });

  test.skipIf(!IS_ROOT)('drops to the given uid and gid with no groups and no_new_privs, and cannot take root back', async () => {
    const r = await report(execHelperArgs({ ...spec, identity: { uid: TEST_UID, gid: TEST_UID + 1 } }, [], [PY, '-I', '-c', REPORT]));
    expect(r.uid).toEqual(Array(4).fill(String(TEST_UID)));
    expect(r.gid).toEqual(Array(4).fill(String(TEST_UID + 1)));
    expect(r.groups).toEqual([]);
    expect(r.nnp).toBe('1');
    // Without an identity (the service is not root) nothing is dropped and no_new_privs is left to bwrap.
    const same = await report(execHelperArgs(spec, [], [PY, '-I', '-c', REPORT]));
    expect(same.uid[0]).toBe('0');
    expect(same.groups).toEqual(['4', '24']); // so the empty list above is the helper's doing
    expect(same.nnp).toBe('0');
  });

  test.skipIf(!IS_ROOT)('joins the cgroups and the network namespace it is given, keeping no namespace descriptor', async () => {
    const mgr = await createCgroupManager({ parentName: `bs-test-exec-${process.pid}` });
    expect(mgr.mode).not.toBe('none');
    const cg = await (mgr as ActiveCgroupManager).create(`exec-${process.pid}-1`, { memoryBytes: 64 * 1024 * 1024, pids: 16, cpuCores: 1 });
    const ns = await createNetns();
    try {
      const r = await report(execHelperArgs({ ...spec, identity: { uid: TEST_UID, gid: TEST_UID }, netnsPath: ns.path }, cg.procsFiles, [PY, '-I', '-c', REPORT]));
      const lines = r.cgroup.split('\n').filter((l) => l.includes(`exec-${process.pid}-1`));
      expect(lines.length).toBe(cg.procsFiles.length); // one line per hierarchy joined
      expect(r.netns).toBe(fs.readlinkSync(`/proc/${process.pid}/fd/${ns.fd}`));
      expect(r.netns).not.toBe(fs.readlinkSync('/proc/self/ns/net'));
      expect(r.fds).toEqual(await directFds()); // the namespace descriptor was closed
    } finally {
      ns.close();
      await cg.destroy();
      await mgr.close();
      // The manager leaves its (empty) parent, as the service's does; the test's own goes here.
      for (const hier of fs.readdirSync('/sys/fs/cgroup')) {
        try {
          fs.rmdirSync(path.join('/sys/fs/cgroup', hier, `bs-test-exec-${process.pid}`));
        } catch {
          // not in this hierarchy
        }
      }
    }
  });

  test('refuses what it cannot do before running anything', async () => {
    const fail = (args: string[]) => run(EXEC_HELPER_PATH, args).then(() => null, (e: { code: number; stderr: string }) => e);
    const base = ['--nofile', '64', '--fsize', '1024', '--cpu', '5'];
    const noSuchCgroup = await fail([...base, '--cgroup-procs', '/nonexistent/cgroup.procs', '--', '/bin/true']);
    expect(noSuchCgroup?.code).toBe(125);
    expect(noSuchCgroup?.stderr).toMatch(/^bubble-sandbox-exec: cannot open \/nonexistent/);
    expect((await fail([...base, '--netns', '/nonexistent', '--', '/bin/true']))?.code).toBe(125);
    expect((await fail(['--nofile', '-1', '--fsize', '1024', '--cpu', '5', '--', '/bin/true']))?.code).toBe(125);
    expect((await fail(['--nofile', '64', '--', '/bin/true']))?.code).toBe(125);
    expect((await fail([...base, '--uid', '5', '--', '/bin/true']))?.code).toBe(125);
    expect((await fail([...base, '--uid', '0', '--gid', '0', '--', '/bin/true']))?.code).toBe(125);
    expect((await fail([...base, '--', 'true']))?.code).toBe(125);
    expect((await fail([...base, '--', '/nonexistent/bwrap']))?.code).toBe(127);
  });
});

describe('checkExecHelper', () => {
  const dir = makeTempDir('bs-exec-helper-');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('accepts the built helper and refuses a missing one or one others may replace', () => {
    expect(() => checkExecHelper(EXEC_HELPER_PATH)).not.toThrow();
    expect(() => checkExecHelper(path.join(dir, 'missing'))).toThrow(/missing or not executable.*build-exec-helper/);
    const copy = path.join(dir, 'helper');
    fs.copyFileSync(EXEC_HELPER_PATH, copy);
    fs.chmodSync(dir, 0o755);
    fs.chmodSync(copy, 0o775);
    expect(() => checkExecHelper(copy)).toThrow(/may be changed by another user/);
    fs.chmodSync(copy, 0o755);
    expect(() => checkExecHelper(copy)).not.toThrow();
  });

  test('the sandbox (service, check, CLI) does not start without the helper', async () => {
    const config = { ...loadConfig({}), cgroups: 'off' as const, execHelperPath: path.join(dir, 'missing') };
    await expect(createSandbox(config)).rejects.toThrow(/exec helper .*missing or not executable/);
  });
});
