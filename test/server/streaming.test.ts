// NDJSON streaming (Accept: application/x-ndjson) of execute, one-shot execute and run_code,
// through app.inject with the real sandbox: the shape of the stream, errors before output, and
// the output cap on what is streamed. Timing (output before the end) is in test/e2e/run-code.test.ts.
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { beforeAll, describe, expect, it } from 'vitest';
import { useTestApp } from '../helpers/app.js';
import { EXECUTION_RESULT_KEYS, RUN_CODE_RESULT_KEYS, createSession, expectError } from '../helpers/http.js';

const MAX_OUTPUT_CHARS = 1000;
const NDJSON = { accept: 'application/x-ndjson' };
const OMITTED = /\n\[\.\.\. (\d+) characters omitted \.\.\.\]\n/;

type Event = Record<string, unknown> & { type: string };

interface Stream {
  events: Event[];
  stdout: string;
  stderr: string;
  result: Record<string, unknown>;
}

function omit(obj: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  return Object.fromEntries(Object.entries(obj).filter(([k]) => !keys.includes(k)));
}

/** Parses and checks an NDJSON answer: output events, then exactly one result event, last. */
function parseStream(res: LightMyRequestResponse): Stream {
  expect(res.statusCode, res.body).toBe(200);
  expect(res.headers['content-type']).toMatch(/^application\/x-ndjson\b/);
  expect(res.body.endsWith('\n')).toBe(true);
  const lines = res.body.slice(0, -1).split('\n');
  const events = lines.map((l) => {
    const v: unknown = JSON.parse(l);
    expect(v !== null && typeof v === 'object' && !Array.isArray(v), l).toBe(true);
    return v as Event;
  });
  const results = events.filter((e) => e.type === 'result');
  expect(results.length).toBe(1);
  expect(events[events.length - 1]?.type).toBe('result');
  let stdout = '';
  let stderr = '';
  for (const e of events.slice(0, -1)) {
    if (e.type === 'display') { // run_code's rich outputs, checked in test/server/rich-outputs.test.ts
      expect(Object.keys(e).sort()).toEqual(['output', 'type']);
      continue;
    }
    expect(['stdout', 'stderr'], JSON.stringify(e)).toContain(e.type);
    expect(Object.keys(e).sort()).toEqual(['data', 'type']);
    expect(typeof e.data).toBe('string');
    if (e.type === 'stdout') stdout += e.data as string;
    else stderr += e.data as string;
  }
  const result = omit(results[0] as Event, ['type']);
  expect(result.stdout).toBe('');
  expect(result.stderr).toBe('');
  return { events, stdout, stderr, result };
}

/** The streamed result must be the plain answer with its output moved to events. */
function expectSameAsPlain(streamed: Stream, plain: Record<string, unknown>): void {
  // Timing and usage differ from run to run; output is compared as the events' concatenation.
  const strip = (r: Record<string, unknown>) => omit(r, ['duration_ms', 'resources', 'stdout', 'stderr']);
  expect(Object.keys(streamed.result).sort()).toEqual(Object.keys(plain).sort());
  expect(strip(streamed.result)).toEqual(strip(plain));
  expect(streamed.stdout).toBe(plain.stdout);
  expect(streamed.stderr).toBe(plain.stderr);
  expect(Number.isInteger(streamed.result.duration_ms)).toBe(true);
  expect(Object.keys(streamed.result.resources as object).sort()).toEqual(['cpu_ms', 'memory_peak_bytes']);
}

async function post(app: FastifyInstance, url: string, payload: unknown, stream: boolean): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url, payload: payload as Record<string, unknown>, ...(stream ? { headers: NDJSON } : {}) });
}

const t = useTestApp({ MAX_OUTPUT_CHARS: String(MAX_OUTPUT_CHARS), MAX_EXECUTION_TIMEOUT_SECONDS: '60' });
beforeAll(async () => {
  await createSession(t.app, { session_id: 'exec' });
  await createSession(t.app, { session_id: 'code' });
});

