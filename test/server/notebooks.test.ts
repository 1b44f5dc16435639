// POST /v1/sessions/{id}/notebooks/execute with the real sandbox and the jupyter environment: a
// real kernel runs the cells, per-cell status and errors come back, the executed notebook is
// written, a hanging cell times out and leaves no process behind, and bad input is refused.
import type { FastifyInstance } from 'fastify';
import { describe, expect, it } from 'vitest';
import { useTestApp } from '../helpers/app.js';
import { descendantsOf, waitUntil } from '../helpers/host-processes.js';
import { createSession, expectError, upload } from '../helpers/http.js';

interface NotebookAnswer {
  status: string;
  cells: { index: number; status: string; execution_count: number | null; error: { ename: string; evalue: string; traceback: string[] } | null }[];
  output_path: string;
  error: { ename: string; evalue: string } | null;
  files: { created: string[]; modified: string[]; deleted: string[] };
}

function notebook(cells: ({ md: string } | string)[]): string {
  return JSON.stringify({
    nbformat: 4, nbformat_minor: 5,
    metadata: { kernelspec: { name: 'python3', display_name: 'Python 3', language: 'python' } },
    cells: cells.map((c, i) => (typeof c === 'string'
      ? { id: `c${i}`, cell_type: 'code', metadata: {}, execution_count: null, outputs: [], source: c }
      : { id: `c${i}`, cell_type: 'markdown', metadata: {}, source: c.md })),
  });
}

async function runNotebook(app: FastifyInstance, id: string, body: Record<string, unknown>) {
  return app.inject({ method: 'POST', url: `/v1/sessions/${id}/notebooks/execute`, payload: body });
}

async function download(app: FastifyInstance, id: string, path: string): Promise<{ cells: { outputs?: Record<string, unknown>[]; execution_count?: number | null }[] }> {
  const res = await app.inject({ method: 'GET', url: `/v1/sessions/${id}/files/${path}` });
  expect(res.statusCode, res.body).toBe(200);
  return JSON.parse(res.body) as { cells: { outputs?: Record<string, unknown>[] }[] };
}

