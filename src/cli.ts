// The bubble-sandbox command line. Exit codes: the program's own; 124 on timeout; 128+N when
// ended by signal N; 2 for bad input (a one-line error, nothing written).
import fs from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { runProgram, UsageError, type RunOptions } from './cli-run.js';
import { ConfigError, environmentWithDotEnv, loadConfig, type Config } from './config.js';
import { unsupportedNodeReason } from './node-version.js';
import { discoverEnvironments } from './sandbox/environments.js';
import { VERSION } from './version.js';

export { exitCodeOf } from './cli-run.js';

const RUN_OPTIONS = {
  environment: { type: 'string', short: 'e', default: 'bare' },
  workdir: { type: 'string', short: 'w' },
  volume: { type: 'string', short: 'v', multiple: true },
  file: { type: 'string', short: 'f', multiple: true },
  timeout: { type: 'string' },
  network: { type: 'string', default: 'none' },
  allow: { type: 'string', multiple: true },
  deny: { type: 'string', multiple: true },
  json: { type: 'boolean', default: false },
  agent: { type: 'boolean', short: 'a', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const satisfies ParseArgsConfig['options'];

const HELP: Record<string, string> = {
  main: `usage: bubble-sandbox <command> [options]

commands:
  serve                 start the HTTP service (same as npm start)
  list-environments     list execution environments
  exec-script           run a Python script (-s CODE, --script-file FILE, or stdin); alias: execute-python
  exec-command "<sh>"   run a shell command string with /bin/sh -c
  execute -- <argv...>  run a program directly, no shell
  run [--] <argv...>    run a program attached to this terminal (a pseudo-terminal when stdin is one)
  rootfs import|list|remove  manage root filesystems (environments of kind rootfs)
  check [--full]        start a real sandbox and report whether it works
  mcp [--url URL]       serve the MCP tools over stdio (for a local agent): in this process, or relayed to a service

  --version             print the version

Run "bubble-sandbox <command> --help" for a command's options.`,
  run: `options:
  -e, --environment NAME   execution environment (default: bare)
  -w, --workdir DIR        directory mounted at /workspace (default: a temporary one)
  -f, --file PATH          copy PATH into /workspace first (same base name, never over an existing file); repeatable
  -v, --volume NAME,PATH[,rw]  mount PATH at /volumes/NAME (read-only unless ,rw); repeatable
      --timeout SECONDS    wall-clock timeout (default: BUBBLE_SANDBOX_EXECUTION_TIMEOUT_SECONDS)
      --network MODE       none (default: loopback only), allowlist (HTTP(S) through an egress proxy to
                           the --allow hosts) or outbound (general outbound, never this host); as root
      --allow PATTERN      allowlist: a host the proxy may reach (pypi.org, *.example.com, 10.1.2.3:8080); repeatable
      --deny PATTERN       allowlist: a host refused even when allowed; repeatable
      --json               print the execution result as JSON instead of the output
  -a, --agent              print only the program's output (all of stdout, then all of stderr), no messages of ours
exit status: the program's own; 124 on timeout; 128+N when ended by signal N; 2 for bad input.`,
};

const INTERACTIVE_OPTIONS = {
  environment: { type: 'string', short: 'e', default: 'bare' },
  workdir: { type: 'string', short: 'w' },
  timeout: { type: 'string' },
  network: { type: 'string', default: 'none' },
  allow: { type: 'string', multiple: true },
  deny: { type: 'string', multiple: true },
  'forward-port': { type: 'string', multiple: true },
  'rootfs-overlay': { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const satisfies ParseArgsConfig['options'];

const RUN_HELP = `usage: bubble-sandbox run [options] [--] <program> [args...]
Runs the program in a sandbox attached to this terminal: with a pseudo-terminal of its own when
stdin is a terminal (raw mode; Ctrl-C, Ctrl-Z and window resizes reach the program), with pipes
otherwise (stdin, stdout and stderr streamed). Options end at the program's name.
options:
  -e, --environment NAME   execution environment (default: bare)
  -w, --workdir DIR        directory mounted at /workspace (default: a temporary one)
      --timeout SECONDS    kill the program after this long, exit status 124 (default: none)
      --network MODE       none (default: loopback only), allowlist or outbound, as for exec-command; as root
      --allow PATTERN      allowlist: a host the proxy may reach; repeatable
      --deny PATTERN       allowlist: a host refused even when allowed; repeatable
      --forward-port SANDBOX:HOST  while the program runs, 127.0.0.1:HOST on this machine reaches port
                           SANDBOX inside the sandbox (its own network namespace); repeatable; as root
      --rootfs-overlay     with an environment of kind rootfs: / is writable for this run (an overlay
                           in a temporary directory, gone when the program ends); as root
SIGINT, SIGTERM or SIGHUP to this command go to the program (in a terminal SIGTERM arrives as
SIGHUP, which an interactive shell does not ignore); it is killed if it has not ended 5 s later.
exit status: the program's own; 128+N when ended by signal N; 124 on timeout; 2 for bad input.`;

const MCP_HELP = `usage: bubble-sandbox mcp [--url URL]
Serves the MCP tools (list_environments, create_session, delete_session, execute, run_code,
write_file, read_file, list_files) over stdio, for an agent that starts this command.
  (no --url)  runs the sandbox in this process with the BUBBLE_SANDBOX_* settings (no HTTP service
              needed); give it a WORKSPACE_DIR, and when a service runs on this host too, a
              SANDBOX_UID_BASE range of its own.
  --url URL   relays to a running service's /mcp (e.g. http://127.0.0.1:8000/mcp), with
              BUBBLE_SANDBOX_API_KEY as its key; the service's sessions are shared.
stdout carries only MCP messages; the log goes to stderr. It stops when stdin closes.`;

/**
 * Splits `run`'s arguments at the program: options first, then the program and its arguments
 * untouched (`run bash -c 'echo x'` needs no `--`).
 */
function splitAtProgram(args: string[]): { options: string[]; program: string[] } {
  const valued = new Set(Object.entries(INTERACTIVE_OPTIONS).filter(([, o]) => o.type === 'string').flatMap(([name, o]) => ['--' + name, ...('short' in o ? ['-' + o.short] : [])]));
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    if (a === '--') return { options: args.slice(0, i), program: args.slice(i + 1) };
    if (!a.startsWith('-') || a === '-') return { options: args.slice(0, i), program: args.slice(i) };
    if (valued.has(a)) i++; // its value, whatever it looks like
  }
  return { options: args, program: [] };
}

const SCRIPT_OPTIONS = { ...RUN_OPTIONS, script: { type: 'string', short: 's' }, 'script-file': { type: 'string' } } as const satisfies ParseArgsConfig['options'];

function parseRun(argv: string[]) {
  return parseArgs({ args: argv, options: RUN_OPTIONS, allowPositionals: true, strict: true });
}

function runOptions(values: ReturnType<typeof parseRun>['values']): RunOptions {
  const { environment, workdir, volume, file, timeout, json, agent, network, allow, deny } = values;
  return { environment, workdir, volume, file, timeout, json, agent, network, allow, deny };
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
    case '--version':
      console.log(VERSION);
      return 0;
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
      const envs = await discoverEnvironments(config().environmentsDir, config().workspaceDir);
      if (values.json) console.log(JSON.stringify(envs.map(({ name, description, dependencies, usable, reason, kind, python }) => ({ name, description, dependencies, usable, reason, kind, python })), null, 2));
      else for (const e of envs) console.log(`${e.name}\t${e.usable ? 'ready' : `unusable: ${e.reason ?? ''}`}\t${e.description}${e.dependencies.length ? ` [${e.dependencies.join(', ')}]` : ''}`);
      return 0;
    }
    case 'exec-script':
    case 'execute-python': {
      const { values } = parseArgs({ args: rest, options: SCRIPT_OPTIONS, allowPositionals: false, strict: true });
      if (values.help) return (console.log(`usage: bubble-sandbox ${command} [-s CODE | --script-file FILE | < script.py]\n  -s, --script CODE        the Python source to run\n${HELP.run}`), 0);
      let source: string;
      if (typeof values.script === 'string') source = values.script;
      else if (typeof values['script-file'] === 'string') {
        try {
          source = fs.readFileSync(values['script-file'], 'utf8');
        } catch {
          throw new UsageError(`cannot read script file '${values['script-file']}'`);
        }
      } else if (!process.stdin.isTTY) source = await readStdin();
      else throw new UsageError('no script: pass -s/--script, --script-file, or pipe it on stdin');
      if (source.trim().length === 0) throw new UsageError('the script is empty');
      return runProgram(config(), runOptions(values), { kind: 'script', source });
    }
    case 'exec-command': {
      const { values, positionals } = parseRun(rest);
      if (values.help) return (console.log(`usage: bubble-sandbox exec-command "<shell command>"\n${HELP.run}`), 0);
      if (positionals.length !== 1 || !positionals[0]) throw new UsageError('exec-command takes exactly one shell command string');
      return runProgram(config(), runOptions(values), { kind: 'command', command: positionals[0] });
    }
    case 'execute': {
      const { values, positionals } = parseRun(rest);
      if (values.help) return (console.log(`usage: bubble-sandbox execute [options] -- <program> [args...]\n${HELP.run}`), 0);
      if (positionals.length === 0) throw new UsageError('execute needs a program: bubble-sandbox execute -- <program> [args...]');
      return runProgram(config(), runOptions(values), { kind: 'argv', argv: positionals });
    }
    case 'run': {
      const split = splitAtProgram(rest);
      const { values } = parseArgs({ args: split.options, options: INTERACTIVE_OPTIONS, allowPositionals: false, strict: true });
      if (values.help) return (console.log(RUN_HELP), 0);
      const { runInteractive } = await import('./cli-pty.js');
      const { environment, workdir, timeout, network, allow, deny } = values;
      return runInteractive(config(), { environment, workdir, timeout, network, allow, deny, forwardPort: values['forward-port'], rootfsOverlay: values['rootfs-overlay'] }, split.program);
    }
    case 'rootfs': {
      const { runRootfsCommand } = await import('./cli-rootfs.js');
      return runRootfsCommand(config(), rest);
    }
    case 'mcp': {
      const { values } = parseArgs({ args: rest, options: { url: { type: 'string' }, help: { type: 'boolean', short: 'h', default: false } }, strict: true });
      if (values.help) return (console.log(MCP_HELP), 0);
      if (values.url !== undefined) {
        let url: URL;
        try {
          url = new URL(values.url);
        } catch {
          throw new UsageError(`--url '${values.url}' is not a URL (e.g. http://127.0.0.1:8000/mcp)`);
        }
        const { runMcpBridge } = await import('./protocols/mcp/stdio-bridge.js');
        return runMcpBridge(url, config().apiKey);
      }
      const { runMcpStdio } = await import('./protocols/mcp/stdio.js');
      return runMcpStdio(config());
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

/** `nodeVersion`: the running Node's by default (tests pass another). */
export async function main(argv: string[], opts: { nodeVersion?: string } = {}): Promise<number> {
  const [command, ...rest] = argv;
  let cached: Config | null = null;
  const config = () => (cached ??= loadConfig(environmentWithDotEnv()));
  // Help and --version answer on any Node; everything else needs one package.json's engines admits.
  const unsupported = ['--version', '--help', '-h', 'help', undefined].includes(command) ? null : unsupportedNodeReason(opts.nodeVersion);
  if (unsupported !== null) {
    process.stderr.write(`bubble-sandbox: ${unsupported}\n`);
    return 2;
  }
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
