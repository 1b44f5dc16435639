// The command line's --network, --allow and --deny: bad values are a one-line usage error with
// nothing run, and a run with allowlist gets a network of its own (proxy variables, the policy
// enforced, nothing left after). Real processes of bin/bubble-sandbox.js (dist/), real sandboxes;
// traffic only to a server of this test on 127.0.0.1.
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { hostProcessesMatching } from '../helpers/host-processes.js';
import { makeTempDir, removeTempDir, runCli } from '../helpers/server-process.js';

let server: http.Server;
let port = 0;
let lockDir = '';
beforeAll(async () => {
  lockDir = makeTempDir('bs-cli-net-locks-', 0o755);
  server = http.createServer((_req, res) => res.end('hello from the host'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  removeTempDir(lockDir);
});

const env = () => ({ BUBBLE_SANDBOX_UID_LOCK_DIR: lockDir, BUBBLE_SANDBOX_EGRESS_ALLOW_PRIVATE_CIDRS: '["127.0.0.1/32"]' });

/** GET through the proxy (NO_PROXY dropped: the host's 127.0.0.1 is reached only through it). */
const FETCH = (url: string) => [
  'import os, urllib.request, urllib.error',
  "os.environ.pop('NO_PROXY', None); os.environ.pop('no_proxy', None)",
  'try:',
  `    print(urllib.request.urlopen(${JSON.stringify(url)}, timeout=10).status)`,
  'except urllib.error.HTTPError as e:',
  '    print(e.code)',
  'except urllib.error.URLError as e:',
  "    print('refused' if isinstance(e.reason, ConnectionRefusedError) else type(e.reason).__name__)",
].join('\n');

describe('bad network options', () => {
  test.each([
    [['--network', 'internet'], /--network must be none, allowlist or outbound/],
    [['--allow', 'pypi.org'], /--allow and --deny need --network allowlist/],
    [['--network', 'outbound', '--deny', 'pypi.org'], /--allow and --deny need --network allowlist/],
    [['--network', 'allowlist', '--allow', 'https://pypi.org'], /--allow 'https:\/\/pypi.org': .*scheme/],
    [['--network', 'allowlist', '--deny', 'a.*.org'], /--deny 'a\.\*\.org': .*wildcard/],
  ])('%j is a one-line usage error, exit 2, nothing run', async (opts, message) => {
    const r = await runCli(['exec-command', ...opts, 'echo ran'], { env: env() });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(message);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });
});

describe('--network allowlist', () => {
  test('an allowed host answers through the proxy; without the pattern (or denied) 403; nothing is left after the run', async () => {
    const url = `http://127.0.0.1:${port}/`;
    const allowed = await runCli(['exec-script', '--network', 'allowlist', '--allow', `127.0.0.1:${port}`, '-s', FETCH(url)], { env: env() });
    expect(allowed.stdout, allowed.stderr).toBe('200\n');
    const closed = await runCli(['exec-script', '--network', 'allowlist', '-s', FETCH(url)], { env: env() });
    expect(closed.stdout, closed.stderr).toBe('403\n');
    const denied = await runCli(['exec-script', '--network', 'allowlist', '--allow', `127.0.0.1:${port}`, '--deny', '127.0.0.1', '-s', FETCH(url)], { env: env() });
    expect(denied.stdout, denied.stderr).toBe('403\n');
    // The default (none) has no proxy and its own loopback only.
    const none = await runCli(['exec-script', '-s', FETCH(url)], { env: env() });
    expect(none.stdout, none.stderr).toBe('refused\n');
    expect(fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('bubble-sandbox-net-'))).toEqual([]);
    expect(hostProcessesMatching('bubble-sandbox-net-')).toEqual([]);
  });
});
