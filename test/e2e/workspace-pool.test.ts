// The workspace pool in the real process: a signal that arrives while the pool is building (mkfs
// and mount running as children) still gets the graceful shutdown, which leaves no mount behind.
import fs from 'node:fs';
import { describe, expect, test } from 'vitest';
import { listHostProcesses, waitUntil } from '../helpers/host-processes.js';
import { mountsUnder } from '../helpers/mounts.js';
import { startServer, useWorkspaceDir } from '../helpers/server-process.js';

const workspaceDir = useWorkspaceDir('bs-e2e-pool-');

describe('workspace pool', () => {
  test.each(['SIGTERM', 'SIGINT'] as const)('%s while the pool is building: exit 0 after the graceful shutdown, no mount left', async (signal) => {
    const server = await startServer({ workspaceDir: workspaceDir.path, env: { BUBBLE_SANDBOX_WORKSPACE_POOL_SIZE: '16' } });
    // Sent while mkfs or mount runs: a child process was what made the service die of the signal.
    const tools = await waitUntil(() => listHostProcesses().filter((p) => p.ppid === server.pid && /^(mkfs\.ext4|mount) /.test(p.command)), (l) => l.length > 0, 20_000, 1);
    expect(tools).not.toEqual([]);
    expect(await server.stop(signal)).toEqual({ code: 0, signal: null });
    expect(server.jsonLogs().map((l) => l.msg)).toContain('stopped');
    expect(mountsUnder(fs.realpathSync(workspaceDir.path))).toEqual([]);
    expect(fs.readdirSync(`${workspaceDir.path}/pool`)).toEqual([]);
  }, 60_000);
});
