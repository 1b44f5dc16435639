// Session groups (a session's processes, see session-manager.ts): cgroups nested in a group whose
// memory and pids limits bound them together; destroy() kills all of it; a crashed instance's
// groups are removed at the next start like its execution cgroups. Real cgroups, as root.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { createCgroupManager, type CgroupManager, type ExecutionCgroup } from '../../src/sandbox/cgroups.js';

const MiB = 1024 * 1024;
const IS_ROOT = process.getuid?.() === 0;
const parentName = `bubble-sandbox-session-${process.pid}`;
const parentDirs = new Set<string>();

/** Runs script inside the cgroup (joined first, as the runner's wrapper does). */
function runIn(cg: ExecutionCgroup, script: string) {
  const child = spawn('/bin/sh', ['-c', `for f in "$@"; do echo $$ > "$f" || exit 97; done\n${script}`, 'sh', ...cg.procsFiles], { stdio: ['ignore', 'pipe', 'ignore'] });
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_c, s) => resolve(s)));
  return { exited, output: () => stdout };
}
const waitFor = async (probe: () => boolean, ms = 5000) => {
  const deadline = Date.now() + ms;
  while (!probe() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  return probe();
};
/** The group's directories: the parents of the nested cgroup's. */
const groupDirsOf = (cg: ExecutionCgroup) => cg.procsFiles.map((f) => path.dirname(path.dirname(f)));

afterAll(() => {
  for (const dir of parentDirs) fs.rmdirSync(dir);
});

describe.skipIf(!IS_ROOT)('session groups', () => {
  let mgr: CgroupManager;

  test('a nested cgroup sits in the group, the group\'s limits bind it, destroy() kills and removes everything', async () => {
    mgr = await createCgroupManager({ parentName });
    expect(mgr.mode).not.toBe('none');
    const group = await mgr.createGroup(`sess-${process.pid}-1`, { memoryBytes: 64 * MiB, pids: 12, cpuCores: 1 });
    expect(group).not.toBeNull();
    if (!group) return;
    // Its own limits are an execution's, larger than the group's.
    const cg = await group.create(`proc-${process.pid}-2`, { memoryBytes: 512 * MiB, pids: 128, cpuCores: 1 });
    const dirs = groupDirsOf(cg);
    for (const d of dirs) {
      expect(path.basename(d)).toBe(`sess-${process.pid}-1`);
      parentDirs.add(path.dirname(d));
    }
    const pidsMax = dirs.map((d) => path.join(d, 'pids.max')).find((f) => fs.existsSync(f));
    expect(pidsMax && fs.readFileSync(pidsMax, 'utf8').trim()).toBe('12');
    const memDir = dirs.find((d) => fs.existsSync(path.join(d, 'memory.limit_in_bytes')) || fs.existsSync(path.join(d, 'memory.max')));
    const memLimit = memDir && (fs.existsSync(path.join(memDir, 'memory.limit_in_bytes')) ? 'memory.limit_in_bytes' : 'memory.max');
    expect(memDir && memLimit && Number(fs.readFileSync(path.join(memDir, memLimit), 'utf8'))).toBe(64 * MiB);
    // Forks until fork fails: the group's 12 stop it, not the nested cgroup's 128.
    const forkAll = 'import os, time\nn = 0\nwhile n < 100:\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n    if pid == 0:\n        time.sleep(30); os._exit(0)\n    n += 1\nprint("forked", n, flush=True)\ntime.sleep(30)';
    const run = runIn(cg, `exec python3 -c '${forkAll}'`);
    expect(await waitFor(() => /forked \d+\n/.test(run.output()), 10_000), run.output()).toBe(true);
    const forked = Number(/forked (\d+)/.exec(run.output())?.[1]);
    expect(forked, run.output()).toBeGreaterThan(5);
    expect(forked).toBeLessThan(12);
    await group.destroy();
    expect(await run.exited).toBe('SIGKILL');
    expect(dirs.filter((d) => fs.existsSync(d))).toEqual([]);
    await expect(group.create(`proc-${process.pid}-3`, { memoryBytes: 64 * MiB, pids: 8, cpuCores: 1 })).rejects.toThrow(/removed/);
  });

  test('a crashed instance\'s group (named after a dead pid) is removed at the next start, its processes killed', async () => {
    // A pid that existed and is gone: the crashed instance.
    const gone = spawn('/bin/true');
    const deadPid = gone.pid ?? 0;
    await new Promise((r) => gone.once('exit', r));
    const group = await mgr.createGroup(`sess-${deadPid}-7`, { memoryBytes: 64 * MiB, pids: 16, cpuCores: 1 });
    if (!group) throw new Error('no group');
    const cg = await group.create(`proc-${deadPid}-8`, { memoryBytes: 64 * MiB, pids: 16, cpuCores: 1 });
    const run = runIn(cg, 'echo in; exec sleep 30');
    expect(await waitFor(() => run.output().includes('in'))).toBe(true);
    const next = await createCgroupManager({ parentName });
    expect(await run.exited).toBe('SIGKILL');
    expect(groupDirsOf(cg).filter((d) => fs.existsSync(d))).toEqual([]);
    await next.close();
    await mgr.close();
  });
});