describe('notebooks/execute', () => {
  const t = useTestApp({ MAX_EXECUTION_TIMEOUT_SECONDS: '120', MAX_UPLOAD_SIZE_BYTES: String(64 * 1024) });

  it('runs every code cell with a real kernel, in one namespace, and writes the executed notebook', async () => {
    // The kernel runs under the same seccomp filter as every sandbox (when the host has one).
    if (process.env.CI === 'true') expect(t.sandbox.runner.spawnDeps.seccompProgram).not.toBeNull();
    await createSession(t.app, { session_id: 'nb-ok', environment: 'jupyter' });
    const nb = notebook([
      { md: '# Analysis' },
      "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2, 3]})\nprint('rows', len(df))",
      'from ipykernel.connect import get_connection_info\nget_connection_info(unpack=True)["ip"]',
      'df',
    ]);
    expect((await upload(t.app, 'nb-ok', [{ name: 'analysis.ipynb', content: nb }])).statusCode).toBe(201);
    const res = await runNotebook(t.app, 'nb-ok', { path: 'analysis.ipynb', timeout_seconds: 90, cell_timeout_seconds: 60 });
    expect(res.statusCode, res.body).toBe(200);
    const r = res.json<NotebookAnswer>();
    expect(r).toMatchObject({ status: 'ok', output_path: 'analysis.out.ipynb', error: null });
    expect(r.cells).toEqual([
      { index: 1, status: 'ok', execution_count: 1, error: null },
      { index: 2, status: 'ok', execution_count: 2, error: null },
      { index: 3, status: 'ok', execution_count: 3, error: null },
    ]);
    expect(r.files.created).toContain('analysis.out.ipynb');
    const out = await download(t.app, 'nb-ok', 'analysis.out.ipynb');
    // nbformat writes multi-line strings as lists of lines.
    const text = (v: unknown) => (Array.isArray(v) ? v.join('') : v);
    const stream = out.cells[1]?.outputs?.[0] ?? {};
    expect([stream.output_type, stream.name, text(stream.text)]).toEqual(['stream', 'stdout', 'rows 3\n']);
    // The kernel's ZMQ sockets are on the loopback of the sandbox's own network namespace.
    const ip = out.cells[2]?.outputs?.[0] ?? {};
    expect([ip.output_type, text((ip.data as Record<string, unknown> | undefined)?.['text/plain'])]).toEqual(['execute_result', "'127.0.0.1'"]);
    expect(JSON.stringify(out.cells[3]?.outputs)).toContain('<table');
  }, 120_000);

  it('a failing cell reports its ename, evalue and traceback; later cells are skipped; the notebook is still written', async () => {
    await createSession(t.app, { session_id: 'nb-err', environment: 'jupyter' });
    const nb = notebook(['x = 1', 'def f():\n    return 1 / 0\nf()', 'x = 2', { md: 'end' }]);
    await upload(t.app, 'nb-err', [{ name: 'fail.ipynb', content: nb }], '?dir=work');
    const res = await runNotebook(t.app, 'nb-err', { path: 'work/fail.ipynb', output_path: 'work/ran.ipynb', timeout_seconds: 90 });
    expect(res.statusCode, res.body).toBe(200);
    const r = res.json<NotebookAnswer>();
    expect(r.status).toBe('error');
    expect(r.output_path).toBe('work/ran.ipynb');
    expect(r.cells.map((c) => [c.index, c.status])).toEqual([[0, 'ok'], [1, 'error'], [2, 'skipped']]);
    expect(r.cells[1]?.error).toMatchObject({ ename: 'ZeroDivisionError', evalue: 'division by zero' });
    expect(r.cells[1]?.error?.traceback.join('\n')).toContain('return 1 / 0');
    expect(r.cells[1]?.error?.traceback.join('\n')).not.toContain('\x1b[');
    const out = await download(t.app, 'nb-err', 'work/ran.ipynb');
    expect(out.cells[1]?.outputs?.[0]).toMatchObject({ output_type: 'error', ename: 'ZeroDivisionError' });
    expect(out.cells[2]?.execution_count ?? null).toBeNull();
  }, 120_000);

  it('a hanging cell times out (cell_timeout_seconds) and no process of the notebook is left on the host', async () => {
    await createSession(t.app, { session_id: 'nb-hang', environment: 'jupyter' });
    await upload(t.app, 'nb-hang', [{ name: 'hang.ipynb', content: notebook(['import time', 'time.sleep(600)', 'print(1)']) }]);
    const owner = t.sessions.ownerOf(await t.sessions.touch('nb-hang'));
    const res = await runNotebook(t.app, 'nb-hang', { path: 'hang.ipynb', timeout_seconds: 100, cell_timeout_seconds: 8 });
    expect(res.statusCode, res.body).toBe(200);
    const r = res.json<NotebookAnswer>();
    expect(r.status).toBe('timeout');
    expect(r.cells.map((c) => c.status)).toEqual(['ok', 'error', 'skipped']);
    expect(r.cells[1]?.error?.ename).toBe('CellTimeoutError');
    if (owner) {
      // Nothing of the sandbox (runner, kernel) runs as the session's uid any more.
      const left = await waitUntil(() => descendantsOf(process.pid).filter((p) => p.uid === owner.uid && p.state !== 'Z' && !p.command.includes('netns-helper.py')), (l) => l.length === 0, 3000);
      expect(left.map((p) => p.command)).toEqual([]);
    }
  }, 120_000);

  it('cell_timeout_seconds bounds the kernel\'s start too: a kernel that cannot start in time is status timeout, every cell skipped', async () => {
    await createSession(t.app, { session_id: 'nb-start', environment: 'jupyter' });
    // The workspace is on PYTHONPATH in the sandbox: this sitecustomize slows down only the kernel's start.
    // (At that point a `python -m ipykernel_launcher -f <connection file>` sees sys.argv ['-m', '-f', ...].)
    const slow = "import sys, time\nif sys.argv[:2] == ['-m', '-f']:\n    time.sleep(6)\n";
    const made = await t.app.inject({ method: 'POST', url: '/v1/sessions/nb-start/execute', payload: { script: `open('sitecustomize.py', 'w').write(${JSON.stringify(slow)})` } });
    expect(made.json<{ status: string }>().status).toBe('ok');
    await upload(t.app, 'nb-start', [{ name: 'quick.ipynb', content: notebook(['1', '2']) }]);
    const res = await runNotebook(t.app, 'nb-start', { path: 'quick.ipynb', timeout_seconds: 60, cell_timeout_seconds: 2 });
    expect(res.statusCode, res.body).toBe(200);
    const r = res.json<NotebookAnswer>();
    expect(r.status, res.body).toBe('timeout');
    expect(r.error?.evalue).toMatch(/didn't respond|timed out/i);
    expect(r.cells.map((c) => c.status)).toEqual(['skipped', 'skipped']);
    expectError(await runNotebook(t.app, 'nb-start', { path: 'quick.ipynb', cell_timeout_seconds: 0.5 }), 400, 'FST_ERR_VALIDATION');
  }, 120_000);

  it('the overall timeout stops a notebook whose cell timeout is longer, and nothing is left', async () => {
    await createSession(t.app, { session_id: 'nb-total', environment: 'jupyter' });
    await upload(t.app, 'nb-total', [{ name: 'slow.ipynb', content: notebook(['1', 'import time\ntime.sleep(600)']) }]);
    const owner = t.sessions.ownerOf(await t.sessions.touch('nb-total'));
    const res = await runNotebook(t.app, 'nb-total', { path: 'slow.ipynb', timeout_seconds: 15, cell_timeout_seconds: 15 });
    const r = res.json<NotebookAnswer>();
    expect(r.status, res.body).toBe('timeout');
    expect(r.cells.map((c) => c.status)).toEqual(['ok', 'error']);
    expect(r.error?.ename).toBe('TimeoutError');
    // Written after each cell: the executed notebook is there as far as it got.
    expect((await download(t.app, 'nb-total', 'slow.out.ipynb')).cells[0]?.execution_count).toBe(1);
    if (owner) {
      const left = await waitUntil(() => descendantsOf(process.pid).filter((p) => p.uid === owner.uid && p.state !== 'Z' && !p.command.includes('netns-helper.py')), (l) => l.length === 0, 3000);
      expect(left.map((p) => p.command)).toEqual([]);
    }
  }, 120_000);

  it('refuses bad input: .. in a path 400, not a notebook 422 with the reason, too large 413, missing 404, no kernel in the environment 409', async () => {
    await createSession(t.app, { session_id: 'nb-bad', environment: 'jupyter' });
    expectError(await runNotebook(t.app, 'nb-bad', { path: '../other/x.ipynb' }), 400, 'INVALID_PATH');
    expectError(await runNotebook(t.app, 'nb-bad', { path: 'x.ipynb', output_path: 'a/../../b.ipynb' }), 400, 'INVALID_PATH');
    expectError(await runNotebook(t.app, 'nb-bad', { path: 'x.ipynb', timeout_seconds: 10, cell_timeout_seconds: 20 }), 400);
    expectError(await runNotebook(t.app, 'nb-bad', { path: 'missing.ipynb' }), 404, 'FILE_NOT_FOUND');
    await upload(t.app, 'nb-bad', [
      { name: 'notes.txt', content: 'just text' },
      { name: 'data.json', content: '{"cells": "no"}' },
      { name: 'old.ipynb', content: JSON.stringify({ nbformat: 3, worksheets: [] }) },
    ]);
    const text = expectError(await runNotebook(t.app, 'nb-bad', { path: 'notes.txt' }), 422, 'INVALID_NOTEBOOK');
    expect(text.message).toContain('not JSON');
    expect(expectError(await runNotebook(t.app, 'nb-bad', { path: 'data.json' }), 422, 'INVALID_NOTEBOOK').message).toContain('nbformat');
    expect(expectError(await runNotebook(t.app, 'nb-bad', { path: 'old.ipynb' }), 422, 'INVALID_NOTEBOOK').message).toContain('only 4');
    // Larger than MAX_UPLOAD_SIZE_BYTES (made inside the sandbox, since an upload that large is refused).
    const made = await t.app.inject({ method: 'POST', url: '/v1/sessions/nb-bad/execute', payload: { script: `import json\njson.dump({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": "code", "source": "x" * 70000, "metadata": {}, "outputs": [], "execution_count": None}]}, open("big.ipynb", "w"))` } });
    expect(made.json<{ status: string }>().status).toBe('ok');
    expectError(await runNotebook(t.app, 'nb-bad', { path: 'big.ipynb' }), 413, 'NOTEBOOK_TOO_LARGE');
    await createSession(t.app, { session_id: 'nb-bare', environment: 'bare' });
    await upload(t.app, 'nb-bare', [{ name: 'a.ipynb', content: notebook(['1']) }]);
    expect(expectError(await runNotebook(t.app, 'nb-bare', { path: 'a.ipynb' }), 409, 'ENVIRONMENT_UNAVAILABLE').message).toContain('jupyter');
  }, 120_000);
});