/** A long print streamed: capped with the omission marker, its tail kept, and the same text as the plain JSON answer. */
async function expectStreamedCapLikePlain(url: string, body: Record<string, unknown>): Promise<void> {
  const s = parseStream(await post(t.app, url, body, true));
  expect(s.stdout).toMatch(OMITTED);
  expect(s.stdout.length).toBeLessThanOrEqual(MAX_OUTPUT_CHARS + 100);
  expect(s.stdout.endsWith('tail-end\n')).toBe(true);
  expect(s.result.truncated).toBe(true);
  const plain = (await post(t.app, url, body, false)).json<Record<string, unknown>>();
  expect(s.stdout).toBe(plain.stdout);
}

/** A request refused before any output, asked for as a stream: an ordinary JSON error. */
async function expectJsonErrorWhenStreamed(url: string, payload: unknown, status: number, code?: string): Promise<void> {
  const res = await post(t.app, url, payload, true);
  expect(res.headers['content-type']).toMatch(/^application\/json/);
  expectError(res, status, code);
}

describe('POST /v1/sessions/{id}/execute with Accept: application/x-ndjson', () => {
  const script = "import sys\nprint('out-1', flush=True)\nprint('err-1', file=sys.stderr, flush=True)\nprint('out-2')\nopen('made.txt', 'w').write('x')";

  it('streams stdout/stderr events, then one result event that matches the plain answer', async () => {
    const s = parseStream(await post(t.app, '/v1/sessions/exec/execute', { script }, true));
    expect(s.stdout).toBe('out-1\nout-2\n');
    expect(s.stderr).toBe('err-1\n');
    expect(Object.keys(s.result).sort()).toEqual(EXECUTION_RESULT_KEYS);
    expect(s.result).toMatchObject({
      status: 'ok', exit_code: 0, signal: null, truncated: false, max_output_chars: MAX_OUTPUT_CHARS, timed_out: false,
      error: null, files: { created: ['made.txt'], modified: [], deleted: [] },
    });
    // The same script unstreamed, in a workspace of its own (the file is new there too).
    await createSession(t.app, { session_id: 'exec-plain' });
    const plain = await post(t.app, '/v1/sessions/exec-plain/execute', { script }, false);
    expect(plain.headers['content-type']).toMatch(/^application\/json/);
    expectSameAsPlain(s, plain.json<Record<string, unknown>>());
  });

  it('a failing program is still a 200 stream whose result says so', async () => {
    const s = parseStream(await post(t.app, '/v1/sessions/exec/execute', { script: 'x = 1\nraise ValueError("bad value")' }, true));
    expect(s.stderr).toContain('ValueError: bad value');
    expect(s.result).toMatchObject({ status: 'error', exit_code: 1 });
    expect(s.result.error).toMatchObject({ type: 'ValueError', message: 'bad value', line: 2 });
    const timeout = parseStream(await post(t.app, '/v1/sessions/exec/execute', { command: 'echo before; sleep 10', timeout_seconds: 0.5 }, true));
    expect(timeout.stdout).toBe('before\n');
    expect(timeout.result).toMatchObject({ status: 'timeout', timed_out: true });
  });

  it('the output cap applies to what is streamed', async () => {
    await expectStreamedCapLikePlain('/v1/sessions/exec/execute', { script: "print('x' * 100_000)\nprint('tail-end')" });
  });

  it('errors found before any output are ordinary JSON errors, not streams', async () => {
    await expectJsonErrorWhenStreamed('/v1/sessions/nobody/execute', { command: 'echo hi' }, 404, 'SESSION_NOT_FOUND');
    await expectJsonErrorWhenStreamed('/v1/sessions/exec/execute', { command: 'true', timeout_seconds: 61 }, 400);
  });
});

