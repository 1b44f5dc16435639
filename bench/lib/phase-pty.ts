// PTY round trip (issue 13): a keystroke sent as a binary WebSocket frame to
// /v1/sessions/{id}/processes/{pid}/pty until its echo comes back, against the real service:
// WebSocket → service → relay in the sandbox → bash's readline → relay → service → WebSocket.
// One key at a time ('x', timed), each followed by a backspace (untimed) so the line never grows
// or wraps. Target: p50 under 5 ms. Runs alone with `npx tsx bench/lib/phase-pty.ts` (starts a
// service of its own; `npm run build` first: the service runs from dist/).
import WebSocket from 'ws';
import { inBenchSession, notMeasuredRow, runIfMain, startProcess, type PhaseInput } from './phase-kit.js';
import { fmt, verdict, type Row } from './report.js';
import { now, summarize, type Summary } from './stats.js';

export const PTY_TARGETS = { roundTripP50Ms: 5 } as const;


export type PtyResult =
  | { error: null; keys: number; round_trip: Summary; scrollback_bytes_on_connect: number }
  | { error: string };


/** Everything a WebSocket receives, and a way to wait for what comes next. */
class Terminal {
  private received = '';
  private waiter: { pred: (text: string) => boolean; resolve: (at: number) => void; from: number } | null = null;
  readonly firstBytes: Promise<number>;

  constructor(readonly ws: WebSocket) {
    let first: (n: number) => void = () => undefined;
    this.firstBytes = new Promise((r) => (first = r));
    ws.on('message', (data: Buffer | ArrayBuffer | Buffer[]) => {
      const at = now();
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as Buffer);
      if (this.received.length === 0) first(buf.length);
      this.received += buf.toString('latin1');
      const w = this.waiter;
      if (w && w.pred(this.received.slice(w.from))) {
        this.waiter = null;
        w.resolve(at);
      }
    });
  }

  /** Resolves with the arrival time of the message after which `pred` holds for what came since `from` (default: the call). */
  next(pred: (text: string) => boolean, timeoutMs = 10_000, from = this.received.length): Promise<number> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new Error(`no matching terminal output within ${timeoutMs} ms; last bytes: ${JSON.stringify(this.received.slice(-200))}`));
      }, timeoutMs);
      this.waiter = {
        pred,
        from,
        resolve: (at) => {
          clearTimeout(timer);
          resolve(at);
        },
      };
      // What already arrived may satisfy it (the prompt in the scrollback, with from = 0).
      if (pred(this.received.slice(from))) this.waiter.resolve(now());
    });
  }

  all(): string {
    return this.received;
  }

  send(bytes: string): void {
    this.ws.send(Buffer.from(bytes, 'latin1'), { binary: true });
  }
}

export function openWebSocket(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => reject(new Error(`WebSocket upgrade answered ${res.statusCode ?? '?'}`)));
    ws.once('error', reject);
  });
}

export async function measurePty(input: PhaseInput): Promise<PtyResult> {
  const { client, n, warmup, log } = input;
  const session = 'bench-pty';
  return inBenchSession(client, session, async () => {
    const pid = await startProcess(client, session, { argv: ['bash', '--norc', '--noprofile'], pty: { cols: 80, rows: 24 } });
    const url = `${input.server.baseUrl.replace(/^http/, 'ws')}/v1/sessions/${session}/processes/${pid}/pty`;
    const ws = await openWebSocket(url);
    const term = new Terminal(ws);
    try {
      // Keys typed before the first prompt may be flushed by bash: wait for it.
      await term.next((t) => /[$#] $/.test(t), 15_000, 0);
      const scrollback = term.all().length;
      log(`pty: ${n} keystrokes after ${warmup} warm-up, each echo awaited`);
      const samples: number[] = [];
      for (let i = -warmup; i < n; i++) {
        const echoed = term.next((t) => t.includes('x'));
        const t0 = now();
        term.send('x');
        const at = await echoed;
        if (i >= 0) samples.push(at - t0);
        const erased = term.next((t) => t.includes('\b'));
        term.send('\x7f');
        await erased;
      }
      return { error: null, keys: n, round_trip: summarize(samples), scrollback_bytes_on_connect: scrollback };
    } finally {
      ws.terminate();
    }
  });
}

export function ptyRows(r: PtyResult): Row[] {
  if (r.error !== null) {
    return [notMeasuredRow('PTY keystroke→echo p50 ms (WebSocket)', `< ${PTY_TARGETS.roundTripP50Ms} ms`, r.error)];
  }
  return [
    {
      metric: `PTY keystroke→echo p50 ms (WebSocket, bash, ${r.keys} keys)`, service: fmt(r.round_trip.p50), baseline: '-', ratio: '-',
      target: `< ${PTY_TARGETS.roundTripP50Ms} ms`, result: verdict(r.round_trip.p50 < PTY_TARGETS.roundTripP50Ms),
    },
    { metric: 'PTY keystroke→echo p90 / p99 ms', service: `${fmt(r.round_trip.p90)} / ${fmt(r.round_trip.p99)}`, baseline: '-', ratio: '-', target: '-', result: 'info' },
  ];
}


runIfMain(import.meta.url, 'pty', measurePty, ptyRows);
