// The MCP tools: the same domain calls as the REST routes (SessionManager, the workspace's
// link-safe file operations), never HTTP to this service. Descriptions are written for a model:
// what the tool does, what it returns, the limits this server is configured with.
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import type { Program } from '../../sandbox/types.js';
import { discoverEnvironments } from '../../sandbox/environments.js';
import { writeFileSafe } from '../../workspace/workspace-fs.js';
import { AppError, ExtensionNotAllowedError, UploadTooLargeError } from '../../errors.js';
import { executionText, runCodeImages, runCodeText } from './results.js';
import { listFilesTool, readFileTool } from './file-tools.js';
import { guarded, type McpToolDeps } from './tool-kit.js';

const SessionId = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'must match [A-Za-z0-9_-]{1,64}').describe('the session_id that create_session returned');
const WorkspacePath = z.string().min(1).max(1024).describe('path relative to the workspace (/workspace in the sandbox), e.g. data/in.csv; no .. and no leading /');

const text = (t: string): CallToolResult => ({ content: [{ type: 'text', text: t }] });

function hasExtension(name: string, allowed: readonly string[]): boolean {
  const base = name.split('/').pop() ?? '';
  const dot = base.lastIndexOf('.');
  return dot > 0 && allowed.includes(base.slice(dot).toLowerCase());
}

