// Each test proves one isolation property against real bwrap, and fails if it is lost.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { baseEnvironment } from '../../src/sandbox/spawn.js';
import { hostProcessesMatching, waitUntil } from '../helpers/host-processes.js';
import { createSandboxFixture, IS_ROOT, TEST_UID, type SandboxFixture } from '../helpers/sandbox.js';

let f: SandboxFixture;
beforeAll(() => {
  f = createSandboxFixture();
});
afterAll(() => f.dispose());

const py = (source: string) => ({ program: { kind: 'script' as const, source } });
const sh = (command: string) => ({ program: { kind: 'command' as const, command } });

describe('identity', () => {
  test('runs as a non-root uid that is not host root, without capabilities, with no_new_privs', async () => {
    const r = await f.run(py(`
import os
status = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)
print(os.getuid(), os.getgid())
for k in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', 'NoNewPrivs'):
    print(k, status[k].strip())
open('owned.txt', 'w').write('x')
`));
    expect(r.status).toBe('ok');
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe('1000 1000');
    for (const cap of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) {
      expect(lines).toContain(`${cap} 0000000000000000`);
    }
    expect(lines).toContain('NoNewPrivs 1');
    // What the sandbox writes belongs to the unprivileged host uid, never to host root.
    const st = fs.statSync(path.join(f.workspace, 'owned.txt'));
    expect(st.uid).toBe(IS_ROOT ? TEST_UID : process.getuid?.());
  });

  test('seen from the host, every sandbox process runs under the unprivileged uid', async () => {
    const marker = '7.654321';
    const ac = new AbortController();
    const running = f.run({ ...sh(`sleep ${marker} & exec sleep ${marker}`), signal: ac.signal });
    const sleeps = await waitUntil(() => hostProcessesMatching(`sleep\0${marker}`), (found) => found.length >= 2, 2000, 20);
    expect(sleeps.length).toBe(2);
    for (const { uid } of sleeps) expect(uid).toBe(IS_ROOT ? TEST_UID : process.getuid?.());
    expect(hostProcessesMatching('bwrap\0--args').filter((p) => p.uid === 0)).toEqual([]);
    const r = await Promise.race([running, new Promise<null>((res) => setTimeout(() => res(null), 100))]);
    expect(r).toBeNull();
    ac.abort();
    expect((await running).status).toBe('killed');
  }, 15_000);

  test('hostname is sandbox and only the service-set environment is visible', async () => {
    process.env.BUBBLE_SANDBOX_TEST_PARENT_SECRET = 'parent-secret-value';
    try {
      const r = await f.run({ ...sh('hostname; env | sort'), env: { MY_VAR: 'hello' } });
      expect(r.status).toBe('ok');
      const [host, ...env] = r.stdout.trim().split('\n');
      expect(host).toBe('sandbox');
      expect(env).toContain('MY_VAR=hello');
      expect(r.stdout).not.toContain('parent-secret-value');
      const names = env.map((l) => l.split('=')[0]).filter((n) => n !== 'PWD' && n !== 'SHLVL' && n !== '_');
      expect(names.sort()).toEqual(
        ['HOME', 'LANG', 'LOGNAME', 'MPLBACKEND', 'MY_VAR', 'PATH', 'PYTHONDONTWRITEBYTECODE', 'PYTHONPATH', 'PYTHONUNBUFFERED', 'TMPDIR', 'USER'].sort(),
      );
    } finally {
      delete process.env.BUBBLE_SANDBOX_TEST_PARENT_SECRET;
    }
  });
});

