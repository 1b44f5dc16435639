// read_file and list_files: workspace reads through the link-safe file operations the REST routes
// use. A file comes back inline, so it is bounded by MAX_OUTPUT_FILE_BYTES (the same cap as the
// files POST /v1/execute returns inline); a listing by MAX_LIST_FILES and MAX_LIST_BYTES a page.
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { AppError } from '../../errors.js';
import { readUpTo } from '../../workspace/exact-length-read.js';
import { listFilesPage, readFileSafe, validateRelativePath } from '../../workspace/workspace-fs.js';
import { guarded, type McpToolDeps } from './tool-kit.js';

const IMAGE_TYPES: Record<string, string> = { '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.gif': 'image/gif', '.webp': 'image/webp' };

function imageType(path: string): string | undefined {
  const dot = path.lastIndexOf('.');
  return dot < 0 ? undefined : IMAGE_TYPES[path.slice(dot).toLowerCase()];
}

/** UTF-8 text, or null when the bytes are not valid UTF-8 (or hold NUL, the mark of a binary file). */
function asText(bytes: Buffer): string | null {
  if (bytes.includes(0)) return null;
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return null;
  }
}

export function readFileTool(server: McpServer, deps: McpToolDeps, sessionId: z.ZodType<string>, workspacePath: z.ZodType<string>): void {
  const { config, sessions } = deps;
  server.registerTool('read_file', {
    description: `Read a file of the session's workspace. Text comes back as text, PNG/JPEG/GIF/WebP as an image, other binary files as base64. At most ${config.maxOutputFileBytes} bytes: for a larger file use execute (head, tail, grep).`,
    inputSchema: {
      session_id: sessionId,
      path: workspacePath,
      encoding: z.enum(['auto', 'base64']).optional().describe('auto (default): text, image or base64 as the content suggests; base64: always base64'),
    },
    annotations: { readOnlyHint: true },
  }, guarded(deps, 'read_file', async (args): Promise<CallToolResult> => {
    const record = await sessions.touch(args.session_id);
    const opened = await readFileSafe(sessions.workspaceDir(record.session_id), args.path);
    let bytes: Buffer;
    try {
      if (opened.size > config.maxOutputFileBytes) {
        throw new AppError(413, 'FILE_TOO_LARGE', `'${args.path}' has ${opened.size} bytes, more than MAX_OUTPUT_FILE_BYTES (${config.maxOutputFileBytes}); read a part of it with execute`);
      }
      bytes = await readUpTo(opened.handle, opened.size);
    } finally {
      await opened.handle.close();
    }
    const mimeType = imageType(args.path);
    if (args.encoding !== 'base64' && mimeType !== undefined) return { content: [{ type: 'image', data: bytes.toString('base64'), mimeType }] };
    const asString = args.encoding === 'base64' ? null : asText(bytes);
    if (asString !== null) return { content: [{ type: 'text', text: asString }] };
    return { content: [{ type: 'text', text: `base64 (${bytes.length} bytes):\n${bytes.toString('base64')}` }] };
  }));
}

export function listFilesTool(server: McpServer, deps: McpToolDeps, sessionId: z.ZodType<string>): void {
  const { config, sessions } = deps;
  server.registerTool('list_files', {
    description: `List the regular files of the session's workspace, sorted by path, one "path<TAB>size in bytes" line each; at most ${config.maxListFiles} a call. When more remain, the answer ends with "next after: <path>": call again with that path as after.`,
    inputSchema: {
      session_id: sessionId,
      after: z.string().min(1).max(1024).optional().describe('list only the paths that sort after this one (from "next after:")'),
    },
    annotations: { readOnlyHint: true },
  }, guarded(deps, 'list_files', async (args): Promise<CallToolResult> => {
    const record = await sessions.touch(args.session_id);
    if (args.after !== undefined) {
      try {
        validateRelativePath(args.after);
      } catch (err) {
        throw new AppError(400, 'INVALID_PATH', `after: ${(err as Error).message}`);
      }
    }
    const page = await listFilesPage(sessions.workspaceDir(record.session_id), {
      after: args.after ?? null, budget: { maxPaths: config.maxListFiles, maxBytes: config.maxListBytes },
    });
    const lines = page.files.map((f) => `${f.path}\t${f.size}`);
    const last = page.files[page.files.length - 1];
    if (page.more && last !== undefined) lines.push(`next after: ${last.path}`);
    return { content: [{ type: 'text', text: lines.length > 0 ? lines.join('\n') : '(no files)' }], structuredContent: { files: page.files, next_after: page.more && last !== undefined ? last.path : null } };
  }));
}
