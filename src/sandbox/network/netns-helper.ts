// Host side of the per-session helper (netns-helper.py beside this file): starts it inside the
// session's network namespace, waits until it listens, and speaks its ports.sock protocol. The
// helper exists because Node cannot setns: it is the service's only way into the namespace
// (ports/{port}), and in allowlist mode the sandbox's only way out (127.0.0.1:3128 → the egress
// proxy). In allowlist mode it has an IPC channel (Node's own, fd 3): each sandbox connection
// arrives here as a socket handed over it, and the proxy hands the upstream socket back once it
// has decided, for the helper to relay (egress_relay.py). Node can pass descriptors only over
// such a channel, hence this rather than a socket path.
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import net from 'node:net';
import { constants as osConstants } from 'node:os';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { resolveCommand } from '../spawn.js';
import type { HandOver } from './egress-proxy.js';

const HELPER_PATH = fileURLToPath(new URL('./netns-helper.py', import.meta.url));
const READY_TIMEOUT_MS = 10_000;
const REPLY_TIMEOUT_MS = 5_000;
const MAX_REPLY_BYTES = 64;
const MAX_STDERR_CHARS = 2_000;

/** The helper could not connect to the port inside the namespace (errno 111 ECONNREFUSED: nothing listens). */
export class PortConnectError extends Error {
  override name = 'PortConnectError';
  readonly code: string;
  constructor(readonly port: number, readonly errno: number) {
    const code = Object.entries(osConstants.errno).find(([, n]) => n === errno)?.[0] ?? `errno ${errno}`;
    super(`cannot connect to port ${port} in the session network: ${code}`);
    this.code = code;
  }
}

export interface NetnsHelper {
  readonly pid: number;
  /** Why the helper stopped on its own (the session's network is then unusable), or null while it runs. */
  readonly failure: string | null;
  connectPort(port: number): Promise<net.Socket>;
  /** SIGKILL it and wait until it is gone (idempotent). */
  kill(): Promise<void>;
}

export interface NetnsHelperOptions {
  netnsPath: string;
  identity: { uid: number; gid: number };
  portsSocket: string;
  /** allowlist: 127.0.0.1:<port> in the namespace leads to `accept` (the session's egress proxy). */
  egress: {
    port: number;
    /** A spliced connection with no byte either way for this long is closed by the helper. */
    idleSeconds: number;
    /** Connections the helper holds at once (bridged and spliced); one more is answered 503. */
    maxConnections: number;
    accept(socket: net.Socket, handOver: HandOver): void;
  } | null;
  logger: Pick<Logger, 'warn'>;
}

