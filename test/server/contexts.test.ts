// Contexts and rich outputs through HTTP with the real sandbox: separate state per context, the
// context routes and their errors, MAX_KERNELS counting contexts, contexts gone with the session,
// and display lines in the NDJSON stream.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { describe, expect, it } from 'vitest';
import { createTestApp, useTestApp } from '../helpers/app.js';
import { createSession, expectError, type RunCodeResultBody } from '../helpers/http.js';

async function runCode(app: FastifyInstance, id: string, body: Record<string, unknown>): Promise<RunCodeResultBody> {
  const res = await app.inject({ method: 'POST', url: `/v1/sessions/${id}/run_code`, payload: body });
  expect(res.statusCode, res.body).toBe(200);
  return res.json<RunCodeResultBody>();
}

async function createContext(app: FastifyInstance, id: string): Promise<string> {
  const res = await app.inject({ method: 'POST', url: `/v1/sessions/${id}/contexts`, payload: { language: 'python' } });
  expect(res.statusCode, res.body).toBe(201);
  const body = res.json<{ context_id: string; language: string; created_at: string }>();
  expect(body.language).toBe('python');
  expect(Number.isNaN(Date.parse(body.created_at))).toBe(false);
  return body.context_id;
}

describe('contexts', () => {
  const t = useTestApp({ MAX_KERNELS: '3', MAX_CONTEXTS_PER_SESSION: '3', EXECUTION_TIMEOUT_SECONDS: '30' });

  it('two contexts and the default one hold separate state, in the same workspace', async () => {
    await createSession(t.app, { session_id: 'ctx-state' });
    const a = await createContext(t.app, 'ctx-state');
    const b = await createContext(t.app, 'ctx-state');
    expect(a).not.toBe(b);
    await runCode(t.app, 'ctx-state', { code: "x = 'default'" });
    await runCode(t.app, 'ctx-state', { code: "x = 'a'\nopen('from-a.txt', 'w').write('hello')", context_id: a });
    await runCode(t.app, 'ctx-state', { code: "x = 'b'", context_id: b });
    expect((await runCode(t.app, 'ctx-state', { code: 'x', context_id: a })).result).toBe("'a'");
    expect((await runCode(t.app, 'ctx-state', { code: 'x', context_id: b })).result).toBe("'b'");
    expect((await runCode(t.app, 'ctx-state', { code: 'x' })).result).toBe("'default'");
    // Same workspace.
    expect((await runCode(t.app, 'ctx-state', { code: "open('from-a.txt').read()", context_id: b })).result).toBe("'hello'");
    const list = await t.app.inject({ method: 'GET', url: '/v1/sessions/ctx-state/contexts' });
    expect(list.json<{ contexts: { context_id: string }[] }>().contexts.map((c) => c.context_id)).toEqual([a, b]);
  }, 60_000);

  it('an unknown context is 404 CONTEXT_NOT_FOUND on run_code and delete; a deleted one is gone', async () => {
    await createSession(t.app, { session_id: 'ctx-404' });
    expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions/ctx-404/run_code', payload: { code: '1', context_id: 'ctx_nope' } }), 404, 'CONTEXT_NOT_FOUND');
    expectError(await t.app.inject({ method: 'DELETE', url: '/v1/sessions/ctx-404/contexts/ctx_nope' }), 404, 'CONTEXT_NOT_FOUND');
    expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions/nosuch/contexts', payload: {} }), 404, 'SESSION_NOT_FOUND');
    expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions/ctx-404/contexts', payload: { language: 'r' } }), 400);
    const c = await createContext(t.app, 'ctx-404');
    await runCode(t.app, 'ctx-404', { code: 'v = 1', context_id: c });
    const del = await t.app.inject({ method: 'DELETE', url: `/v1/sessions/ctx-404/contexts/${c}` });
    expect(del.statusCode, del.body).toBe(204);
    expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions/ctx-404/run_code', payload: { code: 'v', context_id: c } }), 404, 'CONTEXT_NOT_FOUND');
    // A context of another session is unknown here.
    await createSession(t.app, { session_id: 'ctx-other' });
    const other = await createContext(t.app, 'ctx-other');
    expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions/ctx-404/run_code', payload: { code: '1', context_id: other } }), 404, 'CONTEXT_NOT_FOUND');
  }, 60_000);

  it('deleting a context while a cell runs in it ends that call as killed', async () => {
    await createSession(t.app, { session_id: 'ctx-busy' });
    const c = await createContext(t.app, 'ctx-busy');
    await runCode(t.app, 'ctx-busy', { code: '1', context_id: c }); // started
    const running = runCode(t.app, 'ctx-busy', { code: "import time\nprint('started', flush=True)\ntime.sleep(60)", context_id: c, timeout_seconds: 120 });
    // The interpreter is warm: the cell is running well within this.
    await new Promise((r) => setTimeout(r, 1500));
    const del = await t.app.inject({ method: 'DELETE', url: `/v1/sessions/ctx-busy/contexts/${c}` });
    expect(del.statusCode, del.body).toBe(204);
    const r = await running;
    expect(r.status).toBe('killed');
    expect(t.sessions.kernels.contexts.list('ctx-busy')).toEqual([]);
  }, 60_000);

  it('at most MAX_CONTEXTS_PER_SESSION contexts: 429 TOO_MANY_CONTEXTS', async () => {
    await createSession(t.app, { session_id: 'ctx-max' });
    for (let i = 0; i < 3; i++) await createContext(t.app, 'ctx-max');
    expectError(await t.app.inject({ method: 'POST', url: '/v1/sessions/ctx-max/contexts', payload: {} }), 429, 'TOO_MANY_CONTEXTS');
  });

  it('contexts count against MAX_KERNELS: the least recently used interpreter is stopped and says so', async () => {
    await createSession(t.app, { session_id: 'ctx-cap' });
    const [a, b, c] = [await createContext(t.app, 'ctx-cap'), await createContext(t.app, 'ctx-cap'), await createContext(t.app, 'ctx-cap')];
    await runCode(t.app, 'ctx-cap', { code: 'n = 0' });
    for (const cid of [a, b]) await runCode(t.app, 'ctx-cap', { code: 'n = 1', context_id: cid });
    const before = t.sessions.kernels.size;
    expect(before).toBeLessThanOrEqual(3);
    // A fourth interpreter (c) makes room by stopping the oldest (the default one).
    const third = await runCode(t.app, 'ctx-cap', { code: 'n = 2', context_id: c });
    expect(third.kernel_restarted).toBe(false);
    expect(t.sessions.kernels.size).toBeLessThanOrEqual(3);
    const again = await runCode(t.app, 'ctx-cap', { code: "'n' in dir()" });
    expect(again.kernel_restarted).toBe(true);
    expect(again.result).toBe('False');
  }, 60_000);

  it('deleting the session stops its contexts\' interpreters', async () => {
    await createSession(t.app, { session_id: 'ctx-gone' });
    const a = await createContext(t.app, 'ctx-gone');
    await runCode(t.app, 'ctx-gone', { code: '1', context_id: a });
    await runCode(t.app, 'ctx-gone', { code: '1' });
    const before = t.sessions.kernels.size;
    expect((await t.app.inject({ method: 'DELETE', url: '/v1/sessions/ctx-gone' })).statusCode).toBe(204);
    expect(t.sessions.kernels.size).toBe(before - 2);
    await createSession(t.app, { session_id: 'ctx-gone' });
    const list = await t.app.inject({ method: 'GET', url: '/v1/sessions/ctx-gone/contexts' });
    expect(list.json()).toEqual({ contexts: [] });
  }, 60_000);
});

