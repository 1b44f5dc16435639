// The official MCP client against the real service: over streamable HTTP to a running server
// (startServer), or over stdio to `bubble-sandbox mcp` spawned by the SDK's StdioClientTransport.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { BIN, PROJECT_ROOT, cleanEnv } from '../../helpers/host-env.js';

export const API_KEY = 'mcp-test-key-0123456789abcdef';

/** Host uids no other test file uses, so parallel files never share a sandbox uid. */
export function uidEnv(block: number): Record<string, string> {
  const base = 1_500_000 + (process.pid % 20_000) * 4 * 128;
  return {
    BUBBLE_SANDBOX_SANDBOX_UID_BASE: String(base + block * 128), BUBBLE_SANDBOX_SANDBOX_UID_COUNT: '128',
    BUBBLE_SANDBOX_MAX_SESSIONS: '16', BUBBLE_SANDBOX_MAX_CONCURRENT_EXECUTIONS: '4', BUBBLE_SANDBOX_MAX_QUEUED_EXECUTIONS: '16',
  };
}

export async function connectHttp(baseUrl: string, key: string | null = API_KEY): Promise<Client> {
  const client = new Client({ name: 'bubble-sandbox-test', version: '1.0.0' });
  const headers: Record<string, string> = key === null ? {} : { authorization: `Bearer ${key}` };
  await client.connect(new StreamableHTTPClientTransport(new URL('/mcp', baseUrl), { requestInit: { headers } }));
  return client;
}

export interface StdioConnection {
  client: Client;
  stderr: () => string;
  pid: number | null;
}

export async function connectStdio(env: Record<string, string>, args: string[] = []): Promise<StdioConnection> {
  const transport = new StdioClientTransport({
    command: process.execPath, args: [BIN, 'mcp', ...args], cwd: PROJECT_ROOT, stderr: 'pipe',
    env: cleanEnv(env) as Record<string, string>,
  });
  let stderr = '';
  transport.stderr?.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const client = new Client({ name: 'bubble-sandbox-test', version: '1.0.0' });
  await client.connect(transport);
  return { client, stderr: () => stderr, pid: transport.pid };
}

export async function call(client: Client, name: string, args: Record<string, unknown> = {}): Promise<CallToolResult> {
  return (await client.callTool({ name, arguments: args })) as CallToolResult;
}

/** All the text blocks of a result, joined. */
export function textOf(r: CallToolResult): string {
  return r.content.flatMap((c) => (c.type === 'text' ? [c.text] : [])).join('\n');
}

export function imagesOf(r: CallToolResult): { data: string; mimeType: string }[] {
  return r.content.flatMap((c) => (c.type === 'image' ? [{ data: c.data, mimeType: c.mimeType }] : []));
}

export const TOOL_NAMES = ['create_session', 'delete_session', 'execute', 'list_environments', 'list_files', 'read_file', 'run_code', 'write_file'];
