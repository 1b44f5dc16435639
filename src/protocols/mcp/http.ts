// POST /mcp: the Model Context Protocol over streamable HTTP, stateless. Each POST gets a server
// and a transport of its own, which end with its response: there is no MCP session to keep, so
// any replica answers any request and nothing outlives a request. The owner of a request's
// server is this plugin: when the client goes away before the answer is complete (or the service
// closes), the server is closed, which aborts the signal its tool calls run with, and a running
// execution ends as on the REST API; a client's notifications/cancelled does the same through the
// correlation token of http-cancel.ts. GET and DELETE (the SSE stream and session end of stateful
// servers) answer 405. The API key and Origin checks are the caller's (app.ts), as for /v1.
// Every answer of /mcp, refusals included, is in JSON-RPC's shape: a body that is not JSON is a
// -32700 parse error; other refusals keep their HTTP status and carry the service's stable code
// in `error.data.code` and at the head of the message (`UNAUTHORIZED: ...`).
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { FastifyError, FastifyPluginAsync } from 'fastify';
import { AppError } from '../../errors.js';
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { CallRegistry } from './http-cancel.js';
import { createMcpServer } from './server.js';
import type { McpToolDeps } from './tool-kit.js';

const METHOD_NOT_ALLOWED = { jsonrpc: '2.0', error: { code: -32000, message: 'Method not allowed: this server is stateless; send JSON-RPC messages with POST' }, id: null };

const INTERNAL_ERROR = { jsonrpc: '2.0', error: { code: -32603, message: 'Internal error' }, id: null };
const PARSE_ERROR = { jsonrpc: '2.0', error: { code: -32700, message: 'Parse error: the body is not JSON' }, id: null };

function refusal(statusCode: number, code: string, message: string) {
  return { jsonrpc: '2.0', error: { code: -32000, message: `${code}: ${message}`, data: { statusCode, code } }, id: null };
}

export const mcpRoutes: FastifyPluginAsync<McpToolDeps> = async (app, deps) => {
  const live = new Set<{ server: McpServer; transport: StreamableHTTPServerTransport }>();
  const calls = new CallRegistry();
  // Big enough for write_file's base64 content (MAX_UPLOAD_SIZE_BYTES) and run_code's source.
  const bodyLimit = Math.ceil((deps.config.maxUploadSizeBytes * 4) / 3) + 2 * 1024 * 1024;

  // Bodies reach the handler as text, whatever their media type: the SDK judges the content type
  // (415 in its shape) and this handler the JSON (-32700), instead of Fastify's REST-shaped 4xx.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string', bodyLimit }, (_request, body, done) => done(null, body));

  app.setErrorHandler((err: FastifyError | AppError, request, reply) => {
    const status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (status >= 500) request.log.error({ err }, 'MCP request failed');
    if (err instanceof AppError) for (const [k, v] of Object.entries(err.headers)) void reply.header(k, v);
    const body = status >= 500 ? INTERNAL_ERROR : refusal(status, typeof err.code === 'string' ? err.code : 'BAD_REQUEST', err.message);
    return reply.code(status).send(body);
  });

  app.post('/mcp', { bodyLimit, schema: { hide: true } }, async (request, reply) => {
    let message: unknown;
    try {
      message = JSON.parse(typeof request.body === 'string' ? request.body : '');
    } catch {
      return reply.code(400).send(PARSE_ERROR);
    }
    const token = calls.tokenFor(request.headers, message, (name, value) => reply.raw.setHeader(name, value));
    calls.cancelNamed(token, message);
    const server = createMcpServer(deps);
    const transport = new StreamableHTTPServerTransport({}); // no sessionIdGenerator: stateless
    const pair = { server, transport };
    live.add(pair);
    const unregister = calls.register(token, message, () => void server.close());
    reply.raw.on('close', () => {
      unregister();
      live.delete(pair);
      void transport.close();
      void server.close();
    });
    reply.hijack();
    try {
      await server.connect(transport);
      await transport.handleRequest(request.raw, reply.raw, message);
    } catch (err) {
      request.log.error({ err }, 'MCP request failed');
      if (!reply.raw.headersSent) reply.raw.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify(INTERNAL_ERROR));
      else reply.raw.destroy();
    }
  });

  for (const method of ['GET', 'DELETE'] as const) {
    app.route({ method, url: '/mcp', schema: { hide: true }, handler: async (_request, reply) => reply.code(405).header('allow', 'POST').send(METHOD_NOT_ALLOWED) });
  }

  app.addHook('onClose', async () => {
    await Promise.all([...live].map(async ({ server, transport }) => {
      await transport.close();
      await server.close();
    }));
    live.clear();
  });
};
