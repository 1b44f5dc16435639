// The tests' clean-up after a killed server (killAllServers, then removeTempDir): the processes
// the server had started end before its directory is removed. A pool build's mount that finished
// after the clean-up had read the mount table left a mounted workspace, and rmdir said EBUSY
// (e2e/disconnect's afterAll, once, with a second service loading the machine).
import fs from 'node:fs';
import { describe, expect, test } from 'vitest';
import { listHostProcesses, readHostProcess, stillRunning, waitUntil, type HostProcess } from '../helpers/host-processes.js';
import { loopBackingFiles, mountsUnder } from '../helpers/mounts.js';
import { killAllServers, makeTempDir, removeTempDir, sleep, startServer } from '../helpers/server-process.js';

describe('clean-up after a killed server', () => {
  test('killAllServers returns once the tools the server was running have ended; the directory then goes whole', async () => {
    const dir = fs.realpathSync(makeTempDir('bs-e2e-kill-'));
    let resume = () => undefined as void;
    try {
      const server = await startServer({ workspaceDir: dir, env: { BUBBLE_SANDBOX_WORKSPACE_POOL_SIZE: '16' } });
      // A pool build's mkfs or mount, held stopped: a tool that outlives the server for 800 ms.
      // Each runs a few ms: one that ended before the SIGSTOP reached it is passed over.
      const isTool = (p: HostProcess) => p.ppid === server.pid && /^(mkfs\.ext4|mount) /.test(p.command);
      let tool: HostProcess | undefined;
      for (const deadline = Date.now() + 20_000; tool === undefined && Date.now() < deadline; await sleep(1)) {
        const seen = listHostProcesses().find(isTool);
        if (seen === undefined) continue;
        try {
          process.kill(seen.pid, 'SIGSTOP');
        } catch {
          continue; // gone already
        }
        // Stopped for sure (state T), not a process that was already on its way out.
        const state = await waitUntil(() => stillRunning([seen])[0] ? readHostProcess(seen.pid)?.state : 'gone', (st) => st === 'T' || st === 'gone', 1000, 1);
        if (state === 'T') tool = seen;
      }
      if (tool === undefined) throw new Error('no mkfs or mount of the pool could be stopped');
      const held = tool;
      resume = () => {
        if (stillRunning([held]).length > 0) process.kill(held.pid, 'SIGCONT');
      };
      const resumed = setTimeout(resume, 800);
      resumed.unref();
      const started = Date.now();
      await killAllServers();
      expect(server.running).toBe(false);
      expect(stillRunning([held])).toEqual([]); // it ran to its end before killAllServers returned
      expect(Date.now() - started).toBeGreaterThanOrEqual(700);
      removeTempDir(dir);
      expect(fs.existsSync(dir)).toBe(false);
      expect(mountsUnder(dir)).toEqual([]);
      expect(await waitUntil(() => loopBackingFiles().filter((f) => f.startsWith(`${dir}/`)), (l) => l.length === 0, 5000)).toEqual([]);
    } finally {
      resume(); // never left stopped, whatever failed
      await killAllServers();
      if (fs.existsSync(dir)) removeTempDir(dir);
    }
  }, 60_000);
});
