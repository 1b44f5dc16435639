// ports/ proxy overhead (issue 13): a GET of a small file from `python3 -m http.server` running as
// a process in a session, through /v1/sessions/{id}/ports/{port}/..., against the same GET to the
// same server without the proxy, interleaved request by request. Target: under 2 ms added at p50.
//
// The direct side goes through connectPort: the bench opens the session's ports.sock (the netns
// helper's socket under <workspace_dir>/run/net, root only) itself and speaks HTTP over the
// connection it gets, as the proxy does. So both sides reach the same server by the same path into
// the namespace (the helper's hop is a cost every way in has), and the difference is the proxy
// alone: Fastify's routing and hooks, the header rewrite, one more socket in each direction. A
// server on the host's loopback instead would leave the helper's hop out and charge it to the
// proxy, and a client inside the session would be another client; the same file served by the
// same program on the host loopback is reported as information (no namespace at all).
// The proxy side reuses its connection to the service (keep-alive, as clients do); the proxy opens
// one upstream connection per request, like the direct side. Runs alone with
// `npx tsx bench/lib/phase-ports.ts` (as root; `npm run build` first).
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { connectPort } from '../../src/sandbox/network/netns-helper.js';
import { executeIn, type BenchClient } from './http.js';
import { inBenchSession, notMeasuredRow, runIfMain, startProcess, type PhaseInput } from './phase-kit.js';
import { fmt, verdict, type Row } from './report.js';
import { freePort, makeTempDir } from './server.js';
import { now, ratio, round, sleep, summarize, type Summary } from './stats.js';

export const PORTS_TARGETS = { addedP50Ms: 2 } as const;
const SANDBOX_PORT = 8125;
const BODY = 'ok\n';

export type PortsResult =
  | { error: null; n: number; proxy: Summary; direct_connect_port: Summary; host_loopback: Summary; added_p50_ms: number; service_plain_get: Summary }
  | { error: string };

/** GET `route` on a fresh connection made by `connect`; ms until the whole body was read. */
function timedGet(connect: () => net.Socket, route: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = now();
    // createConnection without `agent: false` (Node would dial the host's port 80 instead).
    const req = http.request({ createConnection: connect, path: route, headers: { host: '127.0.0.1', connection: 'close' } }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => (res.statusCode === 200 && body === BODY ? resolve(now() - t0) : reject(new Error(`direct GET: ${res.statusCode ?? '?'} ${body.slice(0, 100)}`))));
      res.on('error', reject);
    });
    req.setTimeout(10_000, () => req.destroy(new Error(`GET ${route}: no answer in 10 s`)));
    req.on('error', reject);
    req.end();
  });
}

async function proxiedGet(client: BenchClient, route: string): Promise<number> {
  const t0 = now();
  const res = await client.request('GET', route);
  const dt = now() - t0;
  if (res.status !== 200 || res.text !== BODY) throw new Error(`proxied GET: ${res.status} ${res.text.slice(0, 200)}`);
  return dt;
}

