// For the pty and ports tests: a listening test app (real sockets on 127.0.0.1), processes started
// through the processes route, and small ws client helpers.
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import WebSocket from 'ws';
import { createTestApp, type TestApp } from './app.js';
import { sleep } from './host-env.js';

export const KEY = 'ws-test-key-0123456789abcdef';
export const AUTH = { authorization: `Bearer ${KEY}` };
export const PORT_SERVER = fs.readFileSync(path.join(import.meta.dirname, '..', 'server', 'fixtures', 'port-server.py'), 'utf8');

export interface Listening extends TestApp {
  base: string;
  wsBase: string;
}

export async function listeningApp(settings: Record<string, string> = {}): Promise<Listening> {
  const t = await createTestApp({ API_KEY: KEY, ...settings });
  await t.app.listen({ host: '127.0.0.1', port: 0 });
  const address = t.app.server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return { ...t, base: `http://127.0.0.1:${address.port}`, wsBase: `ws://127.0.0.1:${address.port}` };
}

export async function startProcess(t: TestApp, sessionId: string, body: Record<string, unknown>): Promise<{ pid: string; status: string }> {
  const res = await t.app.inject({ method: 'POST', url: `/v1/sessions/${sessionId}/processes`, headers: AUTH, payload: body });
  expect(res.statusCode, res.body).toBe(201);
  return res.json();
}

export async function processStatus(t: TestApp, sessionId: string, pid: string): Promise<string> {
  const res = await t.app.inject({ method: 'GET', url: `/v1/sessions/${sessionId}/processes/${pid}`, headers: AUTH });
  expect(res.statusCode, res.body).toBe(200);
  return res.json<{ status: string }>().status;
}

/** Opens a socket; resolves when open, rejects with `status <n>` when the server refuses the handshake. */
export function openWs(url: string, opts: WebSocket.ClientOptions = {}, onMessage?: (data: Buffer, isBinary: boolean) => void): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, opts);
    // Frames that came with the handshake are emitted in the same tick as 'open': listen from the start.
    if (onMessage) ws.on('message', (d: Buffer, isBinary) => onMessage(d, isBinary));
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => {
      reject(new Error(`status ${res.statusCode}`));
      res.resume();
      ws.terminate();
    });
    ws.once('error', reject);
  });
}

export function closed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
}

export async function until<T>(what: string, fn: () => T | undefined | false, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}
