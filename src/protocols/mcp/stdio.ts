// `bubble-sandbox mcp`: the same tools over stdio for a local agent that starts this command. It
// runs the domain layer in this process (sandbox, SessionManager: no HTTP service is needed),
// with its own WORKSPACE_DIR and sandbox uid range like a second service; stdout carries only
// MCP messages, the JSON log goes to stderr. It stops when the agent closes stdin or on
// SIGTERM/SIGINT: running executions get SHUTDOWN_GRACE_SECONDS, then everything it made is
// released (interpreters, mounts, cgroups, the uid-range record). Sessions outlive it on disk
// like the service's and expire the same way.
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import pino from 'pino';
import type { Config } from '../../config.js';
import { createSandbox } from '../../sandbox/sandbox.js';
import { SessionManager } from '../../sessions/session-manager.js';
import { createMcpServer } from './server.js';

export async function runMcpStdio(config: Config): Promise<number> {
  const logger = pino({ level: config.logLevel, base: { service: 'bubble-sandbox-mcp' }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination(2));
  const sandbox = await createSandbox(config, logger, { lockUidRange: true });
  let sessions: SessionManager | null = null;
  try {
    sessions = new SessionManager({ config, sandbox, logger });
    await sessions.init();
    const server = createMcpServer({ config, sessions, sandbox, logger });
    const transport = new StdioServerTransport();
    const stopped = new Promise<string>((resolve) => {
      transport.onclose = () => resolve('transport closed');
      process.stdin.once('end', () => resolve('stdin closed'));
      process.once('SIGTERM', () => resolve('SIGTERM'));
      process.once('SIGINT', () => resolve('SIGINT'));
    });
    await server.connect(transport);
    logger.info({ workspace_dir: config.workspaceDir }, 'MCP server on stdio ready');
    const reason = await stopped;
    logger.info({ reason }, 'MCP server on stdio stopping');
    await server.close();
    return 0;
  } finally {
    await sessions?.close(config.shutdownGraceSeconds * 1000);
    await sandbox.close();
    logger.flush();
  }
}
