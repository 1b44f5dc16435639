// Small helpers for route tests through app.inject: typed JSON, the error shape, and a clock.
import { STATUS_CODES } from 'node:http';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { expect } from 'vitest';
import type { z } from 'zod';
import type {
  ErrorSchema, ExecutionResultSchema, FileListSchema, OneShotResultSchema, RunCodeResultSchema, SessionInfoSchema,
} from '../../src/server/schemas.js';
import { multipartBody } from './app.js';

// Wire types come from the route schemas, so tests and the API cannot drift apart.
export type ErrorBody = z.infer<typeof ErrorSchema>;
export type SessionInfoBody = z.infer<typeof SessionInfoSchema>;
export type ExecutionResultBody = z.infer<typeof ExecutionResultSchema>;
export type OneShotResultBody = z.infer<typeof OneShotResultSchema>;
export type FileListBody = z.infer<typeof FileListSchema>;
export type RunCodeResultBody = z.infer<typeof RunCodeResultSchema>;

// The contract's keys, written out rather than read from the schemas: a key dropped or added there shows up here.
export const EXECUTION_RESULT_KEYS = [
  'duration_ms', 'error', 'exit_code', 'files', 'files_truncated', 'max_output_chars', 'resources', 'signal', 'status', 'stderr', 'stdout',
  'timed_out', 'timeout_seconds', 'truncated',
];
export const RUN_CODE_RESULT_KEYS = [...EXECUTION_RESULT_KEYS, 'kernel_restarted', 'outputs', 'outputs_truncated', 'result'].sort();

export const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

/** Asserts the contract's error shape and returns the body. */
export function expectError(res: LightMyRequestResponse, status: number, code?: string): ErrorBody {
  expect(res.statusCode, res.body).toBe(status);
  const body = res.json<ErrorBody>();
  expect(Object.keys(body).sort()).toEqual(['code', 'error', 'message', 'statusCode']);
  expect(body.statusCode).toBe(status);
  expect(body.error).toBe(STATUS_CODES[status]);
  expect(typeof body.code).toBe('string');
  expect(body.code.length).toBeGreaterThan(0);
  expect(typeof body.message).toBe('string');
  if (code !== undefined) expect(body.code).toBe(code);
  return body;
}

/** A clock the test moves by hand. */
export function fakeClock(start = Date.parse('2030-01-01T00:00:00.000Z')) {
  let t = start;
  return {
    now: () => t,
    advance(seconds: number): void {
      t += seconds * 1000;
    },
    iso: () => new Date(t).toISOString(),
  };
}

export async function createSession(app: FastifyInstance, body: Record<string, unknown> = {}): Promise<SessionInfoBody> {
  const res = await app.inject({ method: 'POST', url: '/v1/sessions', payload: body });
  expect(res.statusCode, res.body).toBe(201);
  return res.json<SessionInfoBody>();
}

export async function upload(
  app: FastifyInstance, id: string, files: { name: string; content: string | Buffer }[], query = '',
): Promise<LightMyRequestResponse> {
  const mp = multipartBody(files);
  return app.inject({ method: 'POST', url: `/v1/sessions/${id}/files${query}`, payload: mp.payload, headers: mp.headers });
}

export async function execute(app: FastifyInstance, id: string, body: Record<string, unknown>): Promise<ExecutionResultBody> {
  const res = await app.inject({ method: 'POST', url: `/v1/sessions/${id}/execute`, payload: body });
  expect(res.statusCode, res.body).toBe(200);
  return res.json<ExecutionResultBody>();
}

export async function listPaths(app: FastifyInstance, id: string): Promise<string[]> {
  const res = await app.inject({ method: 'GET', url: `/v1/sessions/${id}/files` });
  expect(res.statusCode, res.body).toBe(200);
  return res.json<FileListBody>().files.map((f) => f.path);
}
