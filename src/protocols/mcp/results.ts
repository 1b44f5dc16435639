// Execution results as MCP tool results: one text block a model reads (status, output, displayed
// text, error, changed files), the whole result as structuredContent for programs, and the PNG
// images a run_code call produced as MCP image content.
//
// Images: the image/png data of the result's rich `outputs` (MIME bundles from display() and
// matplotlib figures). When those hold none (an environment whose interpreter makes no rich
// outputs, or outputs dropped past MAX_OUTPUT_CHARS), the .png files the call created or modified
// in the workspace (figures are saved there as figure-<call>-<n>.png too), read without
// following links. Either way at most MAX_OUTPUT_FILES images of at most MAX_OUTPUT_FILE_BYTES.
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import type { Config } from '../../config.js';
import type { ExecutionResult } from '../../sessions/executor.js';
import type { RunCodeResult } from '../../sessions/session-executions.js';
import { readUpTo } from '../../workspace/exact-length-read.js';
import { readFileSafe } from '../../workspace/workspace-fs.js';

type Content = CallToolResult['content'][number];


function section(title: string, body: string): string {
  return body === '' ? '' : `--- ${title} ---\n${body}${body.endsWith('\n') ? '' : '\n'}`;
}

function statusLine(r: ExecutionResult | RunCodeResult): string {
  const parts = [`status: ${r.status}`, `exit_code: ${String(r.exit_code)}`];
  if (r.signal !== null) parts.push(`signal: ${r.signal}`);
  if (r.timed_out) parts.push(`timed out after ${r.timeout_seconds} s`);
  parts.push(`duration_ms: ${r.duration_ms}`);
  if (r.truncated) parts.push(`output truncated to ${r.max_output_chars} characters per stream`);
  return parts.join(', ');
}

function filesText(r: ExecutionResult | RunCodeResult): string {
  const lines = (['created', 'modified', 'deleted'] as const)
    .filter((k) => r.files[k].length > 0)
    .map((k) => `files ${k}: ${r.files[k].join(', ')}`);
  if (r.files_truncated) lines.push('(more files changed than listed)');
  return lines.length > 0 ? `${lines.join('\n')}\n` : '';
}

export function executionText(r: ExecutionResult): string {
  return statusLine(r) + '\n' + section('stdout', r.stdout) + section('stderr', r.stderr) + filesText(r);
}

export function runCodeText(r: RunCodeResult): string {
  let text = statusLine(r) + '\n';
  if (r.kernel_restarted) text += 'note: the interpreter was restarted since the last call; earlier names are gone\n';
  text += section('stdout', r.stdout) + section('stderr', r.stderr);
  text += section('display', displayedText(r));
  if (r.result !== null) text += section('result', r.result);
  if (r.outputs_truncated) text += `note: some rich outputs were dropped (over MAX_OUTPUT_CHARS in all)\n`;
  if (r.error !== null) {
    const where = r.error.line !== null ? ` (line ${r.error.line})` : '';
    text += section('error', `${r.error.type}: ${r.error.message}${where}\n${r.error.traceback.join('')}${r.error.hint !== null ? `hint: ${r.error.hint}\n` : ''}`);
  }
  return text + filesText(r);
}

function pngsFromOutputs(outputs: RunCodeResult['outputs']): string[] {
  return outputs.flatMap((o) => {
    const png = o.data['image/png'];
    return typeof png === 'string' && png !== '' ? [png] : [];
  });
}

/** The text/plain of display() outputs without an image (an execute_result is `result` already). */
function displayedText(r: RunCodeResult): string {
  return r.outputs
    .filter((o) => o.type === 'display_data' && o.data['image/png'] === undefined && typeof o.data['text/plain'] === 'string')
    .map((o) => `${String(o.data['text/plain'])}\n`)
    .join('');
}

async function pngsFromFiles(r: RunCodeResult, workspace: string, maxBytes: number, max: number): Promise<{ images: string[]; skipped: string[] }> {
  const images: string[] = [];
  const skipped: string[] = [];
  for (const rel of [...r.files.created, ...r.files.modified].filter((p) => p.toLowerCase().endsWith('.png'))) {
    if (images.length >= max) {
      skipped.push(rel);
      continue;
    }
    try {
      const opened = await readFileSafe(workspace, rel);
      try {
        if (opened.size > maxBytes) skipped.push(rel);
        else images.push((await readUpTo(opened.handle, opened.size)).toString('base64'));
      } finally {
        await opened.handle.close();
      }
    } catch {
      skipped.push(rel); // gone or replaced by something that is not a regular file since the call
    }
  }
  return { images, skipped };
}

/** The images of a run_code call as MCP image content, plus a note on any left out. */
export async function runCodeImages(r: RunCodeResult, workspace: string, config: Pick<Config, 'maxOutputFiles' | 'maxOutputFileBytes'>): Promise<Content[]> {
  let images: string[];
  let skipped: string[] = [];
  const all = pngsFromOutputs(r.outputs);
  if (all.length > 0) {
    const fits = (b64: string) => Math.floor((b64.length * 3) / 4) <= config.maxOutputFileBytes;
    images = all.filter(fits).slice(0, config.maxOutputFiles);
    if (images.length < all.length) skipped = [`${all.length - images.length} image output(s)`];
  } else {
    ({ images, skipped } = await pngsFromFiles(r, workspace, config.maxOutputFileBytes, config.maxOutputFiles));
  }
  const content: Content[] = images.map((data) => ({ type: 'image', data, mimeType: 'image/png' }));
  if (skipped.length > 0) {
    content.push({ type: 'text', text: `images not included (over MAX_OUTPUT_FILES=${config.maxOutputFiles} or MAX_OUTPUT_FILE_BYTES=${config.maxOutputFileBytes}): ${skipped.join(', ')}; read them with read_file or execute` });
  }
  return content;
}
