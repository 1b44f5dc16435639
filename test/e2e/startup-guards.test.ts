// Start-ups the service refuses, as real processes: a listen address other machines reach without
// an API key, and a sandbox uid range another live instance on this host holds.
import fs from 'node:fs';
import { describe, expect, test } from 'vitest';
import {
  api, freePort, runCli, startServer, useTempDirs } from '../helpers/server-process.js';

const IS_ROOT = process.getuid?.() === 0;
const tempDir = useTempDirs();

const records = (dir: string) => fs.readdirSync(dir).filter((n) => n.endsWith('.json'));

test('HOST=0.0.0.0 without API_KEY: the service exits non-zero at once, naming API_KEY and ALLOW_UNAUTHENTICATED', async () => {
  const started = Date.now();
  const r = await runCli(['serve'], {
    env: {
      BUBBLE_SANDBOX_HOST: '0.0.0.0',
      BUBBLE_SANDBOX_PORT: String(await freePort()),
      BUBBLE_SANDBOX_WORKSPACE_DIR: tempDir('bs-e2e-open-'),
      BUBBLE_SANDBOX_UID_LOCK_DIR: tempDir('bs-e2e-open-locks-', 0o755),
    },
    timeoutMs: 15_000,
  });
  expect(r.signal).toBeNull(); // it exited by itself instead of serving until killed
  expect(r.code).not.toBe(0);
  expect(r.stderr).toContain('BUBBLE_SANDBOX_HOST=0.0.0.0');
  expect(r.stderr).toContain('BUBBLE_SANDBOX_API_KEY');
  expect(r.stderr).toContain('BUBBLE_SANDBOX_ALLOW_UNAUTHENTICATED=true');
  expect(Date.now() - started).toBeLessThan(10_000);
}, 30_000);

describe.runIf(IS_ROOT)('two instances on one host (root: sandbox uids are handed out)', () => {
  test('an overlapping uid range is refused naming the other pid and range; another range starts; a crashed one\'s record is cleared', async () => {
    const locks = tempDir('bs-e2e-uid-locks-', 0o755);
    const env = { BUBBLE_SANDBOX_UID_LOCK_DIR: locks };
    const first = await startServer({ workspaceDir: tempDir('bs-e2e-uid-a-'), env });
    expect(records(locks)).toHaveLength(1);

    // Same defaults, same host: refused within seconds, without ever serving.
    const started = Date.now();
    const second = await runCli(['serve'], {
      env: { ...env, BUBBLE_SANDBOX_PORT: String(await freePort()), BUBBLE_SANDBOX_WORKSPACE_DIR: tempDir('bs-e2e-uid-b-'), BUBBLE_SANDBOX_SELF_TEST_ON_START: 'false' },
      timeoutMs: 15_000,
    });
    expect(second.signal).toBeNull();
    expect(second.code).not.toBe(0);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(second.stderr).toContain(`pid ${first.pid} holds uids 200000-204095`);
    expect(second.stderr).toContain('BUBBLE_SANDBOX_SANDBOX_UID_BASE');
    expect(records(locks)).toHaveLength(1);
    expect((await api(first.baseUrl, 'GET', '/healthz')).status).toBe(200); // the first one is untouched

    // A range of its own starts beside it.
    const third = await startServer({ workspaceDir: tempDir('bs-e2e-uid-c-'), env: { ...env, BUBBLE_SANDBOX_SANDBOX_UID_BASE: '300000' } });
    expect(records(locks)).toHaveLength(2);

    // A graceful stop releases the range; a crash leaves a record the next start removes.
    expect((await first.stop('SIGTERM')).code).toBe(0);
    expect(records(locks)).toHaveLength(1);
    await third.stop('SIGKILL');
    expect(records(locks)).toHaveLength(1);
    const fourth = await startServer({ workspaceDir: tempDir('bs-e2e-uid-d-'), env: { ...env, BUBBLE_SANDBOX_SANDBOX_UID_BASE: '300000' } });
    const left = records(locks);
    expect(left).toHaveLength(1);
    expect(left[0]).toMatch(new RegExp(`^${fourth.pid}-`));
    expect((await fourth.stop()).code).toBe(0);
    expect(records(locks)).toEqual([]);
  }, 90_000);
});
