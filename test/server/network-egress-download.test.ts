// Large downloads through the whole allowlist path, with the real sandbox through app.inject:
// curl in the sandbox → 127.0.0.1:3128 in the session's namespace → the helper → the egress proxy
// (decision) → a server of this test on the host's 127.0.0.1. After the decision the proxy hands
// the upstream socket to the helper, which splices it to the sandbox's connection: 20 MB arrive
// intact both in absolute form and inside a CONNECT tunnel, the helper is seen holding the upstream
// connection, and deleting the session mid-transfer ends that connection.
// Traffic goes only to 127.0.0.1 (allowed by EGRESS_ALLOW_PRIVATE_CIDRS) and the service's namespaces.
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useTestApp } from '../helpers/app.js';
import { hostProcessesMatching, waitUntil } from '../helpers/host-processes.js';
import { createSession, execute } from '../helpers/http.js';

const t = useTestApp({ EGRESS_ALLOW_PRIVATE_CIDRS: '["127.0.0.1/32"]' });

const BIG = randomBytes(20 * 1024 * 1024);
const BIG_SHA256 = createHash('sha256').update(BIG).digest('hex');

let server: http.Server;
let port = 0;
/** The connections of GET /slow: an endless answer, 64 KiB every 5 ms, until the peer goes. */
const slow: Array<{ socket: Socket; sent: number; closed: boolean }> = [];

beforeAll(async () => {
  server = http.createServer((req, res) => {
    if (req.url === '/big') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BIG.length });
      return void res.end(BIG);
    }
    const entry = { socket: req.socket, sent: 0, closed: false };
    slow.push(entry);
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    const chunk = Buffer.alloc(64 * 1024, 7);
    const timer = setInterval(() => {
      if (res.writableNeedDrain) return;
      res.write(chunk);
      entry.sent += chunk.length;
    }, 5);
    req.socket.once('close', () => {
      entry.closed = true;
      clearInterval(timer);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

const runDirOf = (key: string) => path.join(t.workspaceDir, 'run', 'net', createHash('sha256').update(key).digest('hex').slice(0, 16));

/** The socket inode of the host's TCP connection from local port `from` to port `to` (both on 127.0.0.1). */
function tcpInode(from: number, to: number): string | null {
  const hex = (p: number) => p.toString(16).toUpperCase().padStart(4, '0');
  for (const line of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1]?.endsWith(`:${hex(from)}`) && f[2]?.endsWith(`:${hex(to)}`)) return f[9] ?? null;
  }
  return null;
}

/** Socket inodes among a process's descriptors. */
function socketInodes(pid: number): string[] {
  const found: string[] = [];
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m?.[1] !== undefined) found.push(m[1]);
    } catch {
      // closed meanwhile
    }
  }
  return found;
}

describe('allowlist downloads through the helper', () => {
  it('20 MB arrive intact with curl, in absolute form and inside a CONNECT tunnel', async () => {
    const target = `127.0.0.1:${port}`;
    await createSession(t.app, { session_id: 'big', network: { mode: 'allowlist', allow: [target] } });
    for (const tunnel of ['', '--proxytunnel ']) {
      const r = await execute(t.app, 'big', {
        command: `env -u NO_PROXY -u no_proxy curl -sS ${tunnel}-o /tmp/big http://${target}/big && stat -c %s /tmp/big && sha256sum < /tmp/big`,
        timeout_seconds: 60,
      });
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe(`${BIG.length}\n${BIG_SHA256}  -\n`);
    }
  }, 120_000);

  it('the helper holds the upstream connection while bytes flow; deleting the session ends the transfer', async () => {
    const target = `127.0.0.1:${port}`;
    await createSession(t.app, { session_id: 'cut', network: { mode: 'allowlist', allow: [target] } });
    const before = slow.length;
    const running = execute(t.app, 'cut', { command: `env -u NO_PROXY -u no_proxy curl -sS -o /dev/null --max-time 60 http://${target}/slow`, timeout_seconds: 60 });
    const entry = await waitUntil(() => slow[before], (e) => e !== undefined && e.sent > 2 * 1024 * 1024, 20_000);
    expect(entry?.sent).toBeGreaterThan(2 * 1024 * 1024);
    // The connection to this server is one of the helper's descriptors (the proxy handed it over).
    const inode = tcpInode(entry?.socket.remotePort ?? 0, port);
    expect(inode).not.toBeNull();
    const helpers = hostProcessesMatching(runDirOf('cut'));
    expect(helpers).toHaveLength(1);
    expect(socketInodes(helpers[0]?.pid ?? 0)).toContain(inode);

    expect((await t.app.inject({ method: 'DELETE', url: '/v1/sessions/cut' })).statusCode).toBe(204);
    const ended = await waitUntil(() => entry?.closed, (c) => c === true, 5_000);
    expect(ended).toBe(true);
    await running.catch(() => undefined);
    expect(hostProcessesMatching(runDirOf('cut'))).toEqual([]);
  }, 60_000);
});