describe('filesystem', () => {
  test('host secrets and homes are absent', async () => {
    const r = await f.run(sh('for p in /etc/shadow /root /home /run /sys /var/run/docker.sock /etc/ssh; do [ -e $p ] && echo "present $p"; done; grep -c . /etc/passwd; echo done'));
    expect(r.stdout).not.toContain('present');
    expect(r.stdout).toContain('done');
    expect(r.stdout.split('\n')[0]).toBe('3');
  });

  test('system directories and the root are read-only; workspace and /tmp are writable', async () => {
    const r = await f.run(sh('for p in /usr/x /etc/x /x /bin/x /sandbox/x /opt/x; do touch $p 2>/dev/null && echo "wrote $p"; done; touch /tmp/t && echo tmp-ok; touch /workspace/w && echo ws-ok'));
    expect(r.stdout).not.toContain('wrote');
    expect(r.stdout).toContain('tmp-ok');
    expect(r.stdout).toContain('ws-ok');
    expect(fs.existsSync(path.join(f.workspace, 'w'))).toBe(true);
  });

  test('the working directory is /workspace', async () => {
    const r = await f.run(sh('pwd'));
    expect(r.stdout).toBe('/workspace\n');
  });

  test('/tmp is private to one execution and capped in size', async () => {
    const first = await f.run(sh('echo secret > /tmp/left-behind'));
    expect(first.status).toBe('ok');
    const second = await f.run(sh('ls /tmp; dd if=/dev/zero of=/tmp/big bs=1M count=100 2>&1'));
    expect(second.stdout).not.toContain('left-behind');
    expect(second.stdout).toMatch(/No space left on device/);
  });

  test('host-describing /proc entries read as empty and refuse writes', async () => {
    // The entries container runtimes mask; which exist depends on the kernel.
    const names = ['cmdline', 'kcore', 'keys', 'timer_list', 'timer_stats', 'sched_debug', 'latency_stats', 'sysrq-trigger', 'acpi', 'scsi', 'asound'];
    const onHost = names.filter((n) => fs.existsSync(`/proc/${n}`));
    expect(onHost).toContain('cmdline');
    expect(fs.readFileSync('/proc/cmdline', 'utf8').length).toBeGreaterThan(0);
    const r = await f.run(py(`
import errno, json, os
def err(fn):
    try:
        return fn()
    except OSError as e:
        return errno.errorcode[e.errno]
def read(p):
    if os.path.isdir(p):
        return len(os.listdir(p))
    with open(p, 'rb') as f:
        return len(f.read())
def write(p):
    os.close(os.open(p + '/x' if os.path.isdir(p) else p, os.O_WRONLY | (os.O_CREAT if os.path.isdir(p) else 0), 0o600))
    return 'ok'
print(json.dumps({n: [err(lambda: read('/proc/' + n)), err(lambda: write('/proc/' + n))] for n in ${JSON.stringify(names)} if os.path.lexists('/proc/' + n)}))
`));
    expect(r.status, r.stderr).toBe('ok');
    const inside = JSON.parse(r.stdout) as Record<string, [number | string, string]>;
    expect(Object.keys(inside).sort()).toEqual([...onHost].sort());
    for (const [name, [read, write]] of Object.entries(inside)) {
      expect(read, `/proc/${name} read`).toBe(0);
      expect(['EACCES', 'EROFS', 'EPERM'], `/proc/${name} write: ${write}`).toContain(write);
    }
    const cat = await f.run(sh('cat /proc/cmdline | wc -c; echo x > /proc/cmdline && echo wrote'));
    expect(cat.stdout).toBe('0\n');
  });

  test('a workspace swapped for a symlink fails closed', async () => {
    const other = createSandboxFixture({ layout: f.layout });
    const target = other.workspace;
    const link = `${target}-link`;
    fs.symlinkSync('/etc', link);
    await expect(other.runner.run({ ...(await baseRequest()), workspaceDir: link })).rejects.toThrow(/ELOOP|ENOTDIR/);
    fs.unlinkSync(link);
  });
});

async function baseRequest() {
  return {
    environment: null,
    workspaceDir: f.workspace,
    volumes: [],
    program: { kind: 'command' as const, command: 'ls /workspace' },
    timeoutMs: 5000,
    maxOutputChars: 1000,
    limits: (await import('../helpers/sandbox.js')).DEFAULT_LIMITS,
    identity: IS_ROOT ? { uid: TEST_UID, gid: TEST_UID } : null,
  };
}

