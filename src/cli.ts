// The bubble-sandbox command line. Exit codes: the program's own; 124 on timeout; 128+N when
// ended by signal N; 2 for bad input (a one-line error, nothing written).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError, environmentWithDotEnv, loadConfig, type Config } from './config.js';
import { discoverEnvironments, ENVIRONMENT_NAME, findEnvironment } from './sandbox/environments.js';
import { createSandbox, IS_ROOT } from './sandbox/sandbox.js';
import type { Program, RunResult, VolumeMount } from './sandbox/types.js';

class UsageError extends Error {}

const RUN_OPTIONS = {
  environment: { type: 'string', short: 'e', default: 'bare' },
  workdir: { type: 'string', short: 'w' },
  volume: { type: 'string', multiple: true },
  timeout: { type: 'string' },
  json: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const satisfies ParseArgsConfig['options'];

const HELP: Record<string, string> = {
  main: `usage: bubble-sandbox <command> [options]

commands:
  serve                 start the HTTP service (same as npm start)
  list-environments     list execution environments
  exec-script           run a Python script (--script, --script-file, or stdin)
  exec-command "<sh>"   run a shell command string with /bin/sh -c
  execute -- <argv...>  run a program directly, no shell
  check [--full]        start a real sandbox and report whether it works

Run "bubble-sandbox <command> --help" for a command's options.`,
  run: `options:
  -e, --environment NAME   execution environment (default: bare)
  -w, --workdir DIR        directory mounted at /workspace (default: a temporary one)
      --volume NAME,PATH[,rw]  mount PATH at /volumes/NAME (read-only unless ,rw); repeatable
      --timeout SECONDS    wall-clock timeout (default: BUBBLE_SANDBOX_EXECUTION_TIMEOUT_SECONDS)
      --json               print the execution result as JSON instead of the output
exit status: the program's own; 124 on timeout; 128+N when ended by signal N; 2 for bad input.`,
};

const SCRIPT_OPTIONS = { ...RUN_OPTIONS, script: { type: 'string' }, 'script-file': { type: 'string' } } as const satisfies ParseArgsConfig['options'];

function parseRun(argv: string[]) {
  return parseArgs({ args: argv, options: RUN_OPTIONS, allowPositionals: true, strict: true });
}

function readVolume(spec: string): VolumeMount {
  const [name, hostPath, mode = 'ro', ...rest] = spec.split(',');
  if (!name || !hostPath || rest.length > 0 || (mode !== 'ro' && mode !== 'rw')) throw new UsageError(`--volume must be NAME,PATH[,rw]: got '${spec}'`);
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(name)) throw new UsageError(`invalid volume name '${name}'`);
  const st = fs.lstatSync(hostPath, { throwIfNoEntry: false });
  if (!st?.isDirectory()) throw new UsageError(`volume '${name}': not a directory (symlinks are refused)`);
  return { name, hostDir: path.resolve(hostPath), mode };
}

