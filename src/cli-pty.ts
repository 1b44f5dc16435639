// `bubble-sandbox run`: one program in a sandbox, attached to this process's terminal. With a
// terminal on stdin it gets a pseudo-terminal of its own (the host terminal in raw mode, so Ctrl-C
// and friends are bytes the program's terminal turns into signals; window resizes follow); with
// pipes it gets the three streams as they are. The exit status is the program's. Set-up (the
// environment, the workdir and its owner, the network) is the one the other run commands use.
// --forward-port SANDBOX:HOST listens on 127.0.0.1:HOST for as long as the program runs and pipes
// each connection to SANDBOX inside the run's own network namespace.
import net from 'node:net';
import os from 'node:os';
import fs from 'node:fs';
import type { Readable } from 'node:stream';
import type { Config } from './config.js';
import { openRunOverlay } from './cli-rootfs.js';
import { assertTempWorkspaceEnterable, environmentOf, networkOf, openRunNetwork, UsageError, workspaceOf, type RunNetwork } from './cli-run.js';
import { startProcessSandbox, PTY_MAX_SIZE, PTY_MIN_SIZE, type ProcessSandbox, type ProcessSignal } from './sandbox/process-sandbox.js';
import { createSandbox, IS_ROOT, type Sandbox } from './sandbox/sandbox.js';
import type { SessionNetwork } from './sandbox/network/session-network.js';

export interface InteractiveRunOptions {
  environment: string;
  workdir?: string | undefined;
  network?: string | undefined;
  allow?: string[] | undefined;
  deny?: string[] | undefined;
  forwardPort?: string[] | undefined;
  timeout?: string | undefined;
  /** A writable overlay over the rootfs environment for this run (gone afterwards). */
  rootfsOverlay?: boolean | undefined;
}

export interface PortForward {
  spec: string;
  sandboxPort: number;
  hostPort: number;
}

/** How long a program may take to end after a stop signal reached the CLI before it is killed. */
export const STOP_GRACE_MS = 5000;
/** RLIMIT_CPU backstop of a run without --timeout (CPU seconds, not wall clock). */
const NO_TIMEOUT_CPU_SECONDS = 7 * 24 * 3600;

function port(raw: string): number | null {
  if (!/^\d{1,5}$/.test(raw)) return null;
  const n = Number(raw);
  return n >= 1 && n <= 65535 ? n : null;
}

/** SANDBOX:HOST, both ports 1-65535; anything else is a one-line usage error. */
export function parseForwardPort(spec: string): PortForward {
  const parts = spec.split(':');
  const sandboxPort = parts.length === 2 ? port(parts[0] ?? '') : null;
  const hostPort = parts.length === 2 ? port(parts[1] ?? '') : null;
  if (sandboxPort === null || hostPort === null) throw new UsageError(`--forward-port must be SANDBOX:HOST with ports 1-65535: got '${spec}'`);
  return { spec, sandboxPort, hostPort };
}

export function parseForwardPorts(specs: readonly string[]): PortForward[] {
  const forwards = specs.map(parseForwardPort);
  const seen = new Set<number>();
  for (const f of forwards) {
    if (seen.has(f.hostPort)) throw new UsageError(`--forward-port: host port ${f.hostPort} is named twice`);
    seen.add(f.hostPort);
  }
  return forwards;
}

function timeoutOf(raw: string | undefined): number | null {
  if (raw === undefined) return null;
  const seconds = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(seconds) || seconds <= 0 || seconds > NO_TIMEOUT_CPU_SECONDS) {
    throw new UsageError(`--timeout must be a number of seconds in (0, ${NO_TIMEOUT_CPU_SECONDS}]`);
  }
  return seconds;
}

/** 128+N for a signal N, as a shell reports it. */
export function statusOf(r: { code: number | null; signal: string | null }): number {
  if (r.code !== null) return r.code;
  const n = r.signal ? os.constants.signals[r.signal as NodeJS.Signals] : undefined;
  return n !== undefined ? 128 + n : 1;
}

interface Forwarder {
  close(): Promise<void>;
}

