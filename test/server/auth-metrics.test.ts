// API key, probes, Prometheus metrics, the OpenAPI document and the docs page.
import type { InjectOptions } from 'fastify';
import { beforeAll, describe, expect, it } from 'vitest';
import { useTestApp, multipartBody } from '../helpers/app.js';
import { expectError } from '../helpers/http.js';

const KEY = 'test-key-0123456789abcdef';
const AUTH = { authorization: `Bearer ${KEY}` };
const t = useTestApp({ API_KEY: KEY });
beforeAll(async () => {
  const res = await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'authed' }, headers: AUTH });
  expect(res.statusCode).toBe(201);
});

/** Every /v1 route of the contract, with a request that is valid apart from auth. */
function v1Requests(): { name: string; opts: InjectOptions }[] {
  const mp = multipartBody([{ name: 'a.txt', content: 'a' }]);
  return [
    { name: 'GET /v1/environments', opts: { method: 'GET', url: '/v1/environments' } },
    { name: 'POST /v1/sessions', opts: { method: 'POST', url: '/v1/sessions', payload: { session_id: 'new-one' } } },
    { name: 'GET /v1/sessions', opts: { method: 'GET', url: '/v1/sessions' } },
    { name: 'GET /v1/sessions/{id}', opts: { method: 'GET', url: '/v1/sessions/authed' } },
    { name: 'POST /v1/sessions/{id}/files', opts: { method: 'POST', url: '/v1/sessions/authed/files', payload: mp.payload, headers: mp.headers } },
    { name: 'GET /v1/sessions/{id}/files', opts: { method: 'GET', url: '/v1/sessions/authed/files' } },
    { name: 'GET /v1/sessions/{id}/files/{path}', opts: { method: 'GET', url: '/v1/sessions/authed/files/a.txt' } },
    { name: 'DELETE /v1/sessions/{id}/files/{path}', opts: { method: 'DELETE', url: '/v1/sessions/authed/files/a.txt' } },
    { name: 'POST /v1/sessions/{id}/execute', opts: { method: 'POST', url: '/v1/sessions/authed/execute', payload: { command: 'true' } } },
    { name: 'POST /v1/execute', opts: { method: 'POST', url: '/v1/execute', payload: { command: 'true' } } },
    { name: 'DELETE /v1/sessions/{id}', opts: { method: 'DELETE', url: '/v1/sessions/authed' } },
  ];
}

function withHeaders(opts: InjectOptions, extra: Record<string, string>): InjectOptions {
  return { ...opts, headers: { ...(opts.headers as Record<string, string> | undefined), ...extra } };
}