async function runProgram(config: Config, values: ReturnType<typeof parseRun>['values'], program: Program, stdin?: string): Promise<number> {
  const envName = String(values.environment);
  if (!ENVIRONMENT_NAME.test(envName)) throw new UsageError(`invalid environment name '${envName}'`);
  const environment = await findEnvironment(config.environmentsDir, envName);
  if (!environment) throw new UsageError(`unknown environment '${envName}' (see bubble-sandbox list-environments)`);
  if (!environment.usable) throw new UsageError(`environment '${envName}' is not usable: ${environment.reason ?? 'unknown reason'}`);
  const volumes = (values.volume ?? []).map(readVolume);

  let timeoutSeconds = config.executionTimeoutSeconds;
  if (values.timeout !== undefined) {
    timeoutSeconds = Number(values.timeout);
    if (!Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0 || timeoutSeconds > config.maxExecutionTimeoutSeconds) {
      throw new UsageError(`--timeout must be a number of seconds in (0, ${config.maxExecutionTimeoutSeconds}]`);
    }
  }

  let workdir: string;
  let tempParent: string | null = null;
  let identity: { uid: number; gid: number } | null = null;
  if (values.workdir !== undefined) {
    const st = fs.lstatSync(values.workdir, { throwIfNoEntry: false });
    if (!st) throw new UsageError(`workdir '${values.workdir}' does not exist`);
    if (st.isSymbolicLink()) throw new UsageError(`workdir '${values.workdir}' is a symbolic link; pass the real directory`);
    if (!st.isDirectory()) throw new UsageError(`workdir '${values.workdir}' is not a directory`);
    try {
      fs.accessSync(values.workdir, fs.constants.R_OK | fs.constants.X_OK);
    } catch {
      throw new UsageError(`workdir '${values.workdir}' is not readable`);
    }
    workdir = path.resolve(values.workdir);
    // As root, act as the directory's owner; never as root itself.
    if (IS_ROOT) identity = st.uid !== 0 ? { uid: st.uid, gid: st.gid } : { uid: config.sandboxUidBase, gid: config.sandboxUidBase };
  } else {
    tempParent = fs.mkdtempSync(path.join(os.tmpdir(), 'bubble-sandbox-cli-'));
    fs.chmodSync(tempParent, 0o711); // the sandbox uid must be able to reach its workspace
    workdir = path.join(tempParent, 'workspace');
    fs.mkdirSync(workdir);
    if (IS_ROOT) {
      identity = { uid: config.sandboxUidBase, gid: config.sandboxUidBase };
      fs.chownSync(workdir, identity.uid, identity.gid);
    }
  }

  const sandbox = await createSandbox(config);
  const live = !values.json;
  const ac = new AbortController();
  const onSignal = () => ac.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let result: RunResult;
  try {
    result = await sandbox.runner.run({
      environment,
      workspaceDir: workdir,
      volumes,
      program,
      stdin,
      timeoutMs: Math.round(timeoutSeconds * 1000),
      maxOutputChars: config.maxOutputChars,
      limits: sandbox.defaultLimits,
      identity,
      signal: ac.signal,
      onOutput: live ? (stream, text) => (stream === 'stdout' ? process.stdout : process.stderr).write(text) : undefined,
    });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await sandbox.close();
    if (tempParent) fs.rmSync(tempParent, { recursive: true, force: true });
  }
  if (values.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else if (result.status === 'timeout') process.stderr.write(`bubble-sandbox: timed out after ${timeoutSeconds} s\n`);
  else if (result.status === 'oom') process.stderr.write('bubble-sandbox: killed: out of memory\n');
  return exitCodeOf(result);
}

export function exitCodeOf(r: Pick<RunResult, 'status' | 'exit_code' | 'signal'>): number {
  if (r.status === 'timeout') return 124;
  if (r.exit_code !== null) return r.exit_code;
  const n = r.signal ? os.constants.signals[r.signal as NodeJS.Signals] : undefined;
  return n !== undefined ? 128 + n : 1;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function dispatch(command: string | undefined, rest: string[], config: () => Config): Promise<number> {
  switch (command) {
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      console.log(HELP.main);
      return command === undefined ? 2 : 0;
    case 'serve': {
      if (rest.includes('--help') || rest.includes('-h')) {
        console.log('usage: bubble-sandbox serve\nStarts the HTTP service; settings come from BUBBLE_SANDBOX_* variables and .env.');
        return 0;
      }
      const { runServer } = await import('./server/main.js');
      await runServer(config());
      return 0;
    }
    case 'list-environments': {
      const { values } = parseArgs({ args: rest, options: { json: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h', default: false } }, strict: true });
      if (values.help) return (console.log('usage: bubble-sandbox list-environments [--json]'), 0);
      const envs = await discoverEnvironments(config().environmentsDir);
      if (values.json) console.log(JSON.stringify(envs.map(({ name, description, dependencies, usable, reason }) => ({ name, description, dependencies, usable, reason })), null, 2));
      else for (const e of envs) console.log(`${e.name}\t${e.usable ? 'ready' : `unusable: ${e.reason ?? ''}`}\t${e.description}${e.dependencies.length ? ` [${e.dependencies.join(', ')}]` : ''}`);
      return 0;
    }
    case 'exec-script': {
      const { values } = parseArgs({ args: rest, options: SCRIPT_OPTIONS, allowPositionals: false, strict: true });
      if (values.help) return (console.log(`usage: bubble-sandbox exec-script [--script CODE | --script-file FILE | < script.py]\n${HELP.run}`), 0);
      let source: string;
      if (typeof values.script === 'string') source = values.script;
      else if (typeof values['script-file'] === 'string') {
        try {
          source = fs.readFileSync(values['script-file'], 'utf8');
        } catch {
          throw new UsageError(`cannot read script file '${values['script-file']}'`);
        }
      } else if (!process.stdin.isTTY) source = await readStdin();
      else throw new UsageError('no script: pass --script, --script-file, or pipe it on stdin');
      if (source.trim().length === 0) throw new UsageError('the script is empty');
      return runProgram(config(), values, { kind: 'script', source });
    }
    case 'exec-command': {
      const { values, positionals } = parseRun(rest);
      if (values.help) return (console.log(`usage: bubble-sandbox exec-command "<shell command>"\n${HELP.run}`), 0);
      if (positionals.length !== 1 || !positionals[0]) throw new UsageError('exec-command takes exactly one shell command string');
      return runProgram(config(), values, { kind: 'command', command: positionals[0] });
    }
    case 'execute': {
      const { values, positionals } = parseRun(rest);
      if (values.help) return (console.log(`usage: bubble-sandbox execute [options] -- <program> [args...]\n${HELP.run}`), 0);
      if (positionals.length === 0) throw new UsageError('execute needs a program: bubble-sandbox execute -- <program> [args...]');
      return runProgram(config(), values, { kind: 'argv', argv: positionals });
    }
    case 'check': {
      const { values } = parseArgs({ args: rest, options: { json: { type: 'boolean', default: false }, full: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h', default: false } }, strict: true });
      if (values.help) return (console.log('usage: bubble-sandbox check [--full] [--json]\nStarts a real sandbox; --full runs the isolation self-test.'), 0);
      const { runCheck } = await import('./sandbox/self-test-cli.js');
      return runCheck(config(), { full: values.full, json: values.json });
    }
    default:
      throw new UsageError(`unknown command '${command}' (see bubble-sandbox --help)`);
  }
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  let cached: Config | null = null;
  const config = () => (cached ??= loadConfig(environmentWithDotEnv()));
  try {
    return await dispatch(command, rest, config);
  } catch (err) {
    if (err instanceof UsageError || err instanceof ConfigError || (err instanceof TypeError && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS'))) {
      process.stderr.write(`bubble-sandbox: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
}
