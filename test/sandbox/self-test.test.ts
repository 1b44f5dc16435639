// The isolation self-test against real bwrap: it passes on a correctly set-up host, and it
// reports FAIL when a protection is really missing (no cgroups, no seccomp, sandbox as host root).
import { execFile, execFileSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createHostLayout } from '../../src/sandbox/host-layout.js';
import { createSandboxRunner } from '../../src/sandbox/runner.js';
import { EXEC_HELPER_PATH } from '../helpers/sandbox.js';
import { createSandbox, IS_ROOT, type Sandbox } from '../../src/sandbox/sandbox.js';
import { runSelfTest, SELF_TEST_PROBES, type SelfTestReport } from '../../src/sandbox/self-test.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BASE_ENV = { BUBBLE_SANDBOX_ENVIRONMENTS_DIR: path.join(ROOT, 'environments'), BUBBLE_SANDBOX_LOG_LEVEL: 'silent' };
const CGROUP_PROBES = ['limits/memory', 'limits/pids'];

const ids = (r: SelfTestReport, passed: boolean) => r.probes.filter((p) => p.passed === passed).map((p) => `${p.category}/${p.name}`);
const failures = (r: SelfTestReport) => r.probes.filter((p) => !p.passed).map((p) => `${p.category}/${p.name}: ${p.detail}`).join('\n');

