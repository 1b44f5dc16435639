// The access log (src/server/request-log.ts): one line per answered request, with what an
// operator needs and without the query string, read from the real app's log stream.
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from '../helpers/app.js';
import { createSession } from '../helpers/http.js';

type Line = Record<string, unknown> & { msg?: string; reqId?: string };

function collector(): { stream: Writable; lines: Line[] } {
  const lines: Line[] = [];
  let rest = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      rest += chunk.toString('utf8');
      let i: number;
      while ((i = rest.indexOf('\n')) >= 0) {
        lines.push(JSON.parse(rest.slice(0, i)) as Line);
        rest = rest.slice(i + 1);
      }
      done();
    },
  });
  return { stream, lines };
}

/** The lines written for the request whose answer carried `requestId`. */
const linesOf = (lines: Line[], requestId: string) => lines.filter((l) => l.reqId === requestId);

describe('access log at LOG_LEVEL=info', () => {
  const log = collector();
  let t: TestApp;
  beforeAll(async () => {
    t = await createTestApp({ LOG_LEVEL: 'info' }, { logDestination: log.stream });
    await createSession(t.app, { session_id: 'logged' });
  });
  afterAll(async () => {
    await t.close();
  });

  it('writes one line per run_code with method, path, route, status, duration, request and session ids, and the run\'s outcome', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/v1/sessions/logged/run_code', payload: { code: '1 + 1' }, headers: { 'x-request-id': 'req-run-code-1' } });
    expect(res.statusCode, res.body).toBe(200);
    const mine = linesOf(log.lines, 'req-run-code-1');
    expect(mine, JSON.stringify(mine)).toHaveLength(1);
    const line = mine[0] as Line;
    expect(line).toMatchObject({
      msg: 'request completed', level: 30, method: 'POST', url: '/v1/sessions/logged/run_code', route: '/v1/sessions/:id/run_code',
      status_code: 200, session_id: 'logged', status: 'ok', kernel_restarted: false, outputs: 1,
    });
    expect(typeof line.duration_ms).toBe('number');
    expect(typeof line.execution_ms).toBe('number');
    // Never the user's code.
    expect(JSON.stringify(line)).not.toContain('1 + 1');
  });

  it('writes one line per execute, with the execution\'s status and output sizes', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/v1/sessions/logged/execute', payload: { command: 'echo hi' }, headers: { 'x-request-id': 'req-execute-1' } });
    expect(res.statusCode, res.body).toBe(200);
    const mine = linesOf(log.lines, 'req-execute-1');
    expect(mine, JSON.stringify(mine)).toHaveLength(1);
    expect(mine[0]).toMatchObject({ msg: 'request completed', route: '/v1/sessions/:id/execute', status_code: 200, session_id: 'logged', status: 'ok', stdout_chars: 3 });
  });

  it('leaves the query string out of the line', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/v1/sessions/logged?token=s3cr3t-in-query', headers: { 'x-request-id': 'req-query-1' } });
    expect(res.statusCode, res.body).toBe(200);
    const mine = linesOf(log.lines, 'req-query-1');
    expect(mine).toHaveLength(1);
    expect(mine[0]).toMatchObject({ url: '/v1/sessions/logged', route: '/v1/sessions/:id', status_code: 200, session_id: 'logged' });
    expect(JSON.stringify(log.lines)).not.toContain('s3cr3t-in-query');
  });

  it('logs refusals and unknown routes once too, with their status', async () => {
    const missing = await t.app.inject({ method: 'POST', url: '/v1/sessions/nobody/run_code', payload: { code: '1' }, headers: { 'x-request-id': 'req-404-1' } });
    expect(missing.statusCode).toBe(404);
    expect(linesOf(log.lines, 'req-404-1')).toEqual([expect.objectContaining({ msg: 'request completed', status_code: 404, session_id: 'nobody' })]);
    const nowhere = await t.app.inject({ method: 'GET', url: '/no/such/route', headers: { 'x-request-id': 'req-404-2' } });
    expect(nowhere.statusCode).toBe(404);
    expect(linesOf(log.lines, 'req-404-2')).toEqual([expect.objectContaining({ msg: 'request completed', status_code: 404, route: 'unmatched', url: '/no/such/route' })]);
  });
});

describe('access log at LOG_LEVEL=warn', () => {
  const log = collector();
  let t: TestApp;
  beforeAll(async () => {
    t = await createTestApp({ LOG_LEVEL: 'warn' }, { logDestination: log.stream });
  });
  afterAll(async () => {
    await t.close();
  });

  it('writes no line for an answered request', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/v1/sessions', headers: { 'x-request-id': 'req-warn-1' } });
    expect(res.statusCode).toBe(200);
    expect(linesOf(log.lines, 'req-warn-1')).toEqual([]);
  });
});
