// Stateful code and streaming against the real service process: output arrives while the code
// runs, a client that goes away ends its execution, and no interpreter outlives the service.
import { beforeAll, describe, expect, test } from 'vitest';
import {
  descendantsOf, listHostProcesses, stillRunning, waitForNoProcess, waitForSleep, waitUntil, type HostProcess,
} from '../helpers/host-processes.js';
import { api, startServer, useWorkspaceDir, type ServerProcess } from '../helpers/server-process.js';

/**
 * Each server of this file runs its sandboxes under host uids no other test uses, so "no process
 * with these uids is left" is a check on this file's sandboxes only.
 */
const UID_BLOCK = 128;
const UID_BASE = 1_000_000 + (process.pid % 50_000) * 2 * UID_BLOCK;

function serverEnv(block: number): Record<string, string> {
  return {
    BUBBLE_SANDBOX_SANDBOX_UID_BASE: String(UID_BASE + block * UID_BLOCK),
    BUBBLE_SANDBOX_SANDBOX_UID_COUNT: String(UID_BLOCK),
    BUBBLE_SANDBOX_MAX_SESSIONS: '8',
    BUBBLE_SANDBOX_MAX_CONCURRENT_EXECUTIONS: '4',
    BUBBLE_SANDBOX_MAX_QUEUED_EXECUTIONS: '16',
  };
}

function withUidIn(lo: number, hi: number): HostProcess[] {
  return listHostProcesses().filter((p) => p.uid >= lo && p.uid < hi);
}

// --- NDJSON over a real connection -------------------------------------------------------------

interface TimedEvent {
  event: Record<string, unknown> & { type: string };
  /** ms since the request was sent */
  at: number;
}

interface StreamHandle {
  status: number;
  contentType: string | null;
  /** Resolves with the next event, or null at the end of the stream. */
  next(): Promise<TimedEvent | null>;
  /** Reads events until the stdout seen so far contains `text`; returns that stdout. */
  stdoutUntil(text: string): Promise<string>;
  /** Every remaining event. */
  rest(): Promise<TimedEvent[]>;
}