/** The same server program on the host's loopback, serving the same file; stopped by close(). */
async function hostServer(): Promise<{ port: number; close(): Promise<void> }> {
  const dir = makeTempDir('bench-ports-host-', 0o755);
  fs.writeFileSync(path.join(dir, 'small.txt'), BODY);
  const port = await freePort();
  const child = spawn('python3', ['-m', 'http.server', String(port), '--bind', '127.0.0.1', '--directory', dir], { stdio: 'ignore' });
  const gone = new Promise<void>((r) => child.once('exit', () => r()));
  const close = async () => {
    child.kill('SIGKILL');
    await gone;
    fs.rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/small.txt`);
      if ((await res.text()) === BODY) return { port, close };
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await close();
      throw new Error('the host loopback server did not start');
    }
    await sleep(50);
  }
}

export async function measurePorts(input: PhaseInput & { serviceWorkspaceDir: string }): Promise<PortsResult> {
  const { client, n, warmup, log } = input;
  const session = 'bench-ports';
  const route = `/v1/sessions/${session}/ports/${SANDBOX_PORT}/small.txt`;
  return inBenchSession(client, session, async () => {
    const made = await executeIn(client, session, { command: `printf '${BODY.trim()}\\n' > small.txt` });
    if (made.status !== 200 || made.result?.status !== 'ok') throw new Error(`writing small.txt: ${made.status} ${made.text.slice(0, 200)}`);
    await startProcess(client, session, { argv: ['python3', '-m', 'http.server', String(SANDBOX_PORT), '--bind', '127.0.0.1'] });
    // 502 PORT_NOT_LISTENING until the server inside is up.
    const deadline = Date.now() + 15_000;
    for (;;) {
      const res = await client.request('GET', route);
      if (res.status === 200 && res.text === BODY) break;
      if (Date.now() > deadline) throw new Error(`the server in the session did not answer through ports/: ${res.status} ${res.text.slice(0, 200)}`);
      await sleep(100);
    }
    // The session's helper socket (started by the first proxied request): runDirName in session-networks.ts.
    const hashed = createHash('sha256').update(session).digest('hex').slice(0, 16);
    const portsSocket = path.join(input.serviceWorkspaceDir, 'run', 'net', hashed, 'ports.sock');
    if (!fs.existsSync(portsSocket)) throw new Error(`no ports.sock at ${portsSocket}`);
    const host = await hostServer();
    try {
      const series = { proxy: [] as number[], direct: [] as number[], host: [] as number[], plain: [] as number[] };
      log(`ports: ${n} GETs each after ${warmup} warm-up: ports/ proxy, connectPort direct, host loopback, interleaved`);
      for (let i = -warmup; i < n; i++) {
        const p = await proxiedGet(client, route);
        const t0 = now();
        const sock = await connectPort(portsSocket, SANDBOX_PORT);
        const d = (now() - t0) + (await timedGet(() => sock.resume(), '/small.txt'));
        const h = await timedGet(() => net.connect(host.port, '127.0.0.1'), '/small.txt');
        const t1 = now();
        const info = await client.request('GET', `/v1/sessions/${session}`);
        const plain = now() - t1;
        if (info.status !== 200) throw new Error(`GET session: ${info.status}`);
        if (i < 0) continue;
        series.plain.push(plain);
        series.proxy.push(p);
        series.direct.push(d);
        series.host.push(h);
      }
      const proxy = summarize(series.proxy);
      const direct = summarize(series.direct);
      return { error: null, n, proxy, direct_connect_port: direct, host_loopback: summarize(series.host), added_p50_ms: round(proxy.p50 - direct.p50), service_plain_get: summarize(series.plain) };
    } finally {
      await host.close();
    }
  });
}

export function portsRows(r: PortsResult): Row[] {
  if (r.error !== null) {
    return [notMeasuredRow('ports/ proxy added p50 ms', `< +${PORTS_TARGETS.addedP50Ms} ms`, r.error)];
  }
  return [
    {
      metric: 'ports/ proxy GET p50 ms (vs connectPort direct, same server)', service: fmt(r.proxy.p50), baseline: fmt(r.direct_connect_port.p50), ratio: `+${fmt(r.added_p50_ms)} ms`,
      target: `< +${PORTS_TARGETS.addedP50Ms} ms`, result: verdict(r.added_p50_ms < PORTS_TARGETS.addedP50Ms),
    },
    { metric: 'ports/ proxy GET p90 ms (vs connectPort direct)', service: fmt(r.proxy.p90), baseline: fmt(r.direct_connect_port.p90), ratio: fmt(ratio(r.proxy.p90, r.direct_connect_port.p90)), target: '-', result: 'info' },
    { metric: '  same server program on the host loopback p50 ms', service: fmt(r.host_loopback.p50), baseline: '-', ratio: '-', target: '-', result: 'info' },
    { metric: '  a plain service GET (session info) p50 ms, for scale', service: fmt(r.service_plain_get.p50), baseline: '-', ratio: '-', target: '-', result: 'info' },
  ];
}

runIfMain(import.meta.url, 'ports', measurePorts, portsRows);
