// A long-running program in a sandbox, with pipes or a pseudo-terminal: the layer under session
// processes (and the command line's `run`). The program runs below process-relay.py, which stays
// inside the sandbox as its parent: bwrap 0.8 forwards no signal (one sent to bwrap kills the
// whole sandbox), so signals and terminal resizes travel as JSON lines on a control pipe and the
// relay delivers them. SIGKILL never needs the relay: it is bwrap's SIGKILL plus the cgroup's.
// The outcome comes from bwrap's exit status (the relay exits with the program's), never from what
// the relay writes back: that pipe's far end runs as the sandbox user, like the program.
import fs from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { SANDBOX_PATHS } from './bwrap-args.js';
import { pythonFor, spawnSandbox, type SandboxSpec, type SpawnDeps } from './spawn.js';

/** process-relay.py beside this module (the build copies it to dist). */
const RELAY_SOURCE = fs.readFileSync(new URL('./process-relay.py', import.meta.url), 'utf8');
const RELAY_NAME = 'process-relay.py';

export const PROCESS_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGKILL', 'SIGHUP', 'SIGUSR1', 'SIGUSR2'] as const;
export type ProcessSignal = (typeof PROCESS_SIGNALS)[number];

/** Terminal sizes callers may ask for (the relay checks the same bounds again). */
export const PTY_MIN_SIZE = 1;
export const PTY_MAX_SIZE = 1000;

export interface ProcessSandboxSpec extends Omit<SandboxSpec, 'command' | 'sandboxFiles' | 'extraPipes'> {
  /** The program (command strings become ['/bin/sh', '-c', cmd]). */
  argv: string[];
  pty: { cols: number; rows: number } | null;
  /** Directory to start in, relative to /workspace (already validated: no `..`, not absolute); absent: /workspace. */
  cwd?: string | undefined;
}

export interface ProcessSandbox {
  /** Terminal input in pty mode. */
  readonly stdin: Writable;
  /** Terminal output in pty mode. */
  readonly stdout: Readable;
  /** null in pty mode (the terminal carries both). */
  readonly stderr: Readable | null;
  /** pty only; sizes are validated by callers. */
  resize(cols: number, rows: number): void;
  /** SIGKILL kills the sandbox; the others go to the program's process group through the relay. */
  signal(name: ProcessSignal): void;
  kill(): void;
  /** bwrap's exit: the program's exit status (128+N for a signal N) once all its pipes are closed. */
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  /** Kill what is left in the cgroup and remove it. */
  dispose(): Promise<void>;
}

function sizeOk(n: number): boolean {
  return Number.isInteger(n) && n >= PTY_MIN_SIZE && n <= PTY_MAX_SIZE;
}

export async function startProcessSandbox(deps: SpawnDeps, spec: ProcessSandboxSpec): Promise<ProcessSandbox> {
  const { argv, pty, cwd, ...rest } = spec;
  if (argv.length === 0) throw new Error('a process needs a program');
  if (pty && !(sizeOk(pty.cols) && sizeOk(pty.rows))) throw new Error('terminal size out of range');
  const python = pythonFor(spec.environment);
  const relay = `${SANDBOX_PATHS.scriptDir}/${RELAY_NAME}`;
  // Started by node:child_process, not the spawn helper: a process is long-lived (one spawn, off
  // the hot path), and with the spawner a command streaming at full speed to a client that reads
  // nothing grew the service's memory by up to 150 MB in one run of three (22-25 MB this way; the
  // E2B SDK test's hold-back check). Not understood yet; executions keep the spawner.
  const sandbox = await spawnSandbox({ ...deps, spawner: null }, {
    ...rest,
    // -I: the relay never imports from the workspace (PYTHONPATH) or reads PYTHON* variables.
    command: ([ctl]) => [
      python, '-I', relay, String(ctl), pty ? 'pty' : 'pipes', String(pty?.cols ?? 80), String(pty?.rows ?? 24), cwd ?? '', '--', ...argv,
    ],
    sandboxFiles: { [RELAY_NAME]: RELAY_SOURCE },
    extraPipes: 1,
  });
  const ctl = sandbox.extra[0]?.stream;
  if (!ctl) throw new Error('no control pipe');
  // What the relay writes back is not needed (the outcome is bwrap's); read and dropped so it never blocks.
  ctl.resume();
  let ended = false;
  const exited = sandbox.exited.then(({ code, signal }) => {
    ended = true;
    return { code, signal: signal as string | null };
  });
  const send = (msg: object) => {
    if (!ended && ctl.writable) ctl.write(`${JSON.stringify(msg)}\n`);
  };
  if (pty) sandbox.stderr.resume(); // the terminal is on stdout; the relay's own errors are dropped
  return {
    stdin: sandbox.stdin,
    stdout: sandbox.stdout,
    stderr: pty ? null : sandbox.stderr,
    resize: (cols, rows) => {
      if (pty && sizeOk(cols) && sizeOk(rows)) send({ resize: [cols, rows] });
    },
    signal: (name) => {
      if (name === 'SIGKILL') sandbox.kill();
      else send({ signal: name });
    },
    kill: () => sandbox.kill(),
    exited,
    dispose: () => sandbox.dispose(),
  };
}
