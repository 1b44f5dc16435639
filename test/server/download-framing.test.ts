// A download sends exactly the Content-Length it announced, or drops the connection, even while
// code in the sandbox grows and shrinks the file: otherwise a keep-alive client reads bytes the
// sandbox chose as the next response on the connection (a forged answer). Real sockets on
// 127.0.0.1, because app.inject cannot show a framing error; the session's sandbox is real.
import fs from 'node:fs';
import path from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exactLengthStream } from '../../src/workspace/exact-length-read.js';
import { createTestApp, type TestApp } from '../helpers/app.js';
import { PROJECT_ROOT, makeTempDir, removeTempDir } from '../helpers/host-env.js';
import { createSession } from '../helpers/http.js';
import { getRequest, pipelined, type RawExchange } from '../helpers/raw-http.js';

const HEALTHZ_BODY = '{"status":"ok"}';
const BIG = 64 * 1024 * 1024; // larger than every socket buffer between server and client

function portOf(app: FastifyInstance): number {
  return (app.server.address() as AddressInfo).port;
}

/** The pipelined /healthz after a download, answered by the service itself. */
function realHealthz(ex: RawExchange, index: number): boolean {
  const res = ex.responses[index];
  return res !== undefined && res.status === 200 && res.body.toString('latin1') === HEALTHZ_BODY;
}

/** Why a "download, then /healthz" exchange is wrong, or null when it is framed correctly. */
function framingFault(ex: RawExchange): string | null {
  const follow = ex.responses[1];
  if (follow !== undefined && !realHealthz(ex, 1)) return `forged follow-up: ${JSON.stringify(follow.body.toString('latin1').slice(0, 80))}`;
  if (ex.garbage !== null) return `garbage where a response should start: ${JSON.stringify(ex.garbage.slice(0, 80))}`;
  if (ex.timedOut) return 'hung: the body was shorter than announced and swallowed the next response';
  const first = ex.responses[0];
  if (ex.closedEarly) {
    // Allowed only as: the download's headers, fewer body bytes than announced, then the close.
    if (first === undefined && ex.incomplete !== null && ex.incomplete.received < ex.incomplete.contentLength) return null;
    return `closed early after ${ex.responses.length} complete responses`;
  }
  if (first === undefined || (first.status !== 200 && first.status !== 500)) return `download answered ${String(first?.status)}`;
  if (!realHealthz(ex, 1)) return 'no follow-up answer';
  return null;
}