describe('contexts across a restart of the service', () => {
  it('are gone: the session comes back, its old context_id is 404, the default interpreter starts fresh', async () => {
    const workspaceDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bs-ctx-restart-'));
    fs.chmodSync(workspaceDir, 0o711);
    try {
      const first = await createTestApp({}, { workspaceDir });
      let cid: string;
      try {
        await createSession(first.app, { session_id: 'kept' });
        cid = await createContext(first.app, 'kept');
        await runCode(first.app, 'kept', { code: 'v = 1', context_id: cid });
      } finally {
        await first.close();
      }
      const second = await createTestApp({}, { workspaceDir });
      try {
        expect((await second.app.inject({ method: 'GET', url: '/v1/sessions/kept' })).statusCode).toBe(200);
        expect((await second.app.inject({ method: 'GET', url: '/v1/sessions/kept/contexts' })).json()).toEqual({ contexts: [] });
        expectError(await second.app.inject({ method: 'POST', url: '/v1/sessions/kept/run_code', payload: { code: 'v', context_id: cid } }), 404, 'CONTEXT_NOT_FOUND');
      } finally {
        await second.close();
      }
    } finally {
      fs.rmSync(workspaceDir, { recursive: true, force: true });
    }
  }, 60_000);
});

describe('rich outputs over HTTP', () => {
  const t = useTestApp({ EXECUTION_TIMEOUT_SECONDS: '30' });

  it('a DataFrame gives text/html; the NDJSON stream has display lines in place and outputs on the result line', async () => {
    await createSession(t.app, { session_id: 'rich', environment: 'pandas-exec' });
    const plain = await runCode(t.app, 'rich', { code: "import pandas as pd\ndf = pd.DataFrame({'a': range(3)})\ndf" });
    expect(plain.outputs).toHaveLength(1);
    expect(plain.outputs[0]?.type).toBe('execute_result');
    expect(plain.outputs[0]?.data['text/html']).toContain('<table');
    expect(plain.outputs_truncated).toBe(false);
    const res = await t.app.inject({
      method: 'POST', url: '/v1/sessions/rich/run_code', headers: { accept: 'application/x-ndjson' },
      payload: { code: "print('before')\ndisplay(df)\nprint('after')\n7" },
    });
    expect(res.statusCode, res.body).toBe(200);
    // Text may come in several chunks: neighbouring events of one stream are joined.
    const events: Record<string, unknown>[] = [];
    for (const e of res.body.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)) {
      const last = events[events.length - 1];
      if (last && last.type === 'stdout' && e.type === 'stdout') last.data = String(last.data) + String(e.data);
      else events.push(e);
    }
    expect(events.map((e) => e.type)).toEqual(['stdout', 'display', 'stdout', 'display', 'result']);
    expect(events[1]).toMatchObject({ output: { type: 'display_data', data: { 'text/html': expect.stringContaining('<table') as unknown } } });
    expect(events.filter((e) => e.type === 'stdout').map((e) => e.data)).toEqual(['before\n', 'after\n']);
    expect(events[3]).toEqual({ type: 'display', output: { type: 'execute_result', data: { 'text/plain': '7' } } });
    const result = events[4] as { outputs: unknown[]; outputs_truncated: boolean };
    expect(result.outputs).toEqual([events[1]?.output, events[3]?.output]);
    expect(result.outputs_truncated).toBe(false);
  }, 60_000);
});
