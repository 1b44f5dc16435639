// What every MCP tool shares: its dependencies (the domain layer) and the error shape. A refusal
// the REST API answers with a 4xx (or a 503 with a reason) becomes a tool result with isError and
// "CODE: message", which a model can read and act on; anything else is logged and reported as
// INTERNAL_ERROR without detail, like a 5xx.
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import type { Logger } from 'pino';
import type { Config } from '../../config.js';
import type { Sandbox } from '../../sandbox/sandbox.js';
import type { SessionManager } from '../../sessions/session-manager.js';
import { AppError } from '../../errors.js';

export interface McpToolDeps {
  config: Config;
  sessions: SessionManager;
  sandbox: Sandbox;
  logger: Logger;
}

/** The isError result for a failed call. */
export function toolError(err: unknown, logger: Logger, tool: string): CallToolResult {
  const e = err as { code?: unknown; statusCode?: unknown; message?: unknown };
  const expected = err instanceof AppError
    || (typeof e.code === 'string' && typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500);
  let message: string;
  if (expected) message = `${String(e.code)}: ${String(e.message)}`;
  else {
    logger.error({ err, tool }, 'MCP tool failed');
    message = 'INTERNAL_ERROR: the service failed (details in its log)';
  }
  return { content: [{ type: 'text', text: message }], isError: true };
}

/** A tool handler that turns thrown errors into tool errors; it gets the call's abort signal. */
export function guarded<A>(deps: Pick<McpToolDeps, 'logger'>, tool: string, fn: (args: A, signal: AbortSignal) => Promise<CallToolResult>) {
  return async (args: A, extra: { signal: AbortSignal }): Promise<CallToolResult> => {
    try {
      return await fn(args, extra.signal);
    } catch (err) {
      return toolError(err, deps.logger, tool);
    }
  };
}
