// The service and a CLI run (or `check`) share the parent cgroup: neither may kill the other's
// sandboxes when it starts or closes.
import { spawn } from 'node:child_process';
import { expect, test } from 'vitest';
import { createCgroupManager } from '../../src/sandbox/cgroups.js';

test('a second manager on the same parent leaves a live process\'s execution cgroup alone', async () => {
  const parentName = `bubble-sandbox-shared-${process.pid}`;
  const first = await createCgroupManager({ parentName });
  expect(first.mode).not.toBe('none');
  // Named after another live process (our parent), as a service beside this process would name it.
  const cg = await first.create(`exec-${process.ppid}-1`, { memoryBytes: 64 * 1024 * 1024, pids: 16, cpuCores: 1 });
  expect(cg).not.toBeNull();
  const child = spawn('/bin/sh', ['-c', 'for f in "$@"; do echo $$ > "$f"; done; exec sleep 30', 'sh', ...(cg?.procsFiles ?? [])], { stdio: 'ignore' });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_c, s) => resolve(s)));
  try {
    await new Promise((r) => setTimeout(r, 200));
    // A second manager cleans up stale children at start and at close.
    const second = await createCgroupManager({ parentName });
    await second.close();
    const raced = await Promise.race([exited, new Promise<'alive'>((r) => setTimeout(() => r('alive'), 300))]);
    expect(raced).toBe('alive');
  } finally {
    await cg?.destroy();
    await first.close();
  }
  expect(await exited).toBe('SIGKILL');
});

// Test apps (and a CLI beside its own sandbox) open several managers in one process: a manager
// opened or closed beside another must not take that one's live cgroups, which carry the same pid.
test('a second manager in the same process leaves the first one\'s cgroup alone; the last one to close cleans up', async () => {
  const parentName = `bubble-sandbox-same-${process.pid}`;
  const first = await createCgroupManager({ parentName });
  expect(first.mode).not.toBe('none');
  const cg = await first.create(`exec-${process.pid}-900001`, { memoryBytes: 64 * 1024 * 1024, pids: 16, cpuCores: 1 });
  expect(cg).not.toBeNull();
  const child = spawn('/bin/sh', ['-c', 'for f in "$@"; do echo $$ > "$f"; done; exec sleep 30', 'sh', ...(cg?.procsFiles ?? [])], { stdio: 'ignore' });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_c, s) => resolve(s)));
  try {
    await new Promise((r) => setTimeout(r, 200));
    const second = await createCgroupManager({ parentName });
    await second.close();
    const raced = await Promise.race([exited, new Promise<'alive'>((r) => setTimeout(() => r('alive'), 300))]);
    expect(raced).toBe('alive');
  } finally {
    // The first manager is the last open one: closing it removes its leftover (the sleep dies).
    await first.close();
  }
  expect(await exited).toBe('SIGKILL');
});
