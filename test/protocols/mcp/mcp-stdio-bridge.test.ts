// `bubble-sandbox mcp --url`: stdio relayed to a running service's /mcp, with the service's key
// from BUBBLE_SANDBOX_API_KEY: the same tools, the service's sessions, and a clear JSON-RPC error
// (no hang) when the service refuses the key or cannot be reached.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { waitForSleep } from '../../helpers/host-processes.js';
import { freePort, startServer, useWorkspaceDir, type ServerProcess } from '../../helpers/server-process.js';
import { API_KEY, call, connectStdio, textOf, uidEnv, type StdioConnection } from './mcp-kit.js';
import { toolBehaviour } from './mcp-tools-behaviour.js';

const workspaceDir = useWorkspaceDir('bs-mcp-bridge-', 'all');
let server: ServerProcess;
let conn: StdioConnection | undefined;

beforeAll(async () => {
  server = await startServer({ workspaceDir: workspaceDir.path, env: { BUBBLE_SANDBOX_API_KEY: API_KEY, ...uidEnv(3) } });
  conn = await connectStdio({ BUBBLE_SANDBOX_API_KEY: API_KEY }, ['--url', `${server.baseUrl}/mcp`]);
});
afterAll(async () => {
  await conn?.client.close();
});

describe('the tools through the relay', () => {
  toolBehaviour(() => (conn as StdioConnection).client, 'bridge', { cancels: true });

  test('the sessions are the service\'s', async () => {
    const c = (conn as StdioConnection).client;
    await call(c, 'create_session', { session_id: 'shared' });
    const res = await fetch(`${server.baseUrl}/v1/sessions/shared`, { headers: { authorization: `Bearer ${API_KEY}` } });
    expect(res.status).toBe(200);
    expect((conn as StdioConnection).stderr()).toContain('relaying stdio to');
  });
});

describe('refusals', () => {
  const cutDir = useWorkspaceDir('bs-mcp-bridge-cut-', 'all');

  test('a wrong key: the agent\'s initialize is answered with an error naming 401', async () => {
    await expect(connectStdio({ BUBBLE_SANDBOX_API_KEY: 'wrong-key-0123456789abcdef' }, ['--url', `${server.baseUrl}/mcp`])).rejects.toThrow(/401/);
  });

  test('nothing listening: an error, not a wait', async () => {
    const port = await freePort();
    const started = Date.now();
    await expect(connectStdio({}, ['--url', `http://127.0.0.1:${port}/mcp`])).rejects.toThrow(/bubble-sandbox service: /);
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  test('a tool call still answers when it is cut by the service going away', async () => {
    const own = await startServer({ workspaceDir: cutDir.path, env: { BUBBLE_SANDBOX_API_KEY: API_KEY, ...uidEnv(4) } });
    const c = await connectStdio({ BUBBLE_SANDBOX_API_KEY: API_KEY }, ['--url', `${own.baseUrl}/mcp`]);
    await call(c.client, 'create_session', { session_id: 'cut' });
    const pending = call(c.client, 'execute', { session_id: 'cut', command: 'sleep 33.579' }).then((r) => textOf(r), (err: unknown) => String(err));
    await waitForSleep('33.579');
    await own.stop('SIGKILL');
    expect(await pending).toMatch(/bubble-sandbox service: /);
    await c.client.close();
  }, 30_000);
});
