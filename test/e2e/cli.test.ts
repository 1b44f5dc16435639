// The command line as integrators use it (issue 11): from any directory, --version, the short
// flags, execute-python, agent mode, and a workdir the sandbox user cannot enter. Real processes
// of bin/bubble-sandbox.js (the built dist/), real sandboxes.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { BIN, cleanEnv, makeTempDir, PROJECT_ROOT, removeTempDir } from '../helpers/host-env.js';

const IS_ROOT = process.getuid?.() === 0;
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) removeTempDir(d);
});

function tempDir(prefix: string, mode = 0o711): string {
  const d = makeTempDir(prefix, mode);
  dirs.push(d);
  return d;
}

interface Run { code: number | null; stdout: string; stderr: string }

/** Runs the CLI in `cwd` with no BUBBLE_SANDBOX_* setting but the ones given. */
async function cli(args: string[], opts: { cwd?: string; env?: Record<string, string>; input?: string } = {}): Promise<Run> {
  const env = cleanEnv({ BUBBLE_SANDBOX_UID_LOCK_DIR: tempDir('bs-cli-locks-', 0o755), ...opts.env });
  if (opts.env?.BUBBLE_SANDBOX_ENVIRONMENTS_DIR === undefined) delete env.BUBBLE_SANDBOX_ENVIRONMENTS_DIR;
  const child = spawn(process.execPath, [BIN, ...args], { cwd: opts.cwd ?? tempDir('bs-cli-cwd-'), env, stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr?.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  if (opts.input !== undefined) child.stdin?.end(opts.input);
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c) => resolve(c));
  }).finally(() => clearTimeout(timer));
  return { code, stdout, stderr };
}

const lines = (text: string) => text.split('\n').filter((l) => l.trim().length > 0);

describe('from any directory', () => {
  test('the package\'s own environments are found when ENVIRONMENTS_DIR is not set', async () => {
    const list = await cli(['list-environments', '--json']);
    expect(list.code).toBe(0);
    expect((JSON.parse(list.stdout) as { name: string }[]).map((e) => e.name)).toEqual(expect.arrayContaining(['bare', 'pandas-exec']));
    const run = await cli(['exec-script', '-e', 'bare', '-s', 'print(6*7)']);
    expect(run).toEqual({ code: 0, stdout: '42\n', stderr: '' });
  });

  test('a relative ENVIRONMENTS_DIR set on purpose is taken from the working directory', async () => {
    const cwd = tempDir('bs-cli-own-envs-');
    fs.mkdirSync(path.join(cwd, 'envs', 'mine'), { recursive: true });
    fs.writeFileSync(path.join(cwd, 'envs', 'mine', 'pyproject.toml'), '[project]\nname = "mine"\ndescription = "Mine"\n');
    const r = await cli(['list-environments', '--json'], { cwd, env: { BUBBLE_SANDBOX_ENVIRONMENTS_DIR: 'envs' } });
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { name: string }[]).map((e) => e.name)).toEqual(['mine']);
  });
});

test('--version prints the package version', async () => {
  const { version } = JSON.parse(fs.readFileSync(path.join(PROJECT_ROOT, 'package.json'), 'utf8')) as { version: string };
  expect(await cli(['--version'])).toEqual({ code: 0, stdout: `${version}\n`, stderr: '' });
});

