// One MCP server (the SDK's McpServer) with this service's tools, over whichever transport the
// caller connects: streamable HTTP per request (http.ts) or stdio (stdio.ts).
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { VERSION } from '../../version.js';
import type { McpToolDeps } from './tool-kit.js';
import { registerTools } from './tools.js';

const INSTRUCTIONS = 'Runs untrusted Python and shell code in isolated sandboxes. Start with create_session (list_environments names the environments), then use execute for programs and shell commands, run_code for Python whose state lasts between calls, and write_file, read_file and list_files for the workspace. Delete the session when done.';

export function createMcpServer(deps: McpToolDeps): McpServer {
  const server = new McpServer({ name: 'bubble-sandbox', version: VERSION }, { instructions: INSTRUCTIONS, capabilities: { tools: {} } });
  registerTools(server, deps);
  return server;
}
