// The response serializer: zod's parse for schemas that read the same both ways (the run_code and
// execute results among them), the library's encode for any other; either way the schema's
// checks and key stripping hold, and the JSON is the one the library's serializer writes.
import { serializerCompiler as libraryCompiler, isResponseSerializationError } from 'fastify-type-provider-zod';
import { describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { readsSameBothWays, responseSerializerCompiler } from '../../src/server/response-serializer.js';
import { ErrorSchema, ExecutionResultSchema, RunCodeResultSchema, SessionInfoSchema } from '../../src/server/schemas.js';

// The library's compiler, counted: the parse path must not hand a schema to it.
vi.mock(import('fastify-type-provider-zod'), async (original) => {
  const lib = await original();
  return { ...lib, serializerCompiler: vi.fn(lib.serializerCompiler) };
});

const compile = (schema: unknown) => responseSerializerCompiler({ schema, method: 'POST', url: '/x', httpStatus: '200' } as never);
const library = (schema: unknown) => libraryCompiler({ schema, method: 'POST', url: '/x', httpStatus: '200' } as never);

const runCodeResult = {
  status: 'error', exit_code: 1, signal: null, stdout: 'a\n', stderr: 'Traceback...\n', truncated: false, max_output_chars: 100000,
  timed_out: false, timeout_seconds: 30, duration_ms: 3, files: { created: ['f.png'], modified: [], deleted: ['old.txt'] }, files_truncated: false,
  resources: { memory_peak_bytes: 8482816, cpu_ms: 1 },
  error: { type: 'ZeroDivisionError', message: 'division by zero', line: 1, hint: null, traceback: ['Traceback (most recent call last):', 'ZeroDivisionError: division by zero'] },
  result: null, kernel_restarted: true,
  outputs: [{ type: 'display_data', data: { 'image/png': 'iVBOR', 'text/plain': '<Figure>' } }, { type: 'execute_result', data: { 'text/plain': '2' } }],
  outputs_truncated: false,
  // Internal fields that must never reach a client.
  internal_pid: 1234, secret: 'marker-token',
};

describe('response serializer', () => {
  it('takes the parse path for the execution results, sessions and errors', () => {
    vi.mocked(libraryCompiler).mockClear();
    for (const schema of [RunCodeResultSchema, ExecutionResultSchema, SessionInfoSchema, ErrorSchema]) {
      expect(readsSameBothWays(schema)).toBe(true);
      compile(schema);
    }
    expect(libraryCompiler).not.toHaveBeenCalled();
  });

  it('writes what the library writes for a run_code result, unknown keys stripped', () => {
    const text = compile(RunCodeResultSchema)(runCodeResult);
    expect(text).toBe(library(RunCodeResultSchema)(runCodeResult));
    const parsed = JSON.parse(text) as Record<string, unknown>;
    expect(parsed).not.toHaveProperty('internal_pid');
    expect(parsed).not.toHaveProperty('secret');
    expect(parsed.outputs).toEqual(runCodeResult.outputs);
    expect(parsed.files).toEqual(runCodeResult.files);
  });

  it('refuses a result that breaks the schema, as the library does', () => {
    const bad = { ...runCodeResult, status: 'exploded' };
    let caught: unknown;
    try {
      compile(RunCodeResultSchema)(bad);
    } catch (err) {
      caught = err;
    }
    expect(isResponseSerializationError(caught)).toBe(true);
  });

  it('keeps the library\'s encode for a schema with a codec, a transform or a default', () => {
    const isoDate = z.codec(z.iso.datetime(), z.date(), { decode: (s) => new Date(s), encode: (d) => d.toISOString() });
    const withCodec = z.object({ when: isoDate });
    expect(readsSameBothWays(withCodec)).toBe(false);
    expect(readsSameBothWays(z.object({ n: z.number().default(1) }))).toBe(false);
    expect(readsSameBothWays(z.object({ inner: z.array(z.string().transform((s) => s.length)) }))).toBe(false);
    // Encoded to its wire form: parse would refuse the Date (it expects the ISO string).
    const when = new Date('2026-12-03T12:00:00.000Z');
    vi.mocked(libraryCompiler).mockClear();
    expect(compile(withCodec)({ when })).toBe('{"when":"2026-12-03T12:00:00.000Z"}');
    expect(libraryCompiler).toHaveBeenCalledTimes(1);
  });
});
