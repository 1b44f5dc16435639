// MCP over streamable HTTP at /mcp of the real service, driven by the official client: the tools,
// the API key, protocol errors, and a client that goes away ending its execution.
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { waitForNoProcess, waitForSleep } from '../../helpers/host-processes.js';
import { startServer, useWorkspaceDir, type ServerProcess } from '../../helpers/server-process.js';
import { API_KEY, call, connectHttp, uidEnv } from './mcp-kit.js';
import { toolBehaviour } from './mcp-tools-behaviour.js';

const workspaceDir = useWorkspaceDir('bs-mcp-http-', 'all');
let server: ServerProcess;
let client: Client | undefined;

beforeAll(async () => {
  server = await startServer({ workspaceDir: workspaceDir.path, env: { BUBBLE_SANDBOX_API_KEY: API_KEY, ...uidEnv(0) } });
  client = await connectHttp(server.baseUrl);
});
afterAll(async () => {
  await client?.close();
});

describe('the tools over streamable HTTP', () => {
  toolBehaviour(() => client as Client, 'http', { cancels: true });
});

const INIT = {
  jsonrpc: '2.0', id: 1, method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
};

function post(body: unknown, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Response> {
  return fetch(`${server.baseUrl}/mcp`, {
    method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body), ...(signal ? { signal } : {}),
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${API_KEY}`, ...headers },
  });
}

describe('access and protocol errors', () => {
  test('a wrong or missing API key is refused with 401 before any MCP message is read', async () => {
    await expect(connectHttp(server.baseUrl, 'wrong-key-0123456789abcdef')).rejects.toThrow(/401/);
    await expect(connectHttp(server.baseUrl, null)).rejects.toThrow(/401/);
    const res = await post(INIT, { authorization: 'Bearer nope' });
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ jsonrpc: '2.0', id: null, error: { code: -32000, message: expect.stringMatching(/^UNAUTHORIZED: /) as string, data: { statusCode: 401, code: 'UNAUTHORIZED' } } });
  });

  test('a browser page of another origin is refused (DNS rebinding)', async () => {
    const res = await post(INIT, { origin: 'http://evil.example' });
    expect(res.status).toBe(403);
    expect(await res.json()).toMatchObject({ jsonrpc: '2.0', error: { data: { code: 'FORBIDDEN_ORIGIN' } } });
  });

  test('malformed JSON-RPC gets a JSON-RPC error, GET and DELETE 405', async () => {
    for (const body of ['{bad', '', '[1,']) {
      const notJson = await post(body);
      expect(notJson.status, body).toBe(400);
      expect(await notJson.json()).toMatchObject({ jsonrpc: '2.0', error: { code: -32700 }, id: null });
    }
    const plain = await post(INIT, { 'content-type': 'text/plain' });
    expect(plain.status).toBe(415);
    expect(await plain.json()).toMatchObject({ jsonrpc: '2.0', error: { code: expect.any(Number) as number } });
    const notRpc = await post({ hello: 'world' });
    expect(notRpc.status).toBe(400);
    expect(await notRpc.json()).toMatchObject({ jsonrpc: '2.0', error: { code: expect.any(Number) as number } });
    for (const method of ['GET', 'DELETE']) {
      const res = await fetch(`${server.baseUrl}/mcp`, { method, headers: { authorization: `Bearer ${API_KEY}`, accept: 'text/event-stream' } });
      expect(res.status).toBe(405);
      expect(await res.json()).toMatchObject({ jsonrpc: '2.0', error: { code: -32000 } });
    }
  });
});

describe('a client that goes away', () => {
  test('ends its execution, as on the REST API, and the session serves the next call', async () => {
    await call(client as Client, 'create_session', { session_id: 'gone' });
    const ac = new AbortController();
    const res = await post({
      jsonrpc: '2.0', id: 7, method: 'tools/call',
      params: { name: 'execute', arguments: { session_id: 'gone', command: 'sleep 31.457', timeout_seconds: 60 } },
    }, {}, ac.signal);
    expect(res.status).toBe(200);
    await waitForSleep('31.457');
    ac.abort();
    expect(await waitForNoProcess('sleep 31.457', 3000)).toEqual([]);
    const started = Date.now();
    expect((await call(client as Client, 'execute', { session_id: 'gone', command: 'echo next' })).structuredContent).toMatchObject({ stdout: 'next\n' });
    expect(Date.now() - started).toBeLessThan(10_000);
  }, 60_000);
});

describe('shutdown', () => {
  const stopDir = useWorkspaceDir('bs-mcp-http-stop-', 'all');

  test('SIGTERM ends the MCP calls in flight with their executions, and the service exits 0', async () => {
    const own = await startServer({ workspaceDir: stopDir.path, env: { BUBBLE_SANDBOX_API_KEY: API_KEY, BUBBLE_SANDBOX_SHUTDOWN_GRACE_SECONDS: '1', ...uidEnv(2) } });
    const c = await connectHttp(own.baseUrl);
    await call(c, 'create_session', { session_id: 'stop' });
    const pending = call(c, 'execute', { session_id: 'stop', command: 'sleep 32.468', timeout_seconds: 120 }).then(
      (r) => ({ answered: r }), (err: unknown) => ({ failed: String(err) }),
    );
    await waitForSleep('32.468');
    const exit = await own.stop('SIGTERM');
    expect(exit).toEqual({ code: 0, signal: null });
    expect(await waitForNoProcess('sleep 32.468', 3000)).toEqual([]);
    // The call does not hang: it is answered (the execution was killed) or its connection ends.
    const outcome = await pending;
    if ('answered' in outcome) expect(outcome.answered.structuredContent).toMatchObject({ status: 'killed' });
    await c.close();
  }, 60_000);
});