/** Listens on 127.0.0.1:HOST; each connection is piped to connectPort(SANDBOX) (refused: the client's connection is closed). */
async function forwardPort(network: SessionNetwork, f: PortForward): Promise<Forwarder> {
  const connectPort = network.connectPort?.bind(network);
  if (!connectPort) throw new Error('this network cannot connect to ports inside the sandbox');
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
  };
  // allowHalfOpen: a client that ends its side still gets the whole answer.
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    track(client);
    connectPort(f.sandboxPort).then(
      (upstream) => {
        track(upstream);
        if (client.destroyed) return void upstream.destroy();
        client.once('close', () => upstream.destroy());
        upstream.once('close', () => client.destroy());
        // connectPort hands the socket back paused (early bytes unshifted): pipe() resumes both.
        upstream.pipe(client);
        client.pipe(upstream);
      },
      () => client.destroy(),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: f.hostPort, exclusive: true }, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch((err: NodeJS.ErrnoException) => {
    throw new UsageError(`--forward-port ${f.spec}: cannot listen on 127.0.0.1:${f.hostPort} (${err.code ?? err.message})`);
  });
  let closing: Promise<void> | null = null;
  return {
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      })),
  };
}

/** The terminal size to start with: the host terminal's, or 80x24 when stdout is not one. */
function terminalSize(): { cols: number; rows: number } {
  const clamp = (n: number | undefined, fallback: number) => (n !== undefined && Number.isInteger(n) && n >= PTY_MIN_SIZE ? Math.min(n, PTY_MAX_SIZE) : fallback);
  const out = process.stdout;
  return out.isTTY ? { cols: clamp(out.columns, 80), rows: clamp(out.rows, 24) } : { cols: 80, rows: 24 };
}

/**
 * Raw mode on the host terminal, restored by the returned function and, whatever happens, when
 * the process exits (an uncaught error included; the stop signals are handled and end in the
 * normal path; nothing restores after a SIGKILL, `stty sane` does).
 */
function enterRawMode(): () => void {
  const stdin = process.stdin;
  let raw = false;
  const restore = () => {
    if (!raw) return;
    raw = false;
    try {
      stdin.setRawMode(false);
    } catch {
      // the terminal is gone
    }
  };
  process.once('exit', restore);
  stdin.setRawMode(true);
  raw = true;
  return () => {
    restore();
    process.off('exit', restore);
  };
}

/** Resolves once a stream has ended or closed, or after `ms` (a stuck pipe never holds the exit). */
function drained(stream: Readable | null, ms: number): Promise<void> {
  if (stream === null || stream.readableEnded || stream.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      resolve();
    }
    stream.once('end', done);
    stream.once('close', done);
    stream.once('error', done);
  });
}

