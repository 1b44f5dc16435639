// The helper's own limits on the egress connections it holds (egress_relay.py), with a real
// session network in allowlist mode: a CONNECT tunnel keeps working after the proxy handed the
// upstream over (8 MB each way intact, half-closes passed on), and the helper closes it once no
// byte moved for its idle time; connections over its cap are answered 503. Reached from the host through the helper's ports.sock (connectPort to
// 127.0.0.1:3128 in the namespace); the upstream is an echo server of this test on 127.0.0.1.
import crypto from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import fs from 'node:fs';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createSessionNetwork, PROXY_PORT, type SessionNetwork } from '../../../src/sandbox/network/session-network.js';
import { makeTempDir } from '../../helpers/host-env.js';
import { IS_ROOT, TEST_UID } from '../../helpers/sandbox.js';

const identity = { uid: TEST_UID, gid: TEST_UID };
const logger = pino({ level: 'silent' });

/** Reads from `s` until `done(text)` holds; the text so far. */
function readUntil(s: net.Socket, done: (text: string) => boolean, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => finish(new Error(`timed out; got ${JSON.stringify(text)}`)), timeoutMs);
    const finish = (err: Error | null) => {
      clearTimeout(timer);
      s.off('data', onData);
      s.off('end', onEnd);
      if (err) reject(err);
      else resolve(text);
    };
    const onData = (d: Buffer) => {
      text += d.toString('latin1');
      if (done(text)) finish(null);
    };
    const onEnd = () => (done(text) ? finish(null) : finish(new Error(`ended; got ${JSON.stringify(text)}`)));
    s.on('data', onData);
    s.once('end', onEnd);
    s.resume();
  });
}

describe.skipIf(!IS_ROOT)('the helper\'s egress connections', () => {
  let tmp: string;
  let echo: net.Server;
  let echoPort = 0;
  const networks: SessionNetwork[] = [];
  const sockets: net.Socket[] = [];

  const makeNetwork = async (key: string, limits: { idleSeconds: number; maxConnections: number }) => {
    const n = await createSessionNetwork({
      key, mode: 'allowlist', identity, runDir: path.join(tmp, 'run', key),
      policy: () => ({ allow: [`127.0.0.1:${echoPort}`], deny: [] }), allowPrivate: ['127.0.0.1/32'], logger, egressLimits: limits,
    });
    networks.push(n);
    return n;
  };
  const connect = async (n: SessionNetwork) => {
    const s = await n.connectPort!(PROXY_PORT);
    sockets.push(s);
    return s;
  };

  beforeAll(async () => {
    tmp = makeTempDir('bs-egress-relay-');
    fs.chmodSync(tmp, 0o711);
    echo = net.createServer((s) => s.pipe(s));
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
    echoPort = (echo.address() as net.AddressInfo).port;
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    for (const n of networks) await n.close();
    await new Promise<void>((resolve) => echo.close(() => resolve()));
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('a tunnel carries bytes both ways after the hand-over, and is closed after its idle time without a byte', async () => {
    const n = await makeNetwork('idle', { idleSeconds: 1, maxConnections: 8 });
    const s = await connect(n);
    s.write(`CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\nHost: 127.0.0.1:${echoPort}\r\n\r\n`);
    expect(await readUntil(s, (t) => t.includes('\r\n\r\n'))).toMatch(/^HTTP\/1\.1 200 /);
    for (const word of ['ping', 'pong']) {
      s.write(word);
      expect(await readUntil(s, (t) => t === word)).toBe(word);
    }
    const quietSince = Date.now();
    const closed = new Promise<number>((resolve) => s.once('close', () => resolve(Date.now() - quietSince)));
    s.on('data', () => undefined);
    // The proxy's own idle time is 60 s: only the helper's (1 s here) can close it this soon.
    const after = await Promise.race([closed, new Promise<number>((resolve) => setTimeout(() => resolve(-1), 6_000))]);
    expect(after).toBeGreaterThanOrEqual(900);
    expect(after).toBeLessThan(6_000);
  });

  test('a tunnel carries 8 MB each way intact after the hand-over, and a half-close goes through both ways', async () => {
    const n = await makeNetwork('bulk', { idleSeconds: 60, maxConnections: 8 });
    const s = await connect(n);
    s.write(`CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const head = await readUntil(s, (t) => t.includes('\r\n\r\n'));
    expect(head).toMatch(/^HTTP\/1\.1 200 /);
    expect(head.endsWith('\r\n\r\n')).toBe(true);
    // Random bytes, many times the helper's 1 MiB buffer: any lost, repeated or reordered chunk shows.
    const sent = crypto.randomBytes(8 * 1024 * 1024);
    const back: Buffer[] = [];
    // The echo server ends its side only after our end reached it: EOF here means ours went through
    // the helper, and the echo's came back through it.
    const ended = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no EOF; ${back.reduce((a, b) => a + b.length, 0)} bytes back`)), 20_000);
      s.on('data', (d: Buffer) => back.push(d));
      s.once('end', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    s.end(sent);
    await ended;
    const got = Buffer.concat(back);
    expect(got.length).toBe(sent.length);
    expect(got.equals(sent)).toBe(true);
  });

  test('over its cap of connections the helper answers 503 and closes', async () => {
    const n = await makeNetwork('cap', { idleSeconds: 60, maxConnections: 2 });
    const held = [await connect(n), await connect(n)];
    for (const s of held) {
      s.write(`CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\nHost: x\r\n\r\n`);
      expect(await readUntil(s, (t) => t.includes('\r\n\r\n'))).toMatch(/^HTTP\/1\.1 200 /);
    }
    const third = await connect(n);
    expect(await readUntil(third, () => false).catch((err: Error) => err.message)).toMatch(/^ended; got "HTTP\/1\.1 503 .*maximum of egress connections/s);
    held[0]?.destroy();
    await new Promise((r) => setTimeout(r, 300));
    const again = await connect(n);
    again.write(`CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\nHost: x\r\n\r\n`);
    expect(await readUntil(again, (t) => t.includes('\r\n\r\n'))).toMatch(/^HTTP\/1\.1 200 /);
  });
});
