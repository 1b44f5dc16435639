// The service and a CLI run (or `check`) share the parent cgroup, and test apps (or a CLI beside its
// own sandbox) open several managers in one process: none may kill another's sandboxes when it
// starts or closes.
import { spawn } from 'node:child_process';
import { expect, test } from 'vitest';
import { createCgroupManager, type CgroupManager } from '../../src/sandbox/cgroups.js';

const LIMITS = { memoryBytes: 64 * 1024 * 1024, pids: 16, cpuCores: 1 };

/** A `sleep 30` placed in a new cgroup of `mgr` named `name`; resolves with its death signal. */
async function sleeperIn(mgr: CgroupManager, name: string) {
  const cg = await mgr.create(name, LIMITS);
  expect(cg).not.toBeNull();
  const child = spawn('/bin/sh', ['-c', 'for f in "$@"; do echo $$ > "$f"; done; exec sleep 30', 'sh', ...(cg?.procsFiles ?? [])], { stdio: 'ignore' });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_c, s) => resolve(s)));
  await new Promise((r) => setTimeout(r, 200));
  return { cg, exited };
}

/** Open and close a second manager on the same parent (each cleans up stale children), then check the sleeper still runs. */
async function secondManagerLeavesItAlone(parentName: string, exited: Promise<unknown>): Promise<void> {
  const second = await createCgroupManager({ parentName });
  await second.close();
  const raced = await Promise.race([exited, new Promise<'alive'>((r) => setTimeout(() => r('alive'), 300))]);
  expect(raced).toBe('alive');
}

test('a second manager on the same parent leaves a live process\'s execution cgroup alone', async () => {
  const parentName = `bubble-sandbox-shared-${process.pid}`;
  const first = await createCgroupManager({ parentName });
  expect(first.mode).not.toBe('none');
  // Named after another live process (our parent), as a service beside this process would name it.
  const { cg, exited } = await sleeperIn(first, `exec-${process.ppid}-1`);
  try {
    await secondManagerLeavesItAlone(parentName, exited);
  } finally {
    await cg?.destroy();
    await first.close();
  }
  expect(await exited).toBe('SIGKILL');
});

test('a second manager in the same process leaves the first one\'s cgroup alone; the last one to close cleans up', async () => {
  const parentName = `bubble-sandbox-same-${process.pid}`;
  const first = await createCgroupManager({ parentName });
  expect(first.mode).not.toBe('none');
  const { exited } = await sleeperIn(first, `exec-${process.pid}-900001`);
  try {
    await secondManagerLeavesItAlone(parentName, exited);
  } finally {
    // The first manager is the last open one: closing it removes its leftover (the sleep dies).
    await first.close();
  }
  expect(await exited).toBe('SIGKILL');
});