export async function startNetnsHelper(opts: NetnsHelperOptions): Promise<NetnsHelper> {
  const args = [
    `--net=${opts.netnsPath}`, '--', '/usr/bin/python3', '-I', '-B', HELPER_PATH,
    String(opts.identity.uid), String(opts.identity.gid), String(process.pid), opts.portsSocket,
    ...(opts.egress ? [String(opts.egress.port), String(opts.egress.idleSeconds), String(opts.egress.maxConnections)] : []),
  ];
  // nsenter execs python (no fork for --net), so the child we hold is the helper itself: its
  // parent-death signal fires when this process dies. The IPC channel is inherited as fd 3.
  const child = spawn(resolveCommand('nsenter'), args, {
    stdio: opts.egress ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'], env: {}, serialization: 'json',
  }) as ChildProcessByStdio<null, Readable, Readable>;
  const egress = opts.egress;
  if (egress !== null) {
    // Failed sends report to their callback; this keeps a closed channel from being an unhandled 'error'.
    child.on('error', (err) => opts.logger.warn({ err }, 'session network helper channel error'));
    child.on('message', (msg: unknown, handle: unknown) => {
      const id = (msg as { egress?: unknown } | null)?.egress;
      if (!(handle instanceof net.Socket)) return;
      if (typeof id !== 'number' || !Number.isSafeInteger(id)) return void handle.destroy();
      egress.accept(handle, (upstream, mode, sent) => {
        // keepOpen: the proxy closes its descriptor itself, after its last write to it.
        if (!child.connected) return sent(new Error('the network helper is gone'));
        child.send({ splice: id, mode }, upstream, { keepOpen: true }, (err) => sent(err ?? null));
      });
    });
  }
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => {
    if (stderr.length < MAX_STDERR_CHARS) stderr += c.toString('utf8');
  });
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  let failure: string | null = null;
  let killed = false;
  const exitReason = (code: number | null, signal: NodeJS.Signals | null) =>
    `the network helper exited (${signal ?? `exit ${code}`}): ${stderr.trim().slice(0, 500) || 'no message'}`;

  try {
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`the network helper was not ready within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
      const onData = (c: Buffer) => {
        out += c.toString('utf8');
        if (!out.includes('\n')) return;
        clearTimeout(timer);
        child.stdout.off('data', onData);
        if (out.startsWith('ready\n')) resolve();
        else reject(new Error(`the network helper said ${JSON.stringify(out.slice(0, 100))}`));
      };
      child.stdout.on('data', onData);
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      // 'close' rather than 'exit': stderr holds the reason only once the pipes are drained.
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(exitReason(code, signal)));
      });
    });
  } catch (err) {
    child.kill('SIGKILL');
    await closed;
    throw err;
  }
  if (child.pid === undefined) throw new Error('the network helper has no pid');
  child.stdout.resume();
  child.once('close', (code, signal) => {
    if (killed) return;
    failure = exitReason(code, signal);
    opts.logger.warn({ helper_pid: child.pid, reason: failure }, 'session network helper died');
  });

  return {
    pid: child.pid,
    get failure() {
      return failure;
    },
    connectPort: (port) => connectPort(opts.portsSocket, port),
    kill: async () => {
      killed = true;
      child.kill('SIGKILL');
      await closed;
    },
  };
}

/**
 * A connected socket to 127.0.0.1:<port> inside the namespace, through the helper: `PORT n\n`,
 * then `OK\n` (bytes flow both ways from here) or `ERR <errno>\n` (PortConnectError).
 */
export async function connectPort(portsSocket: string, port: number): Promise<net.Socket> {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`not a TCP port: ${port}`);
  const sock = net.createConnection(portsSocket);
  try {
    await new Promise<void>((resolve, reject) => {
      let reply = Buffer.alloc(0);
      const timer = setTimeout(() => done(new Error('the network helper did not answer in time')), REPLY_TIMEOUT_MS);
      const done = (err: Error | null) => {
        clearTimeout(timer);
        sock.off('data', onData);
        sock.off('error', onError);
        sock.off('close', onClose);
        if (err) reject(err);
        else resolve();
      };
      const onError = (err: Error) => done(err);
      const onClose = () => done(new Error('the network helper closed the connection'));
      const onData = (c: Buffer) => {
        reply = Buffer.concat([reply, c]);
        const nl = reply.indexOf(0x0a);
        if (nl < 0) {
          if (reply.length > MAX_REPLY_BYTES) done(new Error('the network helper sent a malformed reply'));
          return;
        }
        const line = reply.subarray(0, nl).toString('latin1');
        // Bytes the server sent right after OK belong to the caller.
        sock.pause();
        const rest = reply.subarray(nl + 1);
        if (rest.length > 0) sock.unshift(rest);
        if (line === 'OK') done(null);
        else {
          const m = /^ERR (\d+)$/.exec(line);
          done(m ? new PortConnectError(port, Number(m[1])) : new Error('the network helper sent a malformed reply'));
        }
      };
      sock.on('data', onData);
      sock.on('error', onError);
      sock.on('close', onClose);
      sock.once('connect', () => sock.write(`PORT ${port}\n`));
    });
  } catch (err) {
    sock.destroy();
    throw err;
  }
  return sock;
}