export async function runInteractive(config: Config, options: InteractiveRunOptions, argv: string[]): Promise<number> {
  if (argv.length === 0) throw new UsageError('run needs a program: bubble-sandbox run [options] [--] <program> [args...]');
  const forwards = parseForwardPorts(options.forwardPort ?? []);
  const timeoutSeconds = timeoutOf(options.timeout);
  const networkChoice = networkOf(options);
  if (forwards.length > 0 && !IS_ROOT) throw new UsageError('--forward-port needs root (a network namespace of its own)');
  const baseEnvironment = await environmentOf(config, options.environment);
  // The program runs below process-relay.py, which needs a python3 in the root filesystem.
  if (!baseEnvironment.python) throw new UsageError(`run needs python3 in the environment (its process relay is Python); '${baseEnvironment.name}' has none: use exec-command or execute`);
  if (options.rootfsOverlay === true && baseEnvironment.kind !== 'rootfs') throw new UsageError(`--rootfs-overlay needs an environment of kind rootfs; '${baseEnvironment.name}' is a venv`);
  const ws = workspaceOf(config, options.workdir);
  let overlay: Awaited<ReturnType<typeof openRunOverlay>> | null = null;
  try {
    if (options.rootfsOverlay === true) overlay = await openRunOverlay(baseEnvironment, ws.identity);
  } catch (err) {
    if (ws.tempParent) fs.rmSync(ws.tempParent, { recursive: true, force: true });
    throw err;
  }
  const environment = overlay?.environment ?? baseEnvironment;
  const usePty = process.stdin.isTTY === true;

  // Stop signals: forwarded to the program (SIGHUP in a terminal, where an interactive shell
  // ignores SIGTERM), and the program killed if it has not ended STOP_GRACE_MS later (or at a
  // second signal). One that comes during set-up stops the program as soon as it has started.
  let proc: ProcessSandbox | null = null;
  let stopAsked: NodeJS.Signals | null = null;
  let graceTimer: NodeJS.Timeout | null = null;
  const deliver = (sig: NodeJS.Signals) => {
    if (!proc) return;
    const forwarded: ProcessSignal = sig === 'SIGINT' ? 'SIGINT' : usePty ? 'SIGHUP' : sig === 'SIGHUP' ? 'SIGHUP' : 'SIGTERM';
    proc.signal(forwarded);
    const p = proc;
    graceTimer ??= setTimeout(() => p.kill(), STOP_GRACE_MS);
  };
  const onStopSignal = (sig: NodeJS.Signals) => {
    if (stopAsked !== null && proc) return void proc.kill();
    stopAsked = sig;
    deliver(sig);
  };
  const stopSignals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  for (const s of stopSignals) process.on(s, onStopSignal);

  let sandbox: Sandbox | null = null;
  let runNetwork: RunNetwork | null = null;
  const forwarders: Forwarder[] = [];
  let restoreTerminal: (() => void) | null = null;
  let timedOut = false;
  let timer: NodeJS.Timeout | null = null;
  const onResize = () => {
    const { cols, rows } = terminalSize();
    proc?.resize(cols, rows);
  };
  try {
    assertTempWorkspaceEnterable(ws);
    sandbox = await createSandbox(config);
    if (networkChoice.mode !== 'none' || forwards.length > 0) runNetwork = await openRunNetwork(config, networkChoice, ws.identity);
    const network = runNetwork?.network;
    // Listening before the program starts: a port in use stops the run before anything ran.
    if (network) for (const f of forwards) forwarders.push(await forwardPort(network, f));

    proc = await startProcessSandbox(sandbox.runner.spawnDeps, {
      argv,
      pty: usePty ? terminalSize() : null,
      environment,
      workspaceDir: ws.workdir,
      volumes: [],
      env: network ? { ...network.env } : {},
      limits: sandbox.defaultLimits,
      identity: ws.identity,
      cpuSeconds: timeoutSeconds === null ? NO_TIMEOUT_CPU_SECONDS : timeoutSeconds + 5,
      cgroupName: sandbox.runner.nextCgroupName('run'),
      netnsPath: network?.netnsPath,
    });
    const running = proc;
    if (stopAsked !== null) deliver(stopAsked);
    if (timeoutSeconds !== null) {
      timer = setTimeout(() => {
        timedOut = true;
        running.kill();
      }, timeoutSeconds * 1000);
    }

    running.stdin.on('error', () => undefined); // the program may end without reading its input
    running.stdout.pipe(process.stdout, { end: false });
    running.stderr?.pipe(process.stderr, { end: false });
    if (usePty) {
      restoreTerminal = enterRawMode();
      if (process.stdout.isTTY) process.stdout.on('resize', onResize);
      onResize(); // the window may have changed while the sandbox started
    }
    // In a terminal, stdin never ends (Ctrl-D is a byte for the program's terminal); from a pipe,
    // its end is the program's end of input.
    process.stdin.pipe(running.stdin, { end: !usePty });

    const result = await running.exited;
    await Promise.all([drained(running.stdout, 2000), drained(running.stderr, 2000)]);
    if (timedOut) return 124;
    return statusOf(result);
  } finally {
    if (timer) clearTimeout(timer);
    if (graceTimer) clearTimeout(graceTimer);
    process.stdout.off('resize', onResize);
    process.stdin.unpipe();
    process.stdin.pause();
    restoreTerminal?.();
    for (const s of stopSignals) process.off(s, onStopSignal);
    if (proc) {
      proc.kill();
      await proc.exited.catch(() => undefined);
      await proc.dispose().catch(() => undefined);
    }
    await Promise.all(forwarders.map((f) => f.close()));
    await runNetwork?.close();
    await sandbox?.close();
    await overlay?.close();
    if (ws.tempParent) fs.rmSync(ws.tempParent, { recursive: true, force: true });
    if (timedOut) process.stderr.write(`bubble-sandbox: timed out after ${timeoutSeconds} s\n`);
  }
}
