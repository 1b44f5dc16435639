// What the self-test probes share: the context a probe runs in, how it reports, and the helpers
// that turn a sandbox run into an answer or a ProbeFailure.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { explainProbeFailure, type Sandbox } from './sandbox.js';
import type { Program, ResourceLimits, RunResult } from './types.js';

export interface RunOptions {
  limits?: Partial<ResourceLimits>;
  timeoutMs?: number;
  env?: Record<string, string>;
}
export interface ProbeContext {
  sandbox: Sandbox;
  identity: { uid: number; gid: number } | null;
  /** One sandbox run in a fresh workspace; the workspace's host path is returned for host-side checks. */
  run(program: Program, opts?: RunOptions): Promise<{ result: RunResult; workspace: string }>;
  /** /proc/self/status of one sandboxed process, read once and shared by the probes that parse it. */
  status(): Promise<Map<string, string>>;
}
export interface Outcome {
  passed: boolean;
  detail: string;
}
export interface ProbeSpec {
  category: string;
  name: string;
  check(ctx: ProbeContext): Promise<Outcome>;
}

/** A probe that could not get the answer it needs (the sandbox failed, odd output). */
export class ProbeFailure extends Error {}

export const fail = (detail: string): Outcome => ({ passed: false, detail });
export const verdict = (ok: boolean, detail: string): Outcome => ({ passed: ok, detail });
export const py = (source: string): Program => ({ kind: 'script', source });
/** Python source run as `python3 -c` (no launcher). */
export const pyArgv = (source: string): Program => ({ kind: 'argv', argv: ['python3', '-c', source] });
export const sh = (command: string): Program => ({ kind: 'command', command });
export const catStatus: Program = { kind: 'argv', argv: ['/bin/cat', '/proc/self/status'] };
export const token = () => randomBytes(8).toString('hex');

/**
 * Run fn with a variable set in the service's own environment, to prove it does not cross into a
 * sandbox. Each probe uses its own name: probes run concurrently, and two restoring one name
 * could leave it set.
 */
export async function withServiceVariable<T>(name: string, value: string, fn: () => Promise<T>): Promise<T> {
  const previous = process.env[name];
  process.env[name] = value;
  try {
    return await fn();
  } finally {
    if (previous === undefined) delete process.env[name];
    else process.env[name] = previous;
  }
}

/** Details are shown to operators and may reach /readyz: short, and without host paths. */
export function clip(text: string, max = 160): string {
  const one = text.replace(/\/(?:tmp|home|root|var|srv|opt|run)\/[^\s:'"]*/g, '<path>').replace(/\s+/g, ' ').trim();
  return one.length > max ? `${one.slice(0, max)}…` : one;
}

export function describeRun(r: RunResult): string {
  const how = r.signal ? `signal ${r.signal}` : `exit ${String(r.exit_code)}`;
  const lines = r.stderr.split('\n').filter((l) => l.trim().length > 0);
  let why = 'no error output';
  if (lines.some((l) => /^(?:bwrap|bubble-sandbox-exec):/.test(l)) || r.exit_code === 125 || r.exit_code === 127) {
    why = explainProbeFailure(r.exit_code, r.stderr);
  } else if (lines.length > 0) why = clip(lines[lines.length - 1] ?? '');
  return `the sandbox run ended '${r.status}' (${how}): ${why}`;
}

export function outputOf(r: RunResult): string {
  if (r.status !== 'ok') throw new ProbeFailure(describeRun(r));
  return r.stdout;
}

/** The probe scripts print one JSON line last. */
export function jsonOf<T>(r: RunResult): T {
  const out = outputOf(r).trim();
  try {
    return JSON.parse(out.split('\n').pop() ?? '') as T;
  } catch {
    throw new ProbeFailure(`unexpected probe output: ${clip(out) || '(empty)'}`);
  }
}

export function statusFields(r: RunResult): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of outputOf(r).split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) fields.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return fields;
}

/** A Python probe that reports how an operation ended: `ok` or an errno name. */
export const PY_PRELUDE = `import ctypes, errno, json, os, socket, sys
def outcome(fn):
    try:
        fn()
        return 'ok'
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
`;

export async function hostListener(address: string | { path: string }): Promise<{ server: net.Server; connections: () => number; port: number }> {
  let count = 0;
  const server = net.createServer((s) => {
    count++;
    s.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if (typeof address === 'string') server.listen(0, address, resolve);
    else server.listen(address.path, resolve);
  });
  const addr = server.address();
  return { server, connections: () => count, port: typeof addr === 'object' && addr ? addr.port : 0 };
}

export const closeServer = (server: net.Server) => new Promise<void>((resolve) => server.close(() => resolve()));
