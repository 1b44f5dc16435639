// The tests' clean-up after a killed server (killAllServers, then removeTempDir): the processes
// the server had started end before its directory is removed. A pool build's mount that finished
// after the clean-up had read the mount table left a mounted workspace, and rmdir said EBUSY
// (e2e/disconnect's afterAll, once, with a second service loading the machine).
import fs from 'node:fs';
import { describe, expect, test } from 'vitest';
import { resumeProcess, stillRunning, stopChildProcess, waitUntil } from '../helpers/host-processes.js';
import { loopBackingFiles, mountsUnder } from '../helpers/mounts.js';
import { killAllServers, makeTempDir, removeTempDir, startServer } from '../helpers/server-process.js';

describe('clean-up after a killed server', () => {
  test('killAllServers returns once the tools the server was running have ended; the directory then goes whole', async () => {
    const dir = fs.realpathSync(makeTempDir('bs-e2e-kill-'));
    let resume = () => undefined as void;
    try {
      const server = await startServer({ workspaceDir: dir, env: { BUBBLE_SANDBOX_WORKSPACE_POOL_SIZE: '16' } });
      // A pool build's mkfs or mount, held stopped: a tool that outlives the server for 800 ms.
      const held = await stopChildProcess(server.pid, /^(mkfs\.ext4|mount) /);
      resume = () => resumeProcess(held);
      setTimeout(resume, 800).unref();
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