describe('processes and descriptors', () => {
  test('own PID namespace: pid 1 is bwrap and no host process is visible', async () => {
    const r = await f.run(sh('echo $$; ls /proc | grep -c "^[0-9]"; cat /proc/1/comm'));
    const [pid, count, comm] = r.stdout.trim().split('\n');
    expect(Number(pid)).toBeLessThan(10);
    expect(Number(count)).toBeLessThan(6);
    expect(comm).toBe('bwrap');
  });

  test('/proc/1/cmdline carries no options and no environment values', async () => {
    const r = await f.run({ ...py("print(open('/proc/1/cmdline','rb').read().decode().replace(chr(0),' '))"), env: { API_TOKEN: 'tok-123456789' } });
    expect(r.stdout).toContain('--args 3 --');
    expect(r.stdout).not.toContain('tok-123456789');
    expect(r.stdout).not.toContain('--bind');
    expect(r.stdout).not.toContain('--setenv');
    expect(r.stdout).not.toContain(f.workspace);
  });

  test('no /proc/*/environ inside holds a variable the sandbox was not given, bwrap\'s (pid 1) included', async () => {
    const marker = 'environ-marker-value';
    process.env.BUBBLE_SANDBOX_TEST_ENVIRON_MARKER = marker;
    try {
      const r = await f.run({
        ...py(`
import json, os
seen = {}
for pid in (p for p in os.listdir('/proc') if p.isdigit()):
    try:
        seen[pid] = [v.decode() for v in open('/proc/%s/environ' % pid, 'rb').read().split(b'\\0') if v]
    except OSError:
        pass
print(json.dumps({'self': str(os.getpid()), 'seen': seen}))
`),
        env: { MY_VAR: 'hello' },
      });
      expect(r.status, r.stderr).toBe('ok');
      const { self, seen } = JSON.parse(r.stdout) as { self: string; seen: Record<string, string[]> };
      expect(r.stdout).not.toContain(marker);
      expect(r.stdout).not.toContain(process.cwd());
      // bwrap is started with an empty environment; it hands the program only the sandbox's.
      expect(seen['1']).toEqual([]);
      const expected = [...Object.entries(baseEnvironment(null)).map(([k, v]) => `${k}=${v}`), 'MY_VAR=hello', 'PWD=/workspace'];
      expect([...(seen[self] ?? [])].sort()).toEqual(expected.sort());
      for (const [pid, entries] of Object.entries(seen)) {
        expect(entries.filter((e) => !expected.includes(e)), `pid ${pid}`).toEqual([]);
      }
    } finally {
      delete process.env.BUBBLE_SANDBOX_TEST_ENVIRON_MARKER;
    }
  });

  test('only descriptors 0, 1 and 2 are open inside, even when the service inherited others', () => {
    // A child Node process that inherits an extra descriptor (not close-on-exec) creates a runner:
    // the descriptor must not reach the sandbox.
    const script = `
      import { createSandboxFixture } from ${JSON.stringify(path.resolve('test/helpers/sandbox.ts'))};
      const f = createSandboxFixture();
      // argv, not a script: a script's launcher holds one pipe of ours on purpose (its error report).
      const r = await f.run({ program: { kind: 'argv', argv: ['python3', '-c', "import os\\nprint(sorted(int(x) for x in os.listdir('/proc/self/fd') if os.path.exists('/proc/self/fd/' + x)))"] } });
      f.dispose();
      process.stdout.write(r.stdout);
    `;
    const fd = fs.openSync('/dev/null', 'r');
    try {
      const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
        stdio: ['ignore', 'pipe', 'inherit', fd, fd, fd, fd, fd, fd, fd, fd, fd],
        encoding: 'utf8',
      });
      expect(out.trim()).toBe('[0, 1, 2]');
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('network', () => {
  test('no network but loopback; the host loopback (our own port) is unreachable', async () => {
    const server = net.createServer((s) => s.end('host-service'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const r = await f.run(py(`
import socket
print(sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]))
for host in ('127.0.0.1', '10.0.2.2', '1.1.1.1'):
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect((host, ${port})); print('connected', host, s.recv(100))
    except OSError as e:
        print('refused', host, e.errno)
`));
      expect(r.stdout).toContain("['lo']");
      expect(r.stdout).not.toContain('connected');
      expect(r.stdout).not.toContain('host-service');
      expect(r.stdout).toContain('refused 127.0.0.1');
    } finally {
      server.close();
    }
  });
});
