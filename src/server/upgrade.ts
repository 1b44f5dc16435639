// Who gets an HTTP Upgrade. @fastify/websocket takes every 'upgrade' of the server it listens on,
// and for a route that is not a WebSocket route it completes the handshake itself and closes; a
// ports/ upgrade must instead reach the program in the sandbox untouched (its own handshake,
// subprotocols, extensions). So the plugin listens on a private emitter, and the real listener
// here hands ports/ upgrades to the raw proxy and everything else to the plugin.
import { EventEmitter } from 'node:events';
import { STATUS_CODES, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import websocket from '@fastify/websocket';
import type { FastifyInstance } from 'fastify';
import type { WebSocket } from 'ws';
import { errorBody } from './error-body.js';
import type { AppError } from '../errors.js';

/** A raw upgrade handler: returns false when the URL is not its own. */
export type RawUpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer) => boolean;

/** Asked first, asynchronously (the cluster forwarder: is it another replica's session?): true when it took the socket. */
export type ForwardUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => Promise<boolean>;

export async function registerUpgrades(app: FastifyInstance, opts: { maxFrameBytes: number; raw: RawUpgradeHandler[]; forward?: ForwardUpgrade }): Promise<void> {
  const plugin = new EventEmitter();
  await app.register(websocket, {
    options: { server: plugin as never, maxPayload: opts.maxFrameBytes },
    // A frame over maxPayload, bad UTF-8, a protocol error: ws has already sent its close code
    // (1009, 1007, 1002); errors of our own handlers close with 1011.
    errorHandler: (err, socket: WebSocket, request) => {
      request.log.info({ err: { message: err.message, code: (err as { code?: unknown }).code } }, 'websocket error');
      if (socket.readyState === socket.OPEN) socket.close(1011, 'internal error');
    },
  });
  // Raw pass-throughs are no requests Fastify knows of: without this, one open tunnel would hold
  // the server's close() for as long as the client keeps it.
  const tunnels = new Set<Duplex>();
  const dispatch = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    for (const handler of opts.raw) {
      if (handler(req, socket, head)) {
        tunnels.add(socket);
        socket.once('close', () => tunnels.delete(socket));
        return;
      }
    }
    plugin.emit('upgrade', req, socket, head);
  };
  const { forward } = opts;
  const onUpgrade = forward === undefined ? dispatch : (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    void forward(req, socket, head).then((taken) => {
      if (!taken) {
        dispatch(req, socket, head);
        return;
      }
      tunnels.add(socket);
      socket.once('close', () => tunnels.delete(socket));
    }, () => socket.destroy());
  };
  app.server.on('upgrade', onUpgrade);
  app.addHook('preClose', (done) => {
    app.server.off('upgrade', onUpgrade);
    for (const socket of tunnels) socket.destroy();
    done();
  });
}

/** Answer a raw upgrade request with an error in the service's JSON shape, then close. */
export function rawErrorResponse(socket: Duplex, err: AppError): void {
  const body = JSON.stringify(errorBody(err.statusCode, err.code, err.message));
  const headers = Object.entries({ ...err.headers, 'content-type': 'application/json; charset=utf-8', 'content-length': String(Buffer.byteLength(body)), connection: 'close' })
    .map(([k, v]) => `${k}: ${v}\r\n`).join('');
  if (socket.writable) socket.end(`HTTP/1.1 ${err.statusCode} ${STATUS_CODES[err.statusCode] ?? 'Error'}\r\n${headers}\r\n${body}`);
  else socket.destroy();
}
