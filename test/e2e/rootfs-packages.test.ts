// A writable-root session installs packages the way an agent would: `pip install` from a package
// index and `apt-get install` from an apt repository, both served on 127.0.0.1 by this test and
// reached through the allowlist egress proxy (EGRESS_ALLOW_PRIVATE_CIDRS lets it connect there).
// The root filesystem is the minimal variant of scripts/build-rootfs.sh, which CI builds once per
// run (.ci/run sets TEST_ROOTFS_ARCHIVE); elsewhere the test runs when that variable names one.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { PROJECT_ROOT } from '../helpers/host-env.js';
import { api, runCli, startServer, useWorkspaceDir, type ExecResult } from '../helpers/server-process.js';

const archive = process.env.TEST_ROOTFS_ARCHIVE;
if (process.env.CI === 'true' && (archive === undefined || !fs.existsSync(archive))) {
  throw new Error('CI must build the test rootfs (.ci/run sets TEST_ROOTFS_ARCHIVE): refusing to skip the package tests');
}
const workspace = useWorkspaceDir('bs-e2e-rootfs-pkg-', 'all');

describe.skipIf(archive === undefined || process.getuid?.() !== 0)('packages in a writable root', () => {
  let server: http.Server;
  let port = 0;
  beforeAll(async () => {
    const repo = path.join(workspace.path, 'repo');
    expect(spawnSync('/usr/bin/python3', [path.join(PROJECT_ROOT, 'test/fixtures/rootfs/make_package_repos.py'), repo]).status).toBe(0);
    server = http.createServer((req, res) => {
      const rel = decodeURIComponent((req.url ?? '/').split('?')[0] ?? '/');
      const file = path.join(repo, path.normalize(rel));
      const target = fs.existsSync(file) && fs.statSync(file).isDirectory() ? path.join(file, 'index.html') : file;
      if (!target.startsWith(repo) || !fs.existsSync(target)) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-length': fs.statSync(target).size, 'content-type': target.endsWith('.html') ? 'text/html' : 'application/octet-stream' });
      fs.createReadStream(target).pipe(res);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
    const r = await runCli(['rootfs', 'import', 'debian-min', archive as string], { env: { BUBBLE_SANDBOX_WORKSPACE_DIR: workspace.path }, timeoutMs: 300_000 });
    expect(r.code, r.stderr).toBe(0);
  }, 320_000);
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  test('pip install and apt-get install through the allowlist proxy, kept for the session', async () => {
    const svc = await startServer({ workspaceDir: workspace.path, env: { BUBBLE_SANDBOX_EGRESS_ALLOW_PRIVATE_CIDRS: '["127.0.0.1/32"]' } });
    const created = await api(svc.baseUrl, 'POST', '/v1/sessions', {
      session_id: 'pkg', environment: 'debian-min', writable_root: true, network: { mode: 'allowlist', allow: [`127.0.0.1:${port}`] },
    });
    expect(created.status, created.text).toBe(201);
    // NO_PROXY names 127.0.0.1 (the sandbox's own loopback); the index here is the host's, so the
    // package managers are told to go through the proxy for it.
    const exec = (command: string) => api<ExecResult>(svc.baseUrl, 'POST', '/v1/sessions/pkg/execute', { command: `export NO_PROXY= no_proxy=; ${command}`, timeout_seconds: 120 });

    const pip = await exec(`pip install --no-cache-dir --break-system-packages --index-url http://127.0.0.1:${port}/simple bubble-probe 2>&1`);
    expect(pip.body.exit_code, JSON.stringify(pip.body)).toBe(0);
    const apt = await exec([
      `echo 'deb [trusted=yes] http://127.0.0.1:${port}/apt ./' > /etc/apt/sources.list.d/local.list`,
      'apt-get -q -o Dir::Etc::SourceList=/etc/apt/sources.list.d/local.list -o Dir::Etc::SourceParts=- update 2>&1',
      'apt-get -q -y -o Dir::Etc::SourceList=/etc/apt/sources.list.d/local.list -o Dir::Etc::SourceParts=- install bubble-probe-deb 2>&1',
    ].join(' && '));
    expect(apt.body.exit_code, JSON.stringify(apt.body)).toBe(0);

    // The next execution (a script, with the rootfs's own python3) sees both.
    const use = await api<ExecResult>(svc.baseUrl, 'POST', '/v1/sessions/pkg/execute', {
      script: 'import bubble_probe, socket\nprint(bubble_probe.VALUE)\nprint(open("/usr/share/bubble-probe/hello").read(), end="")\nprint(socket.gethostbyname("localhost"))',
    });
    expect(use.body).toMatchObject({ status: 'ok', stdout: '42\nhello from a deb\n127.0.0.1\n' });
    const code = await api<{ stdout: string }>(svc.baseUrl, 'POST', '/v1/sessions/pkg/run_code', { code: 'import bubble_probe; print(bubble_probe.VALUE)' });
    expect(code.body.stdout).toBe('42\n');
    // Another session of the same rootfs has neither.
    expect((await api(svc.baseUrl, 'POST', '/v1/sessions', { session_id: 'clean', environment: 'debian-min', writable_root: true })).status).toBe(201);
    const clean = await api<ExecResult>(svc.baseUrl, 'POST', '/v1/sessions/clean/execute', { command: 'ls /usr/share/bubble-probe; python3 -c "import bubble_probe"' });
    expect(clean.body.exit_code).not.toBe(0);
    await svc.stop();
  }, 300_000);
});