describe('runSelfTest', () => {
  const opened: Sandbox[] = [];
  const open = async (env: Record<string, string> = {}) => {
    const s = await createSandbox(loadConfig({ ...BASE_ENV, ...env }));
    opened.push(s);
    return s;
  };
  afterAll(async () => {
    for (const s of opened) await s.close();
  });

  test('the default sandbox passes every probe', async () => {
    const sandbox = await open();
    const report = await runSelfTest(sandbox);
    expect(report.probes.length).toBe(SELF_TEST_PROBES.length);
    expect(SELF_TEST_PROBES).toEqual(expect.arrayContaining(['environment/proc-environ', 'filesystem/proc-masked']));
    expect(failures(report), 'failing probes').toBe('');
    expect(report.passed).toBe(true);
    const categories = new Set(report.probes.map((p) => p.category));
    for (const c of ['identity', 'capabilities', 'namespaces', 'network', 'filesystem', 'environment', 'fds', 'seccomp', 'limits']) expect(categories).toContain(c);
    for (const p of report.probes) {
      expect(p.detail.length).toBeGreaterThan(0);
      expect(p.duration_ms).toBeGreaterThanOrEqual(0);
    }
    // No host temp paths in what may end up on /readyz.
    expect(JSON.stringify(report)).not.toMatch(/bubble-sandbox-selftest-[A-Za-z0-9]{6}/);
  }, 60_000);

  test('every probe passes in executions forked by a fork server, and each was one', async () => {
    const sandbox = await open({ BUBBLE_SANDBOX_WARM_MIN_AVAILABLE_BYTES: '0' });
    const claims: string[] = [];
    sandbox.runner.warm?.observe({ onClaim: (r) => claims.push(r) });
    const report = await runSelfTest(sandbox, { through: 'fork-server' });
    expect(report.probes.length).toBe(SELF_TEST_PROBES.length);
    expect(failures(report), 'failing probes').toBe('');
    // Every run (each counts a claim, hit or miss) was a hit: forked, none spawned cold.
    expect(claims.length).toBeGreaterThan(20);
    expect(claims.filter((c) => c !== 'hit')).toEqual([]);
    expect(sandbox.runner.warm?.owners()).toEqual([]);
  }, 120_000);

  test('without cgroups exactly the memory and pids probes fail', async () => {
    const sandbox = await open({ BUBBLE_SANDBOX_CGROUPS: 'off' });
    expect(sandbox.cgroupMode).toBe('none');
    const report = await runSelfTest(sandbox);
    expect(report.passed).toBe(false);
    expect(ids(report, false).sort(), failures(report)).toEqual(CGROUP_PROBES);
    const memory = report.probes.find((p) => p.name === 'memory');
    expect(memory?.detail).toMatch(/^no cgroups: memory is not limited/);
  }, 60_000);

  test('a sandbox without its seccomp filter or /proc masks, or running as host root, is reported', async () => {
    const sandbox = await open();
    const layout = createHostLayout();
    try {
      // Same sandbox, but a runner built without the syscall filter, without the /proc masks and
      // without cgroups (while still claiming them, so the memory and pids probes really run and
      // must see no limit).
      const unmasked = { ...layout, procMasks: [] };
      const unfiltered: Sandbox = { ...sandbox, runner: createSandboxRunner({ bwrapPath: 'bwrap', execHelperPath: EXEC_HELPER_PATH, layout: unmasked, seccompProgram: null, cgroups: null }) };
      const r1 = await runSelfTest(unfiltered);
      expect(r1.passed).toBe(false);
      const failed1 = ids(r1, false);
      const expected1 = ['seccomp/mode', 'seccomp/ptrace', 'filesystem/proc-masked', ...CGROUP_PROBES];
      expect(failed1).toEqual(expect.arrayContaining(expected1));
      expect(r1.probes.find((p) => p.name === 'memory')?.detail).toMatch(/ended 'ok'/);
      expect(r1.probes.find((p) => p.name === 'proc-masked')?.detail).toMatch(/not masked: \/proc\/cmdline \(read [1-9]/);
      expect(failed1.filter((id) => !id.startsWith('seccomp/') && !expected1.includes(id)), failures(r1)).toEqual([]);

      if (IS_ROOT) {
        // The documented trap: without a host uid of its own the sandbox writes as host root.
        const asRoot: Sandbox = { ...sandbox, identityFor: () => null };
        const r2 = await runSelfTest(asRoot);
        expect(ids(r2, false)).toContain('identity/host-uid');
        expect(r2.probes.find((p) => p.name === 'host-uid')?.detail).toMatch(/owned by host uid 0\b/);
      }
    } finally {
      layout.dispose();
    }
  }, 90_000);
});

describe('bubble-sandbox check --full', () => {
  const cli = (args: string[], env: Record<string, string> = {}) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [path.join(ROOT, 'bin/bubble-sandbox.js'), ...args], { cwd: ROOT, env: { ...process.env, ...BASE_ENV, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      });
    });

  beforeAll(() => {
    execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'pipe' });
  }, 120_000);

  test('exits 0 and prints a PASS line per probe on this host', async () => {
    const r = await cli(['check', '--full']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines.filter((l) => l.startsWith('PASS  ')).length).toBe(SELF_TEST_PROBES.length);
    expect(r.stdout).toMatch(/^PASS {2}environment\/proc-environ {2}.+ \(\d+ ms\)$/m);
    expect(r.stdout).toMatch(/^PASS {2}filesystem\/proc-masked {2}.+ \(\d+ ms\)$/m);
    expect(lines.filter((l) => l.startsWith('FAIL  '))).toEqual([]);
    expect(r.stdout).toMatch(/^PASS {2}limits\/memory {2}.+ \(\d+ ms\)$/m);
    expect(r.stdout).toMatch(/^\d+ passed, 0 failed/m);
  }, 90_000);

  test('exits non-zero and prints FAIL for the memory probe without cgroups', async () => {
    const r = await cli(['check', '--full'], { BUBBLE_SANDBOX_CGROUPS: 'off' });
    expect(r.code).not.toBe(0);
    expect(r.stdout).toMatch(/^FAIL {2}limits\/memory {2}no cgroups: memory is not limited/m);
    expect(r.stdout).toMatch(/^\d+ passed, 2 failed/m);
  }, 90_000);

  test('--json carries the self-test report', async () => {
    const r = await cli(['check', '--full', '--json'], { BUBBLE_SANDBOX_CGROUPS: 'off' });
    expect(r.code).toBe(1);
    const parsed = JSON.parse(r.stdout) as { available: boolean; self_test: SelfTestReport };
    expect(parsed.available).toBe(true);
    expect(parsed.self_test.passed).toBe(false);
    expect(ids(parsed.self_test, false).sort()).toEqual(CGROUP_PROBES);
  }, 90_000);

  test('without --full the basic check is unchanged', async () => {
    const r = await cli(['check']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^sandbox: available/m);
    expect(r.stdout).not.toMatch(/^(?:PASS|FAIL) {2}/m);
  }, 60_000);
});
