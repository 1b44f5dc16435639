// /metrics is valid Prometheus text by Prometheus' own checker, with standard process metric
// names and the service's operational series (HTTP durations by route, queue, interpreters, build).
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { useTestApp } from '../helpers/app.js';
import { PROJECT_ROOT } from '../helpers/host-env.js';

function findPromtool(): string | null {
  const local = path.join(PROJECT_ROOT, '.tools/bin/promtool');
  if (fs.existsSync(local)) return local;
  const onPath = spawnSync('sh', ['-c', 'command -v promtool'], { encoding: 'utf8' }).stdout.trim();
  return onPath === '' ? null : onPath;
}
const promtool = findPromtool();

describe('metrics text', () => {
  const t = useTestApp();

  const scrape = async (): Promise<string> => {
    const res = await t.app.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    return res.body;
  };

  // scripts/install-promtool.sh puts it in .tools/bin; CI runs that, so there it never skips.
  it.skipIf(promtool === null && !process.env.CI)('passes promtool check metrics', async () => {
    expect(promtool, 'promtool is missing: run scripts/install-promtool.sh').not.toBeNull();
    expect((await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'p1' } })).statusCode).toBe(201);
    expect((await t.app.inject({ method: 'POST', url: '/v1/sessions/p1/run_code', payload: { code: '1 + 1' } })).statusCode).toBe(200);
    const text = await scrape();
    const check = spawnSync(promtool ?? 'promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(check.stdout + check.stderr).toBe('');
    expect(check.status).toBe(0);
  });

  it('has no gauge named like a counter, and the standard process metric names', async () => {
    const text = await scrape();
    const gaugesTotal = [...text.matchAll(/^# TYPE (\S+_total) (gauge|histogram|summary|untyped)$/gm)].map((m) => m[1]);
    expect(gaugesTotal).toEqual([]);
    for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_start_time_seconds', 'process_open_fds', 'nodejs_heap_size_used_bytes']) {
      expect(text).toMatch(new RegExp(`^${name} `, 'm'));
    }
    expect(text).not.toContain('bubble_sandbox_process_');
  });

  it('times HTTP requests by method, route template and status', async () => {
    expect((await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'h1' } })).statusCode).toBe(201);
    expect((await t.app.inject({ method: 'POST', url: '/v1/sessions/h1/execute', payload: { command: 'true' } })).statusCode).toBe(200);
    expect((await t.app.inject({ method: 'GET', url: '/v1/sessions/nope' })).statusCode).toBe(404);
    const text = await scrape();
    expect(text).toMatch(/^bubble_sandbox_http_request_duration_seconds_count\{method="POST",route="\/v1\/sessions\/:id\/execute",status_code="200"\} [1-9]/m);
    expect(text).toMatch(/^bubble_sandbox_http_request_duration_seconds_count\{method="GET",route="\/v1\/sessions\/:id",status_code="404"\} [1-9]/m);
    // Ids never become labels.
    expect(text).not.toMatch(/route="[^"]*h1/);
  });

  it('reports queue depth, running executions, live interpreters and build info', async () => {
    expect((await t.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'k1' } })).statusCode).toBe(201);
    expect((await t.app.inject({ method: 'POST', url: '/v1/sessions/k1/run_code', payload: { code: 'x = 1' } })).statusCode).toBe(200);
    const text = await scrape();
    expect(text).toMatch(/^bubble_sandbox_executions_queued 0$/m);
    expect(text).toMatch(/^bubble_sandbox_executions_running 0$/m);
    expect(Number(/^bubble_sandbox_interpreters_live (\d+)$/m.exec(text)?.[1])).toBe(t.sessions.kernels.size);
    expect(t.sessions.kernels.size).toBeGreaterThanOrEqual(1);
    const version = (JSON.parse(fs.readFileSync(path.join(PROJECT_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    expect(text).toContain(`bubble_sandbox_build_info{version="${version}",node_version="${process.version}"} 1`);
  });
});

// Guard against a checker that accepts anything: promtool must refuse a gauge named *_total.
describe.skipIf(promtool === null && !process.env.CI)('promtool itself', () => {
  it('refuses a gauge with a _total name', () => {
    const bad = '# HELP x_total a gauge\n# TYPE x_total gauge\nx_total 1\n';
    expect(() => execFileSync(promtool ?? 'promtool', ['check', 'metrics'], { input: bad, stdio: ['pipe', 'pipe', 'pipe'] })).toThrow();
  });
});
