// Small helpers for route tests through app.inject: typed JSON, the error shape, and a clock.
import { STATUS_CODES } from 'node:http';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { expect } from 'vitest';
import { multipartBody } from './app.js';

export interface ErrorBody {
  statusCode: number;
  code: string;
  error: string;
  message: string;
}

export interface SessionInfoBody {
  session_id: string;
  environment: string;
  created_at: string;
  last_activity: string;
  expires_at: string;
  volumes: Record<string, 'ro' | 'rw'>;
}

export interface ExecutionResultBody {
  status: 'ok' | 'error' | 'timeout' | 'oom' | 'killed';
  exit_code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  truncated: boolean;
  max_output_chars: number;
  timed_out: boolean;
  timeout_seconds: number;
  duration_ms: number;
  files: { created: string[]; modified: string[]; deleted: string[] };
  resources: { memory_peak_bytes: number | null; cpu_ms: number | null };
  error: { type: string; message: string; line: number | null; hint: string | null } | null;
}

export interface OneShotResultBody extends Omit<ExecutionResultBody, 'files'> {
  files: ExecutionResultBody['files'] & {
    outputs: { path: string; size: number; content_base64: string }[];
    outputs_omitted: string[];
  };
}

export interface FileListBody {
  files: { path: string; size: number; modified_at: string }[];
}

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
