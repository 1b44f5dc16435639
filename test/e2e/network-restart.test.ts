// A session's network policy survives a restart of the real service (the record is the source of
// truth), the namespace is made anew at the next execution, and the restored policy is the one
// enforced. Traffic only to a server of this test on 127.0.0.1.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { api, startServer, useWorkspaceDir, type ExecResult } from '../helpers/server-process.js';

interface SessionInfo { session_id: string; network: { mode: string; allow?: string[]; deny?: string[] } }

const workspaceDir = useWorkspaceDir('bs-e2e-net-restart-');
let hostServer: http.Server;
let port = 0;
beforeAll(async () => {
  hostServer = http.createServer((req, res) => res.end(`hello ${req.url ?? ''}`));
  await new Promise<void>((resolve) => hostServer.listen(0, '127.0.0.1', resolve));
  port = (hostServer.address() as AddressInfo).port;
});
afterAll(async () => {
  await new Promise<void>((resolve) => hostServer.close(() => resolve()));
});

const fetchScript = (url: string) => [
  'import os, urllib.request, urllib.error',
  "os.environ.pop('NO_PROXY', None); os.environ.pop('no_proxy', None)",
  'try:',
  `    r = urllib.request.urlopen(${JSON.stringify(url)}, timeout=10); print(r.status, r.read().decode())`,
  'except urllib.error.HTTPError as e:',
  '    print(e.code)',
].join('\n');

describe('network policy across a restart', () => {
  // SIGKILL: no shutdown flush can write the record; only what PATCH wrote before answering is there.
  test('GET shows the patched policy after a crash and restart, and the next execution works under it', async () => {
    const env = { BUBBLE_SANDBOX_EGRESS_ALLOW_PRIVATE_CIDRS: '["127.0.0.1/32"]' };
    const target = `127.0.0.1:${port}`;
    const first = await startServer({ workspaceDir: workspaceDir.path, env });
    expect((await api<SessionInfo>(first.baseUrl, 'POST', '/v1/sessions', { session_id: 'net-keep', network: { mode: 'allowlist', allow: ['pypi.org'] } })).status).toBe(201);
    const before = await api<ExecResult>(first.baseUrl, 'POST', '/v1/sessions/net-keep/execute', { script: fetchScript(`http://${target}/a`) });
    expect(before.body.stdout).toBe('403\n');
    const patched = await api<SessionInfo>(first.baseUrl, 'PATCH', '/v1/sessions/net-keep/network', { allow: [target, 'pypi.org'], deny: ['evil.pypi.org'] });
    expect(patched.status).toBe(200);
    expect((await api<ExecResult>(first.baseUrl, 'POST', '/v1/sessions/net-keep/execute', { script: fetchScript(`http://${target}/b`) })).body.stdout).toBe('200 hello /b\n');
    expect(await first.stop('SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });

    const second = await startServer({ workspaceDir: workspaceDir.path, env });
    const got = await api<SessionInfo>(second.baseUrl, 'GET', '/v1/sessions/net-keep');
    expect(got.body.network).toEqual({ mode: 'allowlist', allow: [target, 'pypi.org'], deny: ['evil.pypi.org'] });
    const after = await api<ExecResult>(second.baseUrl, 'POST', '/v1/sessions/net-keep/execute', { script: fetchScript(`http://${target}/c`) });
    expect(after.status).toBe(200);
    expect(after.body.stdout, JSON.stringify(after.body)).toBe('200 hello /c\n');
    expect(await second.stop('SIGTERM')).toEqual({ code: 0, signal: null });
  });
});