async function openStream(baseUrl: string, route: string, body: unknown, signal?: AbortSignal): Promise<StreamHandle> {
  const sent = performance.now();
  const res = await fetch(`${baseUrl}${route}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/x-ndjson' },
    body: JSON.stringify(body),
    ...(signal ? { signal } : {}),
  });
  if (!res.body) throw new Error('no body');
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let buffered = '';
  let ended = false;
  const queue: TimedEvent[] = [];
  const next = async (): Promise<TimedEvent | null> => {
    for (;;) {
      const queued = queue.shift();
      if (queued) return queued;
      if (ended) return null;
      const { done, value } = await reader.read();
      const at = performance.now() - sent;
      if (done) {
        ended = true;
        if (buffered.length > 0) throw new Error(`stream ended inside a line: ${buffered}`);
        continue;
      }
      buffered += decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        queue.push({ event: JSON.parse(line) as TimedEvent['event'], at });
      }
    }
  };
  return {
    status: res.status,
    async stdoutUntil(text: string) {
      let out = '';
      while (!out.includes(text)) {
        const e = await next();
        if (!e) throw new Error(`stream ended before ${JSON.stringify(text)}; stdout was ${JSON.stringify(out)}`);
        if (e.event.type === 'stdout') out += String(e.event.data);
      }
      return out;
    },
    contentType: res.headers.get('content-type'),
    next,
    rest: async () => {
      const all: TimedEvent[] = [];
      for (let e = await next(); e; e = await next()) all.push(e);
      return all;
    },
  };
}

// --- tests -------------------------------------------------------------------------------------

describe('streaming against the real service', () => {
  const workspaceDir = useWorkspaceDir('bs-e2e-runcode-', 'all');
  let server: ServerProcess;

  beforeAll(async () => {
    server = await startServer({ workspaceDir: workspaceDir.path, env: serverEnv(0) });
    expect((await api(server.baseUrl, 'POST', '/v1/sessions', { session_id: 'live' })).status).toBe(201);
  });

  const slowScript = "print('first', flush=True)\nimport time\ntime.sleep(2)\nprint('second')";

  for (const [name, route, body] of [
    ['run_code', '/v1/sessions/live/run_code', { code: slowScript, timeout_seconds: 30 }],
    ['execute', '/v1/sessions/live/execute', { script: slowScript, timeout_seconds: 30 }],
  ] as const) {
    test(`a streamed ${name} delivers its first line well before the code ends`, async () => {
      const s = await openStream(server.baseUrl, route, body);
      expect(s.status).toBe(200);
      expect(s.contentType).toMatch(/^application\/x-ndjson\b/);
      const events = await s.rest();
      // Output may come in any chunks: the first line is there once the stdout so far holds it.
      let seen = '';
      const firstOut = events.find((e) => e.event.type === 'stdout' && (seen += String(e.event.data)).includes('first\n'));
      const result = events.filter((e) => e.event.type === 'result');
      expect(result.length).toBe(1);
      expect(events[events.length - 1]?.event.type).toBe('result');
      expect(seen).toBe('first\n');
      expect(events.filter((e) => e.event.type === 'stdout').map((e) => e.event.data).join('')).toBe('first\nsecond\n');
      expect(result[0]?.event).toMatchObject({ status: 'ok', stdout: '', stderr: '' });
      // The script sleeps 2 s between the lines: the first must not wait for the end.
      expect((result[0]?.at ?? 0) - (firstOut?.at ?? Infinity)).toBeGreaterThanOrEqual(1500);
    }, 30_000);
  }

  test('a streamed run_code delivers a display line as it is produced, well before the code ends', async () => {
    const code = "display({'text/html': '<b>now</b>'}, raw=True)\nimport time\ntime.sleep(2)\nprint('later')";
    const s = await openStream(server.baseUrl, '/v1/sessions/live/run_code', { code, timeout_seconds: 30 });
    expect(s.status).toBe(200);
    const events = await s.rest();
    // 'later\n' may come in more than one stdout line.
    expect([...new Set(events.map((e) => e.event.type))]).toEqual(['display', 'stdout', 'result']);
    expect(events.filter((e) => e.event.type === 'stdout').map((e) => e.event.data).join('')).toBe('later\n');
    expect(events[0]?.event).toEqual({ type: 'display', output: { type: 'display_data', data: { 'text/html': '<b>now</b>' } } });
    const result = events[events.length - 1];
    expect(result?.event).toMatchObject({ status: 'ok', outputs: [{ type: 'display_data', data: { 'text/html': '<b>now</b>' } }], outputs_truncated: false });
    // The cell sleeps 2 s after the display: the line must not wait for the end.
    expect((result?.at ?? 0) - (events[0]?.at ?? Infinity)).toBeGreaterThanOrEqual(1500);
  }, 30_000);

  test('a client that disconnects from a streamed execute ends the execution', async () => {
    const ac = new AbortController();
    const s = await openStream(server.baseUrl, '/v1/sessions/live/execute', { command: 'echo started; sleep 30.789', timeout_seconds: 60 }, ac.signal);
    expect(s.status).toBe(200);
    expect(await s.stdoutUntil('started\n')).toBe('started\n');
    await waitForSleep('30.789');
    ac.abort();
    expect(await waitForNoProcess('sleep 30.789', 2000)).toEqual([]);
    // The session's queue is free again.
    const started = Date.now();
    const next = await api(server.baseUrl, 'POST', '/v1/sessions/live/execute', { command: 'echo next' });
    expect(next.body).toMatchObject({ status: 'ok', stdout: 'next\n' });
    expect(Date.now() - started).toBeLessThan(10_000);
  }, 60_000);

  test('a client that disconnects from a streamed run_code ends the cell; the interpreter keeps its state', async () => {
    expect((await api(server.baseUrl, 'POST', '/v1/sessions/live/run_code', { code: "kept = 'still here'" })).body).toMatchObject({ status: 'ok' });
    const ac = new AbortController();
    const code = "import subprocess\nprint('started', flush=True)\nsubprocess.run(['sleep', '30.790'])";
    const s = await openStream(server.baseUrl, '/v1/sessions/live/run_code', { code, timeout_seconds: 60 }, ac.signal);
    expect(s.status).toBe(200);
    expect(await s.stdoutUntil('started\n')).toBe('started\n');
    await waitForSleep('30.790');
    ac.abort();
    expect(await waitForNoProcess('sleep 30.790', 2000)).toEqual([]);
    const next = await api(server.baseUrl, 'POST', '/v1/sessions/live/run_code', { code: 'kept' });
    expect(next.body).toMatchObject({ status: 'ok', result: "'still here'", kernel_restarted: false });
  }, 60_000);
});

describe('shutdown', () => {
  const workspaceDir = useWorkspaceDir('bs-e2e-runcode-stop-', 'all');

  test('after SIGTERM the service exits 0 and no process of its interpreters is left', async () => {
    const server = await startServer({ workspaceDir: workspaceDir.path, env: serverEnv(1) });
    const lo = UID_BASE + UID_BLOCK;
    const hi = lo + UID_BLOCK;
    expect((await api(server.baseUrl, 'POST', '/v1/sessions', { session_id: 'kernel' })).status).toBe(201);
    const r = await api(server.baseUrl, 'POST', '/v1/sessions/kernel/run_code', { code: "import subprocess\nchild = subprocess.Popen(['sleep', '300.456'])\nx = 1" });
    expect(r.body).toMatchObject({ status: 'ok', kernel_restarted: false });
    expect((await api(server.baseUrl, 'POST', '/v1/sessions/kernel/run_code', { code: 'x + 1' })).body).toMatchObject({ result: '2' });

    const kernel = descendantsOf(server.pid).filter((p) => p.command.includes('/sandbox/main.py') || p.uid >= lo);
    expect(kernel.some((p) => p.command.includes('/sandbox/main.py')), JSON.stringify(kernel)).toBe(true);
    expect(kernel.some((p) => p.command === 'sleep 300.456'), JSON.stringify(kernel)).toBe(true);
    expect(withUidIn(lo, hi).length).toBeGreaterThan(0);

    const exit = await server.stop('SIGTERM');
    expect(exit).toEqual({ code: 0, signal: null });
    const left = await waitUntil(() => [...stillRunning(kernel), ...withUidIn(lo, hi)], (l) => l.length === 0, 2000);
    expect(left).toEqual([]);
    expect(await waitForNoProcess('sleep 300.456', 0)).toEqual([]);
  }, 60_000);
});
