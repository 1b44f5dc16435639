// Start-up and the command line, as real processes: bad settings stop the process with a message
// naming the variable; the CLI's exit statuses; and a service that keeps working next to other
// bubble-sandbox processes.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import {
  api, freePort, runCli, startServer, useTempDirs, type ExecResult } from '../helpers/server-process.js';

const tempDir = useTempDirs();

function oneLine(text: string): string[] {
  return text.split('\n').filter((l) => l.trim().length > 0);
}

describe('start-up settings', () => {
  test.each([
    ['BUBBLE_SANDBOX_PORT', 'abc'],
    ['BUBBLE_SANDBOX_MAX_SESSIONS', '0'],
    ['BUBBLE_SANDBOX_LOG_LEVEL', 'chatty'],
    ['BUBBLE_SANDBOX_ALLOWED_EXTENSIONS', 'csv'],
  ])('%s=%s stops start-up with a message naming the variable', async (name, value) => {
    const workspace = tempDir('bs-e2e-badcfg-');
    const r = await runCli(['serve'], {
      env: { BUBBLE_SANDBOX_PORT: String(await freePort()), BUBBLE_SANDBOX_WORKSPACE_DIR: workspace, [name]: value },
      timeoutMs: 15_000,
    });
    expect(r.signal).toBeNull(); // it exited by itself instead of serving until killed
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(name);
  }, 30_000);

  test('a workspace dir created with mode 0700 (as mkdtemp makes it) still runs executions, or start-up refuses it', async () => {
    const workspaceDir = tempDir('bs-e2e-0700-', 0o700);
    expect(fs.statSync(workspaceDir).mode & 0o777).toBe(0o700);
    let server;
    try {
      server = await startServer({ workspaceDir });
    } catch (err) {
      // Refusing to start is acceptable when it says what is wrong.
      expect(String(err)).toMatch(/WORKSPACE_DIR|workspace/i);
      return;
    }
    expect((await api(server.baseUrl, 'POST', '/v1/sessions', { session_id: 'w' })).status).toBe(201);
    const r = await api<ExecResult>(server.baseUrl, 'POST', '/v1/sessions/w/execute', { command: 'echo reached' });
    expect(r.body.stderr).toBe('');
    expect(r.body).toMatchObject({ status: 'ok', stdout: 'reached\n' });
  }, 60_000);
});

describe('a running service next to other bubble-sandbox processes', () => {
  test('executions keep working after a CLI run finishes (shared cgroup parent)', async () => {
    const env = { BUBBLE_SANDBOX_CGROUPS: 'auto' };
    const server = await startServer({ workspaceDir: tempDir('bs-e2e-cg-'), env });
    expect((await api(server.baseUrl, 'POST', '/v1/sessions', { session_id: 'cg' })).status).toBe(201);
    const before = await api<ExecResult & { resources: { memory_peak_bytes: number | null } }>(server.baseUrl, 'POST', '/v1/sessions/cg/execute', { command: 'echo before' });
    expect(before.body).toMatchObject({ status: 'ok', stdout: 'before\n' });

    const check = await runCli(['check'], { env });
    expect(check.code).toBe(0);

    const after = await api<ExecResult>(server.baseUrl, 'POST', '/v1/sessions/cg/execute', { command: 'echo after' });
    expect(after.status).toBe(200);
    expect(after.body).toMatchObject({ status: 'ok', stdout: 'after\n' });
    expect((await api(server.baseUrl, 'GET', '/readyz')).status).toBe(200);
  }, 60_000);
});

