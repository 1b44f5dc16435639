// An HTTP/1.1 client on a raw socket, for tests of response framing: it pipelines requests on one
// keep-alive connection and splits what comes back by Content-Length alone, exactly as a
// keep-alive client or proxy would, so a body longer or shorter than announced shows up as a
// wrong next response, garbage, or a hang, instead of being smoothed over by a real client.
import net from 'node:net';

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

export interface RawExchange {
  /** Complete responses, in order. */
  responses: RawResponse[];
  /** The headers of a response whose body had not fully arrived when the connection closed. */
  incomplete: { status: number; contentLength: number; received: number } | null;
  /** The connection was closed (by the server) before every request was answered. */
  closedEarly: boolean;
  /** Nothing more arrived for timeoutMs before every request was answered. */
  timedOut: boolean;
  /** Bytes that are not an HTTP/1.1 response head with a Content-Length where one should start. */
  garbage: string | null;
}

export function getRequest(path: string): string {
  return `GET ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: keep-alive\r\n\r\n`;
}

export interface ExchangeOptions {
  /** Gives up when nothing arrives for this long; 3 s by default. */
  timeoutMs?: number;
  /** Called once with the socket when the first bytes arrive (e.g. to pause it). */
  onFirstBytes?: (socket: net.Socket) => void;
}

/** Writes all requests at once on a new connection to 127.0.0.1:port and reads the answers. */
export function pipelined(port: number, requests: string[], opts: ExchangeOptions = {}): Promise<RawExchange> {
  const timeoutMs = opts.timeoutMs ?? 3000;
  return new Promise((resolve) => {
    const result: RawExchange = { responses: [], incomplete: null, closedEarly: false, timedOut: false, garbage: null };
    let buffered = Buffer.alloc(0);
    let head: { status: number; headers: Record<string, string>; contentLength: number } | null = null;
    let settled = false;
    let sawBytes = false;
    const socket = net.connect({ host: '127.0.0.1', port });
    const finish = () => {
      if (settled) return;
      settled = true;
      socket.destroy();
      resolve(result);
    };
    socket.setTimeout(timeoutMs, () => {
      result.timedOut = true;
      finish();
    });
    socket.on('connect', () => socket.write(requests.join('')));
    socket.on('data', (chunk: Buffer) => {
      if (!sawBytes) {
        sawBytes = true;
        opts.onFirstBytes?.(socket);
      }
      buffered = Buffer.concat([buffered, chunk]);
      for (;;) {
        if (head === null) {
          const end = buffered.indexOf('\r\n\r\n');
          if (end < 0) {
            if (buffered.length > 16_384) {
              result.garbage = buffered.subarray(0, 200).toString('latin1');
              finish();
            }
            return;
          }
          const lines = buffered.subarray(0, end).toString('latin1').split('\r\n');
          const status = /^HTTP\/1\.1 (\d{3}) /.exec(lines[0] ?? '');
          const headers: Record<string, string> = {};
          for (const line of lines.slice(1)) {
            const colon = line.indexOf(':');
            if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
          }
          const length = headers['content-length'];
          if (!status || length === undefined || !/^\d+$/.test(length)) {
            result.garbage = buffered.subarray(0, 200).toString('latin1');
            finish();
            return;
          }
          head = { status: Number(status[1]), headers, contentLength: Number(length) };
          buffered = buffered.subarray(end + 4);
        }
        if (buffered.length < head.contentLength) return;
        result.responses.push({ status: head.status, headers: head.headers, body: buffered.subarray(0, head.contentLength) });
        buffered = buffered.subarray(head.contentLength);
        head = null;
        if (result.responses.length === requests.length) {
          if (buffered.length > 0) result.garbage = buffered.subarray(0, 200).toString('latin1');
          finish();
          return;
        }
      }
    });
    socket.on('error', () => undefined); // a reset is a close; 'close' follows
    socket.on('close', () => {
      if (settled) return;
      result.closedEarly = true;
      if (head !== null) result.incomplete = { status: head.status, contentLength: head.contentLength, received: buffered.length };
      else if (buffered.length > 0) result.garbage = buffered.subarray(0, 200).toString('latin1');
      finish();
    });
  });
}