describe('API key', () => {
  it.each(v1Requests())('$name: no key or a wrong key is 401 UNAUTHORIZED, and nothing happens', async ({ opts }) => {
    const before = await t.app.inject({ method: 'GET', url: '/v1/sessions', headers: AUTH });
    const filesBefore = (await t.app.inject({ method: 'GET', url: '/v1/sessions/authed/files', headers: AUTH })).body;
    const none = await t.app.inject(opts);
    expectError(none, 401, 'UNAUTHORIZED');
    for (const header of [`Bearer ${KEY}x`, `Bearer ${KEY.slice(0, -1)}`, KEY, `Basic ${KEY}`, 'Bearer ', `bearer  wrong-key-wrong-key`]) {
      expectError(await t.app.inject(withHeaders(opts, { authorization: header })), 401, 'UNAUTHORIZED');
    }
    const after = await t.app.inject({ method: 'GET', url: '/v1/sessions', headers: AUTH });
    expect(after.json<{ sessions: { session_id: string }[] }>().sessions.map((s) => s.session_id).sort())
      .toEqual(before.json<{ sessions: { session_id: string }[] }>().sessions.map((s) => s.session_id).sort());
    expect((await t.app.inject({ method: 'GET', url: '/v1/sessions/authed/files', headers: AUTH })).body).toBe(filesBefore);
  });

  it('every /v1 route works with the right key', async () => {
    for (const { name, opts } of v1Requests()) {
      const res = await t.app.inject(withHeaders(opts, AUTH));
      expect(res.statusCode, `${name}: ${res.body}`).toBeLessThan(300);
    }
  });

  it('probes and metrics need no key', async () => {
    expect((await t.app.inject({ method: 'GET', url: '/healthz' })).json()).toEqual({ status: 'ok' });
    expect((await t.app.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(200);
    expect((await t.app.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(200);
  });

  it('the key is not accepted in a query string', async () => {
    expectError(await t.app.inject({ method: 'GET', url: `/v1/sessions?api_key=${KEY}` }), 401, 'UNAUTHORIZED');
  });
});

describe('probes', () => {
  it('GET /readyz is 200 ready with checks when the sandbox works', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/readyz' });
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json<{ status: string; checks: Record<string, unknown> & { environments: { usable: string[] } } }>();
    expect(body.status).toBe('ready');
    expect(typeof body.checks).toBe('object');
    expect(Object.keys(body.checks).length).toBeGreaterThan(0);
    expect(body.checks.environments.usable).toEqual(expect.arrayContaining(['bare', 'pandas-exec']));
  });
});

describe('metrics', () => {
  const m = useTestApp();

  const scrape = async (): Promise<string> => {
    const res = await m.app.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    expect(String(res.headers['content-type'])).toContain('text/plain');
    return res.body;
  };
  const value = (text: string, series: string): number | undefined => {
    const line = text.split('\n').find((l) => l.startsWith(`${series} `));
    return line === undefined ? undefined : Number(line.slice(series.length + 1));
  };

  it('counts executions by status and their duration histogram', async () => {
    await m.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'm1' } });
    const before = await scrape();
    const okBefore = value(before, 'bubble_sandbox_executions_total{status="ok"}') ?? 0;
    const countBefore = value(before, 'bubble_sandbox_execution_duration_seconds_count') ?? 0;
    expect((await m.app.inject({ method: 'POST', url: '/v1/sessions/m1/execute', payload: { command: 'true' } })).statusCode).toBe(200);
    expect((await m.app.inject({ method: 'POST', url: '/v1/sessions/m1/execute', payload: { command: 'exit 2' } })).statusCode).toBe(200);
    const text = await scrape();
    expect(value(text, 'bubble_sandbox_executions_total{status="ok"}')).toBe(okBefore + 1);
    expect(value(text, 'bubble_sandbox_executions_total{status="error"}')).toBeGreaterThanOrEqual(1);
    expect(text).toContain('# TYPE bubble_sandbox_execution_duration_seconds histogram');
    expect(value(text, 'bubble_sandbox_execution_duration_seconds_count')).toBe(countBefore + 2);
    expect(value(text, 'bubble_sandbox_execution_duration_seconds_bucket{le="+Inf"}')).toBe(countBefore + 2);
    expect(value(text, 'bubble_sandbox_execution_duration_seconds_sum')).toBeGreaterThan(0);
  });

  it('reports the number of active sessions as a gauge', async () => {
    await m.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'm2' } });
    await m.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'm3' } });
    let text = await scrape();
    expect(text).toContain('# TYPE bubble_sandbox_sessions_active gauge');
    expect(value(text, 'bubble_sandbox_sessions_active')).toBe(m.sessions.count);
    expect(value(text, 'bubble_sandbox_sessions_active')).toBe(3);
    expect((await m.app.inject({ method: 'DELETE', url: '/v1/sessions/m3' })).statusCode).toBe(204);
    text = await scrape();
    expect(value(text, 'bubble_sandbox_sessions_active')).toBe(2);
  });

  it('counts uploaded bytes', async () => {
    const before = value(await scrape(), 'bubble_sandbox_upload_bytes_total') ?? 0;
    const mp = multipartBody([{ name: 'a.csv', content: '12345' }, { name: 'b.csv', content: '678' }]);
    expect((await m.app.inject({ method: 'POST', url: '/v1/sessions/m1/files', payload: mp.payload, headers: mp.headers })).statusCode).toBe(201);
    expect(value(await scrape(), 'bubble_sandbox_upload_bytes_total')).toBe(before + 8);
  });

  it('counts rejected requests by reason', async () => {
    const before = value(await scrape(), 'bubble_sandbox_rejected_requests_total{reason="SESSION_NOT_FOUND"}') ?? 0;
    expectError(await m.app.inject({ method: 'GET', url: '/v1/sessions/nope' }), 404, 'SESSION_NOT_FOUND');
    expectError(await m.app.inject({ method: 'GET', url: '/v1/sessions/nope/files' }), 404, 'SESSION_NOT_FOUND');
    const text = await scrape();
    expect(value(text, 'bubble_sandbox_rejected_requests_total{reason="SESSION_NOT_FOUND"}')).toBe(before + 2);
    // The service's own series carry the prefix; the process and Node.js ones keep their standard names.
    for (const line of text.split('\n').filter((l) => l.length > 0 && !l.startsWith('#'))) {
      expect(/^(bubble_sandbox_|process_|nodejs_)/.test(line), line).toBe(true);
    }
  });
});

describe('OpenAPI and docs', () => {
  it('/openapi.json is an OpenAPI 3 document listing every route of the contract', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/openapi.json' });
    expect(res.statusCode).toBe(200);
    const doc = res.json<{ openapi: string; paths: Record<string, Record<string, unknown>> }>();
    expect(doc.openapi).toMatch(/^3\./);
    const routes = Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`));
    const expected = [
      'GET /healthz', 'GET /readyz', 'GET /metrics',
      'GET /v1/environments',
      'POST /v1/sessions', 'GET /v1/sessions', 'GET /v1/sessions/{id}', 'DELETE /v1/sessions/{id}',
      'POST /v1/sessions/{id}/files', 'GET /v1/sessions/{id}/files', 'GET /v1/sessions/{id}/files/{path}', 'DELETE /v1/sessions/{id}/files/{path}',
      'POST /v1/sessions/{id}/execute', 'POST /v1/execute',
    ];
    expect(routes).toEqual(expect.arrayContaining(expected));
  });

  it('/docs serves the documentation page', async () => {
    let res = await t.app.inject({ method: 'GET', url: '/docs' });
    for (let hops = 0; hops < 3 && res.statusCode >= 300 && res.statusCode < 400; hops++) {
      res = await t.app.inject({ method: 'GET', url: String(res.headers.location) });
    }
    expect(res.statusCode).toBe(200);
    expect(String(res.headers['content-type'])).toContain('text/html');
    expect(res.body.toLowerCase()).toContain('swagger');
  });
});