describe('short flags and execute-python', () => {
  test('-s -f -e -w -v: the script reads the copied file and the volume, and writes to the workdir', async () => {
    const parent = tempDir('bs-cli-short-', 0o755);
    const work = path.join(parent, 'work');
    const shared = path.join(parent, 'shared');
    fs.mkdirSync(work, { mode: 0o777 });
    fs.mkdirSync(shared, { mode: 0o755 });
    fs.chmodSync(work, 0o777);
    fs.writeFileSync(path.join(shared, 'note.txt'), 'from the volume');
    const data = path.join(parent, 'data.csv');
    fs.writeFileSync(data, 'a,b\n1,2\n', { mode: 0o600 });
    const script = [
      'print(open("data.csv").read().splitlines()[1])',
      'print(open("/volumes/shared/note.txt").read())',
      'open("out.txt", "w").write("written")',
    ].join('\n');
    const r = await cli(['execute-python', '-s', script, '-f', data, '-e', 'bare', '-w', work, '-v', `shared,${shared}`]);
    expect(r).toEqual({ code: 0, stdout: '1,2\nfrom the volume\n', stderr: '' });
    expect(fs.readFileSync(path.join(work, 'data.csv'), 'utf8')).toBe('a,b\n1,2\n');
    expect(fs.readFileSync(path.join(work, 'out.txt'), 'utf8')).toBe('written');
  });

  test('-f into the temporary workspace, for any run command; an existing name is not replaced', async () => {
    const parent = tempDir('bs-cli-file-', 0o755);
    const file = path.join(parent, 'in.txt');
    fs.writeFileSync(file, 'hello');
    expect(await cli(['exec-command', '-f', file, 'cat in.txt'])).toEqual({ code: 0, stdout: 'hello', stderr: '' });
    expect(await cli(['execute', '-f', file, '--', '/bin/cat', 'in.txt'])).toEqual({ code: 0, stdout: 'hello', stderr: '' });
    const twice = await cli(['exec-command', '-f', file, '-f', file, 'true']);
    expect(twice.code).toBe(2);
    expect(lines(twice.stderr)).toHaveLength(1);
    expect(twice.stderr).toContain('already exists');
  });

  test('execute-python --help names the alias and the short flags', async () => {
    const r = await cli(['execute-python', '--help']);
    expect(r.code).toBe(0);
    for (const flag of ['-s, --script', '-f, --file', '-e, --environment', '-w, --workdir', '-v, --volume', '-a, --agent']) expect(r.stdout).toContain(flag);
  });
});

describe('agent mode (-a)', () => {
  test('prints only the program\'s stdout then stderr, and exits with its status', async () => {
    const script = 'import sys\nsys.stderr.write("first to stderr\\n"); sys.stderr.flush()\nprint("then stdout")\nsys.exit(3)';
    expect(await cli(['execute-python', '-a', '-s', script])).toEqual({ code: 3, stdout: 'then stdout\n', stderr: 'first to stderr\n' });
    expect(await cli(['exec-command', '--agent', 'printf out; printf err >&2'])).toEqual({ code: 0, stdout: 'out', stderr: 'err' });
  });

  test('a timeout is exit status 124 with nothing of ours on stderr', async () => {
    expect(await cli(['exec-command', '-a', '--timeout', '0.5', 'echo started; sleep 5'])).toEqual({ code: 124, stdout: 'started\n', stderr: '' });
  });

  test('--json and --agent together are bad input', async () => {
    const r = await cli(['exec-command', '-a', '--json', 'true']);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toHaveLength(1);
  });

  test('--json keeps its shape', async () => {
    const r = await cli(['exec-script', '--json', '-s', 'print(1)']);
    expect(r.code).toBe(0);
    const result = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(Object.keys(result)).toEqual(['status', 'exit_code', 'signal', 'stdout', 'stderr', 'truncated', 'max_output_chars', 'timed_out', 'timeout_seconds', 'duration_ms', 'resources', 'error']);
    expect(result).toMatchObject({ status: 'ok', exit_code: 0, stdout: '1\n', stderr: '' });
  });
});

// Root only: without root the sandbox runs as the invoking user, whose owner permissions apply.
describe.skipIf(!IS_ROOT)('a workdir the sandbox user cannot enter', () => {
  test('a 0700 workdir owned by root is a one-line error naming it and the fix, and nothing runs', async () => {
    const locked = tempDir('bs-cli-locked-', 0o700);
    const r = await cli(['exec-command', '-w', locked, 'touch ran.txt']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toContain(`'${locked}'`);
    expect(r.stderr).toContain(`chmod o+x '${locked}'`);
    expect(r.stderr).not.toMatch(/chdir/i);
    expect(fs.readdirSync(locked)).toEqual([]);
  });

  test('a workdir below a 0700 directory names that directory', async () => {
    const locked = tempDir('bs-cli-locked-parent-', 0o700);
    const work = path.join(locked, 'work');
    fs.mkdirSync(work, { mode: 0o755 });
    fs.chownSync(work, 201_234, 201_234);
    const r = await cli(['exec-script', '-w', work, '-s', 'print(1)']);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toContain(`cannot enter '${locked}'`);
    expect(r.stderr).toContain('chmod o+x');
  });
});
