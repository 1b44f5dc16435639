// What the bench phases of issue 13 (pty, ports) share: their input, a process started through
// the API, a session that is deleted whatever happens (a failure becomes the phase's error, shown
// as a FAIL row so the rest of the bench still reports), and running a phase alone.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { BenchClient, createSession, deleteSession } from './http.js';
import { renderTable, type Row } from './report.js';
import { cleanEnv, ENVIRONMENTS_DIR, freePort, makeTempDir, startService, type BenchServer, removeTempDir } from './server.js';

export interface PhaseInput {
  client: BenchClient;
  server: Pick<BenchServer, 'baseUrl'>;
  /** Samples (after `warmup` unrecorded ones). */
  n: number;
  warmup: number;
  log: (message: string) => void;
}

/** Starts a process in `session` through the API; returns its id. */
export async function startProcess(client: BenchClient, session: string, body: Record<string, unknown>): Promise<string> {
  const res = await client.json('POST', `/v1/sessions/${session}/processes`, body);
  if (res.status !== 201) throw new Error(`starting a process: ${res.status} ${res.text.slice(0, 300)}`);
  const pid = (JSON.parse(res.text) as { pid?: unknown }).pid;
  if (typeof pid !== 'string') throw new Error(`no pid in ${res.text.slice(0, 300)}`);
  return pid;
}

/** `measure` in a fresh session, deleted afterwards; what it throws becomes `{ error }`. */
export async function inBenchSession<T>(client: BenchClient, session: string, measure: () => Promise<T>): Promise<T | { error: string }> {
  try {
    await createSession(client, session);
    try {
      return await measure();
    } finally {
      await deleteSession(client, session);
    }
  } catch (err) {
    return { error: err instanceof Error ? err.message : String(err) };
  }
}

/** The one row of a phase that could not measure: a FAIL naming why. */
export function notMeasuredRow(metric: string, target: string, error: string): Row {
  return { metric: `${metric}: not measured: ${error.slice(0, 120)}`, service: 'n/a', baseline: '-', ratio: '-', target, result: 'FAIL' };
}

/**
 * For a phase run alone: a service of its own on a free loopback port with a temporary workspace
 * dir, the phase, then the service stopped and the dir removed.
 */
export async function withStandaloneService<T>(fn: (input: PhaseInput & { serviceWorkspaceDir: string }) => Promise<T>): Promise<T> {
  const tmp = makeTempDir('bubble-bench-phase-');
  const serviceWorkspaceDir = path.join(tmp, 'service');
  fs.mkdirSync(serviceWorkspaceDir, { mode: 0o711 });
  const log = (m: string) => process.stderr.write(`${m}\n`);
  let server: BenchServer | null = null;
  const client = (base: string) => new BenchClient(base);
  // Interrupted: the service goes too (it would outlive this process, holding its uid range).
  const onSignal = () => void (server?.stop() ?? Promise.resolve()).finally(() => {
    removeTempDir(tmp);
    process.exit(130);
  });
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    server = await startService(cleanEnv({
      BUBBLE_SANDBOX_HOST: '127.0.0.1',
      BUBBLE_SANDBOX_PORT: String(await freePort()),
      BUBBLE_SANDBOX_WORKSPACE_DIR: serviceWorkspaceDir,
      BUBBLE_SANDBOX_ENVIRONMENTS_DIR: ENVIRONMENTS_DIR,
    }));
    const c = client(server.baseUrl);
    try {
      const n = Number(process.env.BENCH_N ?? 200);
      return await fn({ client: c, server, n: Number.isInteger(n) && n > 0 ? n : 200, warmup: 20, log, serviceWorkspaceDir });
    } finally {
      c.close();
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await server?.stop();
    removeTempDir(tmp);
  }
}

/** When `moduleUrl` is the script node was started with: run the phase alone and print its rows and figures. */
export function runIfMain<R>(moduleUrl: string, name: string, measure: (input: PhaseInput & { serviceWorkspaceDir: string }) => Promise<R>, rows: (r: R) => Row[]): void {
  if (process.argv[1] === undefined || moduleUrl !== pathToFileURL(process.argv[1]).href) return;
  withStandaloneService(measure)
    .then((r) => process.stdout.write(`${renderTable(rows(r))}\n${JSON.stringify(r, null, 2)}\n`))
    .catch((err: unknown) => {
      process.stderr.write(`${name} bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 1;
    });
}
