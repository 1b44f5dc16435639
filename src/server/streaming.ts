// NDJSON streaming of an execution: {"type":"stdout"|"stderr","data"} lines as output arrives,
// for run_code also {"type":"display","output":{"type":"display_data"|"execute_result","data"}}
// lines for rich outputs in their place among the text, then exactly one {"type":"result", ...}
// whose stdout/stderr are empty (its `outputs` lists the displays again). The response starts
// with the first event, so errors found before any output (unknown session, busy, bad input)
// are still ordinary JSON errors with their status codes.
import { PassThrough } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { errorBody } from './error-body.js';

export const NDJSON = 'application/x-ndjson';

export function wantsStream(request: FastifyRequest): boolean {
  return (request.headers.accept ?? '').split(',').some((t) => t.trim().split(';')[0] === NDJSON);
}

type OnOutput = (stream: 'stdout' | 'stderr', text: string) => void;
type OnDisplay = (output: unknown) => void;

export async function streamExecution<R extends { stdout: string; stderr: string }>(
  reply: FastifyReply,
  execute: (onOutput: OnOutput, onDisplay: OnDisplay) => Promise<R>,
): Promise<FastifyReply> {
  const body = new PassThrough();
  let started = false;
  const start = () => {
    if (started) return;
    started = true;
    void reply.code(200).header('content-type', NDJSON).header('cache-control', 'no-store').header('x-accel-buffering', 'no').send(body);
  };
  const line = (obj: unknown) => {
    start();
    body.write(`${JSON.stringify(obj)}\n`);
  };
  try {
    const result = await execute((stream, data) => line({ type: stream, data }), (output) => line({ type: 'display', output }));
    line({ type: 'result', ...result, stdout: '', stderr: '' });
    body.end();
  } catch (err) {
    if (!started) throw err;
    // Headers are gone: report the failure in-band and end the stream.
    reply.log.error({ err }, 'streamed execution failed');
    body.end(`${JSON.stringify({ type: 'error', ...errorBody(500, 'INTERNAL_ERROR', 'Internal server error') })}\n`);
  }
  return reply;
}