describe('POST /v1/execute (one-shot) with Accept: application/x-ndjson', () => {
  it('streams output, then one result event with the inline output files', async () => {
    const body = { command: 'echo one; echo two >&2; echo three > out.txt' };
    const s = parseStream(await post(t.app, '/v1/execute', body, true));
    expect(s.stdout).toBe('one\n');
    expect(s.stderr).toBe('two\n');
    expect(s.result).toMatchObject({ status: 'ok', exit_code: 0, files: { created: ['out.txt'], modified: [], deleted: [], outputs_omitted: [] } });
    const outputs = (s.result.files as { outputs: { path: string; size: number; content_base64: string }[] }).outputs;
    expect(outputs).toEqual([{ path: 'out.txt', size: 6, content_base64: Buffer.from('three\n').toString('base64') }]);
    const plain = (await post(t.app, '/v1/execute', body, false)).json<Record<string, unknown>>();
    expectSameAsPlain(s, plain);
  });

  it('the output cap applies to what is streamed', async () => {
    const s = parseStream(await post(t.app, '/v1/execute', { script: "import sys\nsys.stderr.write('e' * 100_000)" }, true));
    expect(s.stderr).toMatch(OMITTED);
    expect(s.stderr.length).toBeLessThanOrEqual(MAX_OUTPUT_CHARS + 100);
    expect(s.result.truncated).toBe(true);
  });

  it('errors found before any output are ordinary JSON errors', async () => {
    await expectJsonErrorWhenStreamed('/v1/execute', { environment: 'nope', command: 'true' }, 404, 'ENVIRONMENT_NOT_FOUND');
    await expectJsonErrorWhenStreamed('/v1/execute', { command: 'true', script: 'print(1)' }, 400);
  });
});

describe('POST /v1/sessions/{id}/run_code with Accept: application/x-ndjson', () => {
  it('streams output, then one result event with result and kernel_restarted', async () => {
    const first = parseStream(await post(t.app, '/v1/sessions/code/run_code', { code: "import sys\nx = 2\nprint('hi')\nprint('warn', file=sys.stderr)\nx * 21" }, true));
    expect(first.stdout).toBe('hi\n');
    expect(first.stderr).toBe('warn\n');
    expect(Object.keys(first.result).sort()).toEqual(RUN_CODE_RESULT_KEYS);
    expect(first.result).toMatchObject({
      status: 'ok', exit_code: 0, result: '42', kernel_restarted: false, error: null, truncated: false,
      max_output_chars: MAX_OUTPUT_CHARS, files: { created: [], modified: [], deleted: [] },
    });
    // The state is the same interpreter's as for plain calls.
    const code = "print('again')\nx + 1";
    const streamed = parseStream(await post(t.app, '/v1/sessions/code/run_code', { code }, true));
    expect(streamed.result).toMatchObject({ result: '3', kernel_restarted: false });
    const plain = (await post(t.app, '/v1/sessions/code/run_code', { code }, false)).json<Record<string, unknown>>();
    expectSameAsPlain(streamed, plain);
  });

  it('an exception streams its traceback on stderr; the result event carries the error', async () => {
    const s = parseStream(await post(t.app, '/v1/sessions/code/run_code', { code: "print('start')\n{}['missing']" }, true));
    expect(s.stdout).toBe('start\n');
    expect(s.stderr).toContain("KeyError: 'missing'");
    expect(s.result).toMatchObject({ status: 'error', result: null, kernel_restarted: false });
    expect(s.result.error).toMatchObject({ type: 'KeyError', line: 2 });
    expect((s.result.error as { traceback: string[] }).traceback.some((l) => l.includes('<cell-'))).toBe(true);
  });

  it('the output cap applies to what is streamed', async () => {
    await expectStreamedCapLikePlain('/v1/sessions/code/run_code', { code: "print('x' * 100_000)\nprint('tail-end')" });
  });

  it('errors found before any output are ordinary JSON errors', async () => {
    await expectJsonErrorWhenStreamed('/v1/sessions/nobody/run_code', { code: '1' }, 404, 'SESSION_NOT_FOUND');
    await expectJsonErrorWhenStreamed('/v1/sessions/code/run_code', { code: '1', timeout_seconds: 61 }, 400);
    const unknown = await post(t.app, '/v1/sessions/code/run_code', { code: '1', stream: true }, true);
    expectError(unknown, 400);
  });

  it('Accept with several types (and parameters) still selects the stream; without it the answer is JSON', async () => {
    const res = await t.app.inject({
      method: 'POST', url: '/v1/sessions/code/run_code', payload: { code: '7' },
      headers: { accept: 'application/json;q=0.5, application/x-ndjson; charset=utf-8' },
    });
    expect(parseStream(res).result.result).toBe('7');
    const json = await t.app.inject({ method: 'POST', url: '/v1/sessions/code/run_code', payload: { code: '7' }, headers: { accept: 'application/json' } });
    expect(json.headers['content-type']).toMatch(/^application\/json/);
    expect(json.json<{ result: string }>().result).toBe('7');
  });
});