describe('Fastify with a stream payload that fails (the behaviour the download relies on)', () => {
  let app: FastifyInstance;
  let dir = '';
  let file = '';
  let mutate: () => void = () => undefined;

  beforeAll(async () => {
    dir = makeTempDir('bs-framing-');
    file = path.join(dir, 'f.bin');
    app = Fastify({ logger: false });
    app.get('/healthz', async () => ({ status: 'ok' }));
    app.get('/file', async (_request, reply) => {
      const handle = await fs.promises.open(file, 'r');
      const size = (await handle.stat()).size;
      mutate();
      void reply.header('content-type', 'application/octet-stream').header('content-length', String(size));
      return reply.send(exactLengthStream(handle, size));
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
  });
  afterAll(async () => {
    await app.close();
    removeTempDir(dir);
  });

  it('destroys the connection when the file shrinks after the headers went out', async () => {
    fs.writeFileSync(file, '');
    fs.truncateSync(file, BIG);
    mutate = () => undefined;
    const ex = await pipelined(portOf(app), [getRequest('/file'), getRequest('/healthz')], {
      onFirstBytes: (socket) => {
        socket.pause();
        fs.truncateSync(file, 1024 * 1024);
        setTimeout(() => socket.resume(), 50);
      },
    });
    expect(ex.timedOut).toBe(false);
    expect(ex.closedEarly).toBe(true);
    expect(ex.responses).toEqual([]);
    expect(ex.incomplete?.status).toBe(200);
    expect(ex.incomplete?.contentLength).toBe(BIG);
    expect(ex.incomplete?.received).toBeLessThan(BIG);
    expect(framingFault(ex)).toBeNull();
  });

  it('answers a well-framed 500, and the next request, when the file is emptied before the first byte', async () => {
    fs.writeFileSync(file, 'x'.repeat(4096));
    mutate = () => fs.truncateSync(file, 0);
    const ex = await pipelined(portOf(app), [getRequest('/file'), getRequest('/healthz')]);
    expect(ex.closedEarly).toBe(false);
    expect(ex.responses[0]?.status).toBe(500);
    expect(JSON.parse(ex.responses[0]?.body.toString() ?? '')).toMatchObject({ statusCode: 500 });
    expect(realHealthz(ex, 1)).toBe(true);
  });

  it('sends exactly the announced bytes when the file grows after the size was taken', async () => {
    fs.writeFileSync(file, 'a'.repeat(100_000));
    mutate = () => fs.appendFileSync(file, 'HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged');
    const ex = await pipelined(portOf(app), [getRequest('/file'), getRequest('/healthz')]);
    expect(ex.responses[0]?.body.toString()).toBe('a'.repeat(100_000));
    expect(realHealthz(ex, 1)).toBe(true);
    expect(ex.garbage).toBeNull();
  });
});

describe('GET /v1/sessions/{id}/files/{path} while the sandbox changes the file', () => {
  let t: TestApp;
  let port = 0;

  beforeAll(async () => {
    t = await createTestApp({ KERNEL_IDLE_TIMEOUT_SECONDS: '300' });
    await t.app.listen({ host: '127.0.0.1', port: 0 });
    port = portOf(t.app);
  });
  afterAll(async () => {
    await t.close();
  });

  async function runCode(id: string, code: string): Promise<void> {
    const res = await t.app.inject({ method: 'POST', url: `/v1/sessions/${id}/run_code`, payload: { code, timeout_seconds: 30 } });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json<{ status: string }>().status, res.body).toBe('ok');
  }

  it('never lets a keep-alive client read sandbox bytes as the next response', async () => {
    const { session_id: id } = await createSession(t.app, {});
    const writer = fs.readFileSync(path.join(PROJECT_ROOT, 'test/fixtures/file-race/grow-shrink-writer.py'), 'utf8');
    await runCode(id, writer);
    const requests = [getRequest(`/v1/sessions/${id}/files/race.bin`), getRequest('/healthz')];

    const faults: string[] = [];
    const lengths = new Set<string>();
    let exchanges = 0;
    let cut = 0;
    const deadline = Date.now() + 25_000;
    while (exchanges < 320 && Date.now() < deadline) {
      const batch = await Promise.all(Array.from({ length: 8 }, () => pipelined(port, requests, { timeoutMs: 2000 })));
      for (const ex of batch) {
        exchanges++;
        const fault = framingFault(ex);
        if (fault !== null) faults.push(fault);
        if (ex.closedEarly && fault === null) cut++;
        const announced = ex.responses[0]?.headers['content-length'] ?? ex.incomplete?.contentLength;
        if (announced !== undefined) lengths.add(String(announced));
      }
    }
    await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${id}?clear_data=true` });

    const tally = new Map<string, number>();
    for (const f of faults) tally.set(f.split(':')[0] ?? f, (tally.get(f.split(':')[0] ?? f) ?? 0) + 1);
    const summary = [...tally].map(([kind, n]) => `${n} ${kind}`).join(', ');
    expect(faults, `${faults.length} of ${exchanges} connections mis-framed (${summary}; ${cut} cut cleanly), e.g. ${faults.slice(0, 3).join(' | ')}`).toEqual([]);
    // The writer really ran (the downloads saw the file at many sizes), and follow-ups were checked.
    expect(exchanges - cut).toBeGreaterThan(0);
    expect(lengths.size, `sizes seen: ${[...lengths].join(', ')}`).toBeGreaterThan(5);
  }, 90_000);

  it('drops the connection when the sandbox shrinks the file in the middle of a download', async () => {
    const { session_id: id } = await createSession(t.app, {});
    await runCode(id, `import os\nwith open("big.bin", "wb") as f:\n    f.truncate(${BIG})`);
    let shrunk: Promise<void> = Promise.resolve();
    const ex = await pipelined(port, [getRequest(`/v1/sessions/${id}/files/big.bin`), getRequest('/healthz')], {
      timeoutMs: 10_000,
      onFirstBytes: (socket) => {
        socket.pause();
        shrunk = runCode(id, 'os.truncate("big.bin", 1 << 20)').finally(() => socket.resume());
      },
    });
    await shrunk;
    await t.app.inject({ method: 'DELETE', url: `/v1/sessions/${id}?clear_data=true` });

    expect(ex.timedOut, 'the response hung: the body was short and swallowed the next answer').toBe(false);
    expect(ex.closedEarly).toBe(true);
    expect(ex.incomplete?.status).toBe(200);
    expect(ex.incomplete?.contentLength).toBe(BIG);
    expect(ex.incomplete?.received).toBeLessThan(BIG);
    expect(ex.responses).toEqual([]);
  }, 60_000);
});
