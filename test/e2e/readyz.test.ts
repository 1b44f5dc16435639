// /readyz of a real server: the sandbox probe, cgroups, seccomp, quota and the start-up self-test.
import { afterAll, expect, test } from 'vitest';
import { api, killAllServers, makeTempDir, removeTempDir, sleep, startServer } from '../helpers/server-process.js';

const dirs: string[] = [];
afterAll(async () => {
  await killAllServers();
  for (const d of dirs) removeTempDir(d);
});

interface Ready {
  status: string;
  reason?: string;
  checks: { sandbox: { available: boolean }; cgroups: { mode: string }; seccomp: boolean; workspace_quota: { enabled: boolean }; self_test: { status: string; passed: number; failed: number; failed_probes: string[] } };
}

async function readyWhenSelfTestDone(baseUrl: string): Promise<{ status: number; body: Ready }> {
  for (let i = 0; i < 240; i++) {
    const r = await api<Ready>(baseUrl, 'GET', '/readyz');
    if (r.body.checks.self_test.status !== 'running') return r;
    await sleep(250);
  }
  throw new Error('self-test did not finish in 60 s');
}

test('the start-up self-test passes here and /readyz reports it with every protection on', async () => {
  const dir = makeTempDir('bs-e2e-ready-');
  dirs.push(dir);
  const server = await startServer({ workspaceDir: dir, env: { BUBBLE_SANDBOX_SELF_TEST_ON_START: 'true' } });
  const r = await readyWhenSelfTestDone(server.baseUrl);
  expect(r.status).toBe(200);
  expect(r.body.status).toBe('ready');
  expect(r.body.checks.sandbox.available).toBe(true);
  expect(r.body.checks.cgroups.mode).not.toBe('none');
  expect(r.body.checks.seccomp).toBe(true);
  expect(r.body.checks.workspace_quota.enabled).toBe(true);
  expect(r.body.checks.self_test).toMatchObject({ status: 'passed', failed: 0, failed_probes: [] });
  expect(r.body.checks.self_test.passed).toBeGreaterThanOrEqual(12);
}, 90_000);

test('with cgroups turned off the service still runs, and /readyz is 503 naming the unprotected limits', async () => {
  const dir = makeTempDir('bs-e2e-ready-off-');
  dirs.push(dir);
  const server = await startServer({ workspaceDir: dir, env: { BUBBLE_SANDBOX_SELF_TEST_ON_START: 'true', BUBBLE_SANDBOX_CGROUPS: 'off' } });
  const r = await readyWhenSelfTestDone(server.baseUrl);
  expect(r.status).toBe(503);
  expect(r.body.status).toBe('unavailable');
  expect(r.body.reason).toMatch(/self-test failed: .*limits\/memory/);
  expect(r.body.checks.cgroups.mode).toBe('none');
  expect(r.body.checks.self_test.status).toBe('failed');
  expect(r.body.checks.self_test.failed_probes.sort()).toEqual(['limits/memory', 'limits/pids']);
}, 90_000);
