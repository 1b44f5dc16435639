// `bubble-sandbox mcp --url URL`: stdio for the agent, relayed to a running service's /mcp over
// streamable HTTP (the SDK's client transport), with BUBBLE_SANDBOX_API_KEY as the bearer key.
// The service's sessions are shared with its other clients, and no second sandbox runs on the
// host. Messages pass unchanged; a request the service cannot answer (unreachable, 401, the
// connection cut mid-answer) is answered here with a JSON-RPC error naming the cause, so the
// agent never waits forever.
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { isJSONRPCRequest, type JSONRPCMessage, type RequestId } from '@modelcontextprotocol/sdk/types.js';

function errorFor(id: RequestId, cause: string): JSONRPCMessage {
  return { jsonrpc: '2.0', id, error: { code: -32603, message: `bubble-sandbox service: ${cause}` } };
}

export async function runMcpBridge(url: URL, apiKey: string | undefined): Promise<number> {
  const local = new StdioServerTransport();
  const remote = new StreamableHTTPClientTransport(url, { requestInit: { headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {} } });
  /** Requests sent on and not answered yet: each gets an answer, the service's or an error. */
  const pending = new Set<RequestId>();
  const fail = (id: RequestId, cause: string) => {
    if (pending.delete(id)) void local.send(errorFor(id, cause));
  };

  local.onmessage = (message) => {
    if (isJSONRPCRequest(message)) pending.add(message.id);
    remote.send(message).catch((err: unknown) => {
      if (isJSONRPCRequest(message)) fail(message.id, (err as Error).message);
    });
  };
  remote.onmessage = (message) => {
    if ('id' in message && message.id !== undefined && !('method' in message)) pending.delete(message.id);
    void local.send(message);
  };
  // A response stream that broke: whatever was still waiting will not be answered by the service.
  remote.onerror = (err) => {
    for (const id of [...pending]) fail(id, err.message);
  };

  const stopped = new Promise<void>((resolve) => {
    local.onclose = () => resolve();
    process.stdin.once('end', () => resolve());
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  await remote.start();
  await local.start();
  process.stderr.write(`bubble-sandbox mcp: relaying stdio to ${url.href}\n`);
  await stopped;
  await remote.close();
  await local.close();
  return 0;
}
