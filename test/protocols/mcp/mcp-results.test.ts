// Images of a run_code result: from `outputs` (MIME bundles) when the result has them, else from
// the .png files it reports, read without following links and within MAX_OUTPUT_FILES and
// MAX_OUTPUT_FILE_BYTES.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { runCodeImages, runCodeText } from '../../../src/protocols/mcp/results.js';
import type { RunCodeResult } from '../../../src/sessions/session-executions.js';

const PNG = Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex'); // a PNG signature and IHDR start: enough here
const LIMITS = { maxOutputFiles: 2, maxOutputFileBytes: 1024 };

function result(created: string[], extra: Record<string, unknown> = {}): RunCodeResult {
  return {
    status: 'ok', exit_code: 0, signal: null, stdout: 'out\n', stderr: '', truncated: false, max_output_chars: 100, timed_out: false,
    timeout_seconds: 30, duration_ms: 5, resources: { memory_peak_bytes: null, cpu_ms: null }, error: null, result: '42', kernel_restarted: false,
    files: { created, modified: [], deleted: [] }, files_truncated: false, outputs: [], outputs_truncated: false, ...extra,
  };
}

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bs-mcp-results-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('images from workspace files, when the outputs hold none', () => {
  test('new .png files become image content; a planted link, a big file and any over the count are left out, and said so', async () => {
    fs.writeFileSync(path.join(dir, 'a.png'), PNG);
    fs.writeFileSync(path.join(dir, 'b.PNG'), PNG);
    fs.writeFileSync(path.join(dir, 'c.png'), PNG);
    fs.writeFileSync(path.join(dir, 'big.png'), Buffer.alloc(2048));
    fs.symlinkSync('/etc/passwd', path.join(dir, 'link.png'));
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'not an image');
    const content = await runCodeImages(result(['link.png', 'big.png', 'a.png', 'notes.txt', 'b.PNG', 'c.png']), dir, LIMITS);
    expect(content.filter((c) => c.type === 'image')).toEqual([
      { type: 'image', mimeType: 'image/png', data: PNG.toString('base64') },
      { type: 'image', mimeType: 'image/png', data: PNG.toString('base64') },
    ]);
    const note = content.find((c) => c.type === 'text');
    expect(note).toMatchObject({ type: 'text' });
    expect((note as { text: string }).text).toMatch(/link\.png, big\.png, c\.png; read them with read_file/);
  });
});

describe('images from outputs', () => {
  test('when the result has outputs, their image/png data is used and the workspace is not read', async () => {
    fs.writeFileSync(path.join(dir, 'figure.png'), Buffer.from('from the workspace'));
    const outputs = [
      { type: 'display_data', data: { 'text/plain': '<Figure>', 'image/png': PNG.toString('base64') } },
      { type: 'execute_result', data: { 'text/html': '<table></table>' } },
    ];
    const content = await runCodeImages(result(['figure.png'], { outputs }), dir, LIMITS);
    expect(content).toEqual([{ type: 'image', mimeType: 'image/png', data: PNG.toString('base64') }]);
  });

  test('outputs over the size or count limit are left out, and said so', async () => {
    const big = { type: 'display_data', data: { 'image/png': Buffer.alloc(4096).toString('base64') } };
    const small = { type: 'display_data', data: { 'image/png': PNG.toString('base64') } };
    const content = await runCodeImages(result([], { outputs: [big, small, small, small] }), dir, LIMITS);
    expect(content.filter((c) => c.type === 'image')).toHaveLength(2);
    expect(content.at(-1)).toMatchObject({ type: 'text', text: expect.stringContaining('2 image output(s)') as string });
  });
});

test('displayed text without an image is in the text, and dropped outputs are said so', () => {
  const text = runCodeText(result([], {
    outputs: [
      { type: 'display_data', data: { 'text/plain': 'shown', 'text/html': '<b>shown</b>' } },
      { type: 'display_data', data: { 'text/plain': '<Figure>', 'image/png': PNG.toString('base64') } },
      { type: 'execute_result', data: { 'text/plain': '42' } },
    ],
    outputs_truncated: true,
  }));
  expect(text).toBe('status: ok, exit_code: 0, duration_ms: 5\n--- stdout ---\nout\n--- display ---\nshown\n--- result ---\n42\nnote: some rich outputs were dropped (over MAX_OUTPUT_CHARS in all)\n');
});

test('the text names status, output, result and error with its traceback', () => {
  const text = runCodeText(result([], {
    status: 'error', stdout: '', error: { type: 'ZeroDivisionError', message: 'division by zero', line: 1, hint: null, traceback: ['Traceback (most recent call last):\n', 'ZeroDivisionError: division by zero\n'] }, result: null,
  }));
  expect(text).toBe('status: error, exit_code: 0, duration_ms: 5\n--- error ---\nZeroDivisionError: division by zero (line 1)\nTraceback (most recent call last):\nZeroDivisionError: division by zero\n');
});