describe('command line', () => {
  test('--help exits 0', async () => {
    const r = await runCli(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('usage: bubble-sandbox');
    expect(r.stdout).toContain('exec-script');
  });

  test('check exits 0 and reports the sandbox available', async () => {
    const r = await runCli(['check']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^sandbox: available/m);
  });

  test('list-environments lists bare and pandas-exec', async () => {
    const r = await runCli(['list-environments']);
    expect(r.code).toBe(0);
    const names = r.stdout.split('\n').filter(Boolean).map((l) => l.split('\t')[0]);
    expect(names).toContain('bare');
    expect(names).toContain('pandas-exec');
  });

  test('exec-command prints the output and exits with the program status', async () => {
    const r = await runCli(['exec-command', 'echo hi; exit 3']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('hi\n');
    expect(r.code).toBe(3);
  });

  test('exec-script --timeout exits 124', async () => {
    const started = Date.now();
    const r = await runCli(['exec-script', '--script', 'import time; time.sleep(5)', '--timeout', '1']);
    expect(r.code).toBe(124);
    expect(r.stderr).toContain('timed out');
    expect(Date.now() - started).toBeLessThan(4500);
  });

  test('a program killed by SIGKILL exits 137', async () => {
    const r = await runCli(['exec-command', 'kill -9 $$']);
    expect(r.code).toBe(137);
  });

  test('exec-script --json prints the result as JSON', async () => {
    const r = await runCli(['exec-script', '--json', '--script', 'print(1)']);
    expect(r.code).toBe(0);
    const result = JSON.parse(r.stdout) as ExecResult;
    expect(result).toMatchObject({ status: 'ok', exit_code: 0, stdout: '1\n', stderr: '' });
  });

  test('a script on stdin runs', async () => {
    const r = await runCli(['exec-script'], { input: 'print(6*7)\n' });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('42\n');
    expect(r.code).toBe(0);
  });

  test('execute -- runs argv directly', async () => {
    const r = await runCli(['execute', '--', '/bin/echo', 'a', 'b']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('a b\n');
    expect(r.code).toBe(0);
  });

  test('an unknown environment exits 2 with a one-line error', async () => {
    const r = await runCli(['exec-script', '-e', 'nonexistent', '--script', 'print(1)']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(oneLine(r.stderr)).toHaveLength(1);
    expect(r.stderr).toContain('nonexistent');
  });

  test('a workdir that does not exist exits 2', async () => {
    const r = await runCli(['exec-command', '-w', '/nonexistent', 'ls']);
    expect(r.code).toBe(2);
    expect(oneLine(r.stderr)).toHaveLength(1);
  });

  test('a workdir that is a symbolic link exits 2 and nothing runs', async () => {
    const parent = tempDir('bs-e2e-cli-link-', 0o755);
    const real = path.join(parent, 'real');
    fs.mkdirSync(real, { mode: 0o755 });
    fs.symlinkSync(real, path.join(parent, 'link'));
    const r = await runCli(['exec-command', '-w', path.join(parent, 'link'), 'touch ran.txt']);
    expect(r.code).toBe(2);
    expect(oneLine(r.stderr)).toHaveLength(1);
    expect(r.stderr).toMatch(/symbolic link/);
    expect(fs.readdirSync(real)).toEqual([]);
  });

  test('exec-script -e pandas-exec --script-file reads a CSV from -w and writes there as the dir owner', async () => {
    const parent = tempDir('bs-e2e-cli-pandas-', 0o755);
    const work = path.join(parent, 'work');
    fs.mkdirSync(work, { mode: 0o755 });
    fs.writeFileSync(path.join(work, 'sales.csv'), 'item,qty\napple,3\npear,4\napple,5\n', { mode: 0o644 });
    const owner = 201_234;
    fs.chownSync(work, owner, owner);
    const script = path.join(parent, 'f.py');
    fs.writeFileSync(script, [
      'import pandas as pd',
      "df = pd.read_csv('sales.csv')",
      "totals = df.groupby('item')['qty'].sum()",
      "totals.to_csv('totals.csv')",
      "print(totals.to_dict())",
    ].join('\n'));
    const r = await runCli(['exec-script', '-e', 'pandas-exec', '--script-file', script, '-w', work], { timeoutMs: 60_000 });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe("{'apple': 8, 'pear': 4}\n");
    expect(r.code).toBe(0);
    const out = path.join(work, 'totals.csv');
    expect(fs.readFileSync(out, 'utf8')).toBe('item,qty\napple,8\npear,4\n');
    expect(fs.statSync(out).uid).toBe(owner);
  }, 60_000);
});