export function registerTools(server: McpServer, deps: McpToolDeps): void {
  const { config, sessions, sandbox } = deps;
  const limits = sandbox.defaultLimits;
  const timeoutNote = `default ${config.executionTimeoutSeconds} s, at most ${config.maxExecutionTimeoutSeconds} s`;
  const runLimits = `Limits per call: timeout ${timeoutNote}, ${Math.round(limits.memoryBytes / 2 ** 20)} MiB memory, ${limits.pids} processes, ${limits.cpuCores} CPU core(s); output is cut to ${config.maxOutputChars} characters per stream (head and tail kept). No network access unless the session was created with a network policy.`;
  const timeoutSeconds = z.number().positive().max(config.maxExecutionTimeoutSeconds).optional().describe(`wall-clock timeout in seconds (${timeoutNote})`);

  server.registerTool('list_environments', {
    description: 'List the execution environments (name, description, Python packages). Pass a name to create_session.',
    inputSchema: {},
    annotations: { readOnlyHint: true },
  }, guarded(deps, 'list_environments', async () => {
    const envs = (await discoverEnvironments(config.environmentsDir)).filter((e) => e.usable);
    return text(envs.map((e) => `${e.name}: ${e.description}${e.dependencies.length > 0 ? ` [${e.dependencies.join(', ')}]` : ''}`).join('\n'));
  }));

  server.registerTool('create_session', {
    description: `Create a sandbox session: a private workspace directory and a persistent Python interpreter that the other tools use. Returns its session_id. A session idle for ${config.sessionIdleTimeoutSeconds} s is deleted with its files; at most ${config.maxSessions} sessions exist at once. Calling again with the same session_id and environment returns the existing session.`,
    inputSchema: {
      environment: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/).optional().describe('environment name from list_environments (default "bare": the Python standard library)'),
      session_id: SessionId.optional().describe('your own id ([A-Za-z0-9_-], at most 64); a random one when absent'),
    },
  }, guarded(deps, 'create_session', async (args) => {
    const { session, created } = await sessions.create({ environment: args.environment, session_id: args.session_id });
    deps.logger.info({ session_id: session.session_id, created, via: 'mcp' }, 'session create');
    return { ...text(`session_id: ${session.session_id}\nenvironment: ${session.environment}\n${created ? 'created' : 'already existed'}; expires after ${config.sessionIdleTimeoutSeconds} s idle`), structuredContent: { ...session } };
  }));

  server.registerTool('delete_session', {
    description: 'Delete a session, its running interpreter and all its files.',
    inputSchema: { session_id: SessionId },
    annotations: { destructiveHint: true },
  }, guarded(deps, 'delete_session', async (args) => {
    await sessions.delete(args.session_id, true);
    return text(`session ${args.session_id} deleted`);
  }));

  server.registerTool('execute', {
    description: `Run one program in the session's sandbox, in its workspace (/workspace): exactly one of script (Python source), command (a /bin/sh -c line) or argv (a program and its arguments, no shell). Each call is a fresh process: use run_code for Python state that lasts between calls. Returns status, exit code, stdout, stderr and the workspace files created, modified or deleted. ${runLimits}`,
    inputSchema: {
      session_id: SessionId,
      script: z.string().min(1).max(1_000_000).optional().describe('Python source, run by the environment\'s interpreter'),
      command: z.string().min(1).max(100_000).optional().describe('shell command line, run with /bin/sh -c'),
      argv: z.array(z.string().max(100_000)).min(1).max(1000).optional().describe('program and arguments, run without a shell'),
      stdin: z.string().max(10_000_000).optional().describe('text given to the program on standard input'),
      timeout_seconds: timeoutSeconds,
    },
  }, guarded(deps, 'execute', async (args, signal) => {
    const given = [args.script, args.command, args.argv].filter((v) => v !== undefined).length;
    if (given !== 1) throw new AppError(400, 'FST_ERR_VALIDATION', 'exactly one of script, command or argv is required');
    if ([args.command, ...(args.argv ?? [])].some((v) => v?.includes('\0'))) throw new AppError(400, 'FST_ERR_VALIDATION', 'command and argv must not contain NUL');
    let program: Program;
    if (args.script !== undefined) program = { kind: 'script', source: args.script };
    else if (args.command !== undefined) program = { kind: 'command', command: args.command };
    else program = { kind: 'argv', argv: args.argv ?? [] };
    const result = await sessions.execute(args.session_id, {
      program, stdin: args.stdin, timeoutSeconds: args.timeout_seconds ?? config.executionTimeoutSeconds, limits: { ...limits }, signal,
    });
    deps.logger.info({ session_id: args.session_id, status: result.status, duration_ms: result.duration_ms, via: 'mcp' }, 'execution finished');
    return { ...text(executionText(result)), structuredContent: { ...result } };
  }));

  server.registerTool('run_code', {
    description: `Run Python in the session's persistent interpreter, like a notebook cell: variables, imports and functions defined by one call are there in the next. Returns stdout, stderr, displayed text, the repr of the last expression, the error with its traceback, and PNG images (matplotlib figures, display() of an image; at most ${config.maxOutputFiles}, each at most ${config.maxOutputFileBytes} bytes; figures are also saved in the workspace as .png files). ${runLimits}`,
    inputSchema: {
      session_id: SessionId,
      code: z.string().min(1).max(1_000_000).describe('Python source'),
      timeout_seconds: timeoutSeconds,
    },
  }, guarded(deps, 'run_code', async (args, signal) => {
    const result = await sessions.runCode(args.session_id, { code: args.code, timeoutSeconds: args.timeout_seconds ?? config.executionTimeoutSeconds, signal });
    deps.logger.info({ session_id: args.session_id, status: result.status, duration_ms: result.duration_ms, via: 'mcp' }, 'run_code finished');
    const images = await runCodeImages(result, sessions.workspaceDir(args.session_id), config);
    // The images are in the content already: the structured copy leaves out their base64.
    const outputs = result.outputs.map((o) => (o.data['image/png'] === undefined ? o : { ...o, data: Object.fromEntries(Object.entries(o.data).filter(([k]) => k !== 'image/png')) }));
    const plain = { ...result, outputs };
    return { content: [{ type: 'text', text: runCodeText(result) }, ...images], structuredContent: plain };
  }));

  server.registerTool('write_file', {
    description: `Write a file into the session's workspace (parent directories are created; an existing file is replaced). Give exactly one of text (UTF-8) or base64 (binary). At most ${config.maxUploadSizeBytes} bytes; allowed extensions: ${config.allowedExtensions.join(' ')}.`,
    inputSchema: {
      session_id: SessionId,
      path: WorkspacePath,
      text: z.string().optional().describe('the content as text, written as UTF-8'),
      base64: z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be base64').optional().describe('the content as base64'),
    },
  }, guarded(deps, 'write_file', async (args) => {
    if ((args.text === undefined) === (args.base64 === undefined)) throw new AppError(400, 'FST_ERR_VALIDATION', 'exactly one of text or base64 is required');
    if (!hasExtension(args.path, config.allowedExtensions)) throw new ExtensionNotAllowedError(args.path.split('/').pop() ?? args.path, config.allowedExtensions);
    const content = args.text !== undefined ? Buffer.from(args.text, 'utf8') : Buffer.from(args.base64 ?? '', 'base64');
    if (content.length > config.maxUploadSizeBytes) throw new UploadTooLargeError(config.maxUploadSizeBytes);
    const record = await sessions.touch(args.session_id);
    sessions.workspaceChanged(record.session_id);
    const written = await writeFileSafe(sessions.workspaceDir(record.session_id), args.path, content, { owner: sessions.ownerOf(record) ?? undefined, mkdirs: true, maxBytes: config.maxUploadSizeBytes });
    deps.logger.info({ session_id: record.session_id, bytes: written.size, via: 'mcp' }, 'file written');
    return text(`wrote ${written.size} bytes to ${written.path}`);
  }));

  readFileTool(server, deps, SessionId, WorkspacePath);
  listFilesTool(server, deps, SessionId);
}
