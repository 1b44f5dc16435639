// `bubble-sandbox mcp`: the same tools over stdio, the domain layer in the spawned process, driven
// by the official client's StdioClientTransport; closing stdin stops it and releases its sandboxes.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { isRunning, waitUntil } from '../../helpers/host-processes.js';
import { makeTempDir, removeTempDir } from '../../helpers/host-env.js';
import { call, connectStdio, uidEnv, type StdioConnection } from './mcp-kit.js';
import { toolBehaviour } from './mcp-tools-behaviour.js';

let workspaceDir: string;
let lockDir: string;
let conn: StdioConnection | undefined;

beforeAll(async () => {
  workspaceDir = makeTempDir('bs-mcp-stdio-');
  lockDir = makeTempDir('bs-mcp-stdio-locks-', 0o755);
  conn = await connectStdio({
    BUBBLE_SANDBOX_WORKSPACE_DIR: workspaceDir, BUBBLE_SANDBOX_UID_LOCK_DIR: lockDir, BUBBLE_SANDBOX_LOG_LEVEL: 'info', ...uidEnv(1),
  });
}, 60_000);
afterAll(async () => {
  if (conn?.pid != null && isRunning(conn.pid)) process.kill(conn.pid, 'SIGKILL');
  removeTempDir(workspaceDir);
  removeTempDir(lockDir);
});

describe('the tools over stdio', () => {
  toolBehaviour(() => (conn as StdioConnection).client, 'stdio', { cancels: true });
});

describe('the stdio process', () => {
  test('logs JSON to stderr only, and stops cleanly when the client closes, releasing its uid range', async () => {
    const c = conn as StdioConnection;
    await call(c.client, 'create_session', { session_id: 'kept' });
    expect((await call(c.client, 'run_code', { session_id: 'kept', code: 'import time; time.sleep(0)' })).isError).toBeFalsy();
    expect(c.stderr()).toContain('"msg":"MCP server on stdio ready"');
    expect(fs.readdirSync(lockDir).length).toBe(1);
    const pid = c.pid ?? -1;
    await c.client.close(); // closes stdin: the server ends its interpreter and exits
    expect(await waitUntil(() => isRunning(pid), (running) => !running, 15_000)).toBe(false);
    expect(c.stderr()).toContain('MCP server on stdio stopping');
    expect(fs.readdirSync(lockDir)).toEqual([]);
    // The session is on disk like the service's, for the next start.
    expect(fs.existsSync(path.join(workspaceDir, 'sessions', 'kept'))).toBe(true);
  }, 60_000);
});
