// The Connect protocol (connectrpc.com/docs/protocol) as the E2B SDKs speak it to envd: JSON
// codec, no compression, unary calls and server streams; never client streams (the SDKs' fetch
// transport cannot send them). Unary: `application/json` in and out, an error is a non-200 status
// with {code, message}. Server stream: the request and every response message are enveloped
// (1 flag byte, 4-byte big-endian length, JSON); the response is always 200 and ends with a frame
// of flag 0x02 holding {} or {"error": {code, message}}, errors found before the first message
// included (a non-200 would be read as a transport failure with the wrong code).
// Written here rather than taken from @connectrpc/connect-node: that needs the services' generated
// protobuf descriptors and its own router, while the two services are a handful of JSON calls.
import { PassThrough } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { describeError, invalidArgument } from './e2b-errors.js';

export const CONNECT_STREAM_JSON = 'application/connect+json';
const END_STREAM = 0x02;
const COMPRESSED = 0x01;

function frame(flags: number, payload: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(payload));
  const head = Buffer.alloc(5);
  head.writeUInt8(flags, 0);
  head.writeUInt32BE(json.length, 1);
  return Buffer.concat([head, json]);
}

/** The one message of a server-stream request. */
export function parseEnvelope(body: Buffer): unknown {
  if (body.length < 5) throw invalidArgument('the request is not an enveloped Connect message');
  const flags = body.readUInt8(0);
  const length = body.readUInt32BE(1);
  if ((flags & COMPRESSED) !== 0) throw invalidArgument('compressed Connect messages are not supported');
  if (body.length !== 5 + length) throw invalidArgument('the request holds more or less than one Connect message');
  try {
    return JSON.parse(body.subarray(5).toString('utf8')) as unknown;
  } catch {
    throw invalidArgument('the request message is not JSON');
  }
}

/** Registers the stream request parser and the Connect error shapes in an encapsulated context. */
export function useConnect(app: FastifyInstance): void {
  app.addContentTypeParser(CONNECT_STREAM_JSON, { parseAs: 'buffer' }, (_request, body, done) => {
    try {
      done(null, parseEnvelope(body as Buffer));
    } catch (err) {
      done(err as Error, undefined);
    }
  });
  app.setErrorHandler((err, request, reply) => {
    const e = describeError(err);
    if (e.internal) request.log.error({ err }, 'E2B envd request failed');
    const error = { code: e.connectCode, message: e.message };
    if (isStreamRequest(request)) {
      void reply.code(200).header('content-type', CONNECT_STREAM_JSON).send(frame(END_STREAM, { error }));
      return;
    }
    void reply.code(e.status).header('content-type', 'application/json').send(error);
  });
}

function isStreamRequest(request: FastifyRequest): boolean {
  return (request.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() === CONNECT_STREAM_JSON;
}

export interface ConnectStream {
  /** A pending promise when the client is behind (hold further messages until it settles). */
  send(message: unknown): Promise<void> | undefined;
  /** Ends the stream, with an error when given; later calls do nothing. */
  end(error?: unknown): void;
  readonly ended: boolean;
}

/**
 * Starts a server-stream response; the reply is sent at once (the SDK waits for the first
 * message). `onGone` runs once when the client's connection closes before the end (also when it
 * was gone already). Messages are only queued while the client keeps up: send() answers a
 * promise to wait on when it does not, so a slow or vanished reader never grows memory.
 */
export function openStream(reply: FastifyReply, onGone: () => void): ConnectStream {
  const body = new PassThrough();
  void reply.code(200).header('content-type', CONNECT_STREAM_JSON).header('cache-control', 'no-store').header('x-accel-buffering', 'no').send(body);
  let ended = false;
  let gone = false;
  const leave = () => {
    if (gone || ended) return;
    gone = true;
    ended = true;
    body.destroy();
    onGone();
  };
  reply.raw.once('close', leave);
  if (reply.raw.destroyed || reply.request.raw.socket.destroyed) queueMicrotask(leave);
  return {
    send(message) {
      if (ended) return undefined;
      if (body.write(frame(0, message))) return undefined;
      return new Promise<void>((resolve) => {
        body.once('drain', resolve);
        body.once('close', resolve);
      });
    },
    end(error) {
      if (ended) return;
      ended = true;
      if (error === undefined) {
        body.end(frame(END_STREAM, {}));
        return;
      }
      const e = describeError(error);
      if (e.internal) reply.log.error({ err: error }, 'E2B envd stream failed');
      body.end(frame(END_STREAM, { error: { code: e.connectCode, message: e.message } }));
    },
    get ended() {
      return ended;
    },
  };
}

/** Milliseconds of the Connect-Timeout-Ms header, or null (absent, 0 or not a number). */
export function connectTimeoutMs(request: FastifyRequest): number | null {
  const raw = request.headers['connect-timeout-ms'];
  const ms = typeof raw === 'string' ? Number(raw) : NaN;
  return Number.isFinite(ms) && ms > 0 ? ms : null;
}

/** The keepalive interval the SDK asks for (Keepalive-Ping-Interval, seconds), bounded to 1..60 s. */
export function keepaliveMs(request: FastifyRequest): number {
  const raw = request.headers['keepalive-ping-interval'];
  const s = typeof raw === 'string' ? Number(raw) : NaN;
  return Math.min(60, Math.max(1, Number.isFinite(s) ? s : 50)) * 1000;
}
