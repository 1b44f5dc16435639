// For the many-replica tests and the cluster bench: three (or n) real replicas on this machine,
// each with its own workspace dir, port and host uid range (no two sandboxes may share a uid),
// a plain round-robin TCP proxy in front, and HTTP calls on a fresh connection each (so the
// proxy's rotation, not a kept-alive connection, picks the replica).
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { freePort, startServer, type ServerProcess } from './server-process.js';

export const CLUSTER_SECRET = 'cluster-test-secret-0123456789';

export interface Replica {
  node: string;
  port: number;
  workspaceDir: string;
  env: Record<string, string>;
  server: ServerProcess;
  baseUrl: string;
}

/** A uid lock directory as the replicas had it (0755), from the caller's temp dirs. */
function lockDir(dir: string): string {
  fs.chmodSync(dir, 0o755);
  return dir;
}

/** Starts n replicas n0..n<n-1> that know each other; uid ranges of 200 from uidBase, 1000 apart. */
export async function startReplicas(n: number, opts: { uidBase: number; env?: Record<string, string>; tempDirs: (prefix: string) => string }): Promise<Replica[]> {
  const ports = await Promise.all(Array.from({ length: n }, () => freePort()));
  const peers = Object.fromEntries(ports.map((p, i) => [`n${i}`, `http://127.0.0.1:${p}`]));
  return Promise.all(ports.map(async (port, i) => {
    const workspaceDir = opts.tempDirs(`bs-cluster-n${i}-`);
    const env = {
      BUBBLE_SANDBOX_NODE_ID: `n${i}`,
      BUBBLE_SANDBOX_PEERS: JSON.stringify(peers),
      BUBBLE_SANDBOX_CLUSTER_SECRET: CLUSTER_SECRET,
      BUBBLE_SANDBOX_SANDBOX_UID_BASE: String(opts.uidBase + i * 1000),
      BUBBLE_SANDBOX_SANDBOX_UID_COUNT: '200',
      BUBBLE_SANDBOX_MAX_SESSIONS: '20',
      BUBBLE_SANDBOX_MAX_QUEUED_EXECUTIONS: '16',
      BUBBLE_SANDBOX_WORKSPACE_POOL_SIZE: '1',
      // The caller's, so it goes with the workspace dirs when the file is done.
      BUBBLE_SANDBOX_UID_LOCK_DIR: lockDir(opts.tempDirs(`bs-cluster-uid-n${i}-`)),
      ...opts.env,
    };
    const server = await startServer({ workspaceDir, port, env, readyTimeoutMs: 30_000 });
    return { node: `n${i}`, port, workspaceDir, env, server, baseUrl: server.baseUrl };
  }));
}

/** Starts a replica again on its address and volume (its workspace dir). */
export async function restartReplica(r: Replica): Promise<Replica> {
  const server = await startServer({ workspaceDir: r.workspaceDir, port: r.port, env: r.env, readyTimeoutMs: 30_000 });
  return { ...r, server, baseUrl: server.baseUrl };
}

export interface RoundRobinProxy {
  baseUrl: string;
  wsBase: string;
  /** Which backend port each accepted connection went to, in order. */
  picks: number[];
  close(): Promise<void>;
}

/** A TCP proxy that hands each new connection to the next backend in turn (as a plain L4 balancer does). */
export async function roundRobinProxy(backendPorts: () => number[]): Promise<RoundRobinProxy> {
  let next = 0;
  const picks: number[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const ports = backendPorts();
    const port = ports[next++ % ports.length] ?? 0;
    picks.push(port);
    const backend = net.connect(port, '127.0.0.1');
    for (const s of [client, backend]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        backend.destroy();
      });
    }
    client.pipe(backend).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return {
    baseUrl: `http://127.0.0.1:${address.port}`,
    wsBase: `ws://127.0.0.1:${address.port}`,
    picks,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  text: string;
  json: <T = Record<string, unknown>>() => T;
}

/** One HTTP request on a connection of its own (agent: false). */
export function call(baseUrl: string, method: string, path: string, opts: { json?: unknown; body?: Buffer; headers?: Record<string, string> } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const payload = opts.json !== undefined ? Buffer.from(JSON.stringify(opts.json)) : opts.body;
    const headers = { ...(opts.json !== undefined ? { 'content-type': 'application/json' } : {}), ...(payload ? { 'content-length': String(payload.length) } : {}), ...opts.headers };
    const req = http.request(new URL(path, baseUrl), { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        const text = body.toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text, json: <T>() => JSON.parse(text) as T });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
}

/** A multipart upload body, as a browser's FormData makes it. */
export async function multipart(files: { name: string; content: string }[]): Promise<{ body: Buffer; headers: Record<string, string> }> {
  const form = new FormData();
  for (const f of files) form.append('file', new Blob([f.content]), f.name);
  const res = new Response(form);
  return { body: Buffer.from(await res.arrayBuffer()), headers: { 'content-type': res.headers.get('content-type') ?? '' } };
}
