// One program run from the command line: check what the user named (environment, workdir,
// volumes, files to copy in) with one-line errors, run it in a sandbox, print its output, and turn
// the result into an exit code.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import type { Config } from './config.js';
import { ENVIRONMENT_NAME, findEnvironment, type Environment } from './sandbox/environments.js';
import { EgressPatternError, parsePattern } from './sandbox/network/egress-policy.js';
import { outboundAvailable } from './sandbox/network/outbound.js';
import { createSessionNetwork, type SessionNetwork } from './sandbox/network/session-network.js';
import { createSandbox, IS_ROOT } from './sandbox/sandbox.js';
import type { Program, RunResult, VolumeMount } from './sandbox/types.js';

/** Bad input: printed as one line, exit status 2, nothing run. */
export class UsageError extends Error {}

export interface RunOptions {
  environment: string;
  workdir?: string | undefined;
  volume?: string[] | undefined;
  file?: string[] | undefined;
  timeout?: string | undefined;
  json: boolean;
  agent: boolean;
  /** none (default), allowlist or outbound. */
  network?: string | undefined;
  allow?: string[] | undefined;
  deny?: string[] | undefined;
}

export type NetworkChoice = { mode: 'none' | 'allowlist' | 'outbound'; allow: string[]; deny: string[] };

/** The --network, --allow and --deny options, checked before anything is made. */
export function networkOf(options: Pick<RunOptions, 'network' | 'allow' | 'deny'>): NetworkChoice {
  const mode = options.network ?? 'none';
  if (mode !== 'none' && mode !== 'allowlist' && mode !== 'outbound') throw new UsageError(`--network must be none, allowlist or outbound: got '${mode}'`);
  const allow = options.allow ?? [];
  const deny = options.deny ?? [];
  if (mode !== 'allowlist' && allow.length + deny.length > 0) throw new UsageError('--allow and --deny need --network allowlist');
  for (const [flag, list] of [['--allow', allow], ['--deny', deny]] as const) {
    for (const p of list) {
      try {
        parsePattern(p);
      } catch (err) {
        if (err instanceof EgressPatternError) throw new UsageError(`${flag} '${p}': ${err.reason}`);
        throw err;
      }
    }
  }
  if (mode !== 'none' && !IS_ROOT) throw new UsageError(`--network ${mode} needs root (a network namespace of its own)`);
  if (mode === 'outbound') {
    const outbound = outboundAvailable();
    if (!outbound.available) throw new UsageError(`--network outbound is not available on this host: ${outbound.reason ?? 'slirp4netns or nftables missing'}`);
  }
  return { mode, allow, deny };
}

export type Identity = { uid: number; gid: number };

function readVolume(spec: string): VolumeMount {
  const [name, hostPath, mode = 'ro', ...rest] = spec.split(',');
  if (!name || !hostPath || rest.length > 0 || (mode !== 'ro' && mode !== 'rw')) throw new UsageError(`--volume must be NAME,PATH[,rw]: got '${spec}'`);
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(name)) throw new UsageError(`invalid volume name '${name}'`);
  const st = fs.lstatSync(hostPath, { throwIfNoEntry: false });
  if (!st?.isDirectory()) throw new UsageError(`volume '${name}': not a directory (symlinks are refused)`);
  return { name, hostDir: path.resolve(hostPath), mode };
}

/**
 * The sandbox enters its directories by path as `who`: each one from / down must let it search
 * (x), or bwrap stops with "Can't chdir". Mode bits only: an ACL that grants more is not seen.
 */
function assertEnterable(what: string, target: string, who: Identity): void {
  const blocked: string[] = [];
  for (let dir = target; ; dir = path.dirname(dir)) {
    const st = fs.statSync(dir);
    const bit = st.uid === who.uid ? 0o100 : st.gid === who.gid ? 0o010 : 0o001;
    if ((st.mode & bit) === 0) blocked.unshift(dir);
    if (path.dirname(dir) === dir) break;
  }
  const first = blocked[0];
  if (first === undefined) return;
  const fix = blocked.map((d) => `'${d}'`).join(' ');
  throw new UsageError(`${what}: the sandbox user (uid ${who.uid}) cannot enter '${first}'; let it in with: chmod o+x ${fix} (or choose a directory below one it can enter)`);
}

function checkWorkdir(dir: string, config: Config): { workdir: string; identity: Identity | null } {
  const st = fs.lstatSync(dir, { throwIfNoEntry: false });
  if (!st) throw new UsageError(`workdir '${dir}' does not exist`);
  if (st.isSymbolicLink()) throw new UsageError(`workdir '${dir}' is a symbolic link; pass the real directory`);
  if (!st.isDirectory()) throw new UsageError(`workdir '${dir}' is not a directory`);
  try {
    fs.accessSync(dir, fs.constants.R_OK | fs.constants.X_OK);
  } catch {
    throw new UsageError(`workdir '${dir}' is not readable`);
  }
  // As root, act as the directory's owner; never as root itself.
  const identity = !IS_ROOT ? null : st.uid !== 0 ? { uid: st.uid, gid: st.gid } : { uid: config.sandboxUidBase, gid: config.sandboxUidBase };
  return { workdir: path.resolve(dir), identity };
}

/** Copies each file into the workspace under its base name; an existing name is never replaced. */
function copyFilesIn(files: string[], workdir: string, identity: Identity | null): void {
  for (const file of files) {
    const st = fs.statSync(file, { throwIfNoEntry: false });
    if (!st?.isFile()) throw new UsageError(`--file '${file}' is not a readable regular file`);
    const target = path.join(workdir, path.basename(file));
    try {
      fs.copyFileSync(file, target, fs.constants.COPYFILE_EXCL);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') throw new UsageError(`--file '${file}': '${path.basename(file)}' already exists in the workspace`);
      throw new UsageError(`--file '${file}' cannot be copied into the workspace (${code ?? 'error'})`);
    }
    if (identity) fs.chownSync(target, identity.uid, identity.gid);
  }
}

function timeoutOf(raw: string | undefined, config: Config): number {
  if (raw === undefined) return config.executionTimeoutSeconds;
  const seconds = Number(raw);
  if (!Number.isFinite(seconds) || seconds <= 0 || seconds > config.maxExecutionTimeoutSeconds) {
    throw new UsageError(`--timeout must be a number of seconds in (0, ${config.maxExecutionTimeoutSeconds}]`);
  }
  return seconds;
}

/** The environment named by -e, or a one-line usage error. */
export async function environmentOf(config: Config, envName: string): Promise<Environment> {
  if (!ENVIRONMENT_NAME.test(envName)) throw new UsageError(`invalid environment name '${envName}'`);
  const environment = await findEnvironment(config.environmentsDir, envName, config.workspaceDir);
  if (!environment) throw new UsageError(`unknown environment '${envName}' (see bubble-sandbox list-environments)`);
  if (!environment.usable) throw new UsageError(`environment '${envName}' is not usable: ${environment.reason ?? 'unknown reason'}`);
  return environment;
}

export interface Workspace {
  workdir: string;
  /** The sandbox's host uid/gid (as root: the workdir's owner, never root), or null. */
  identity: Identity | null;
  /** A temporary workspace's parent, removed by the caller after the run; null for -w. */
  tempParent: string | null;
}

/** The -w directory, checked (exists, not a link, enterable by the sandbox uid), or a temporary one. */
export function workspaceOf(config: Config, workdirOption: string | undefined): Workspace {
  if (workdirOption !== undefined) {
    const { workdir, identity } = checkWorkdir(workdirOption, config);
    if (identity) assertEnterable(`workdir '${workdirOption}'`, workdir, identity);
    return { workdir, identity, tempParent: null };
  }
  const tempParent = fs.mkdtempSync(path.join(os.tmpdir(), 'bubble-sandbox-cli-'));
  fs.chmodSync(tempParent, 0o711); // the sandbox uid must be able to reach its workspace
  const workdir = path.join(tempParent, 'workspace');
  fs.mkdirSync(workdir);
  const identity = IS_ROOT ? { uid: config.sandboxUidBase, gid: config.sandboxUidBase } : null;
  if (identity) fs.chownSync(workdir, identity.uid, identity.gid);
  return { workdir, identity, tempParent };
}

/** The temporary workspace must be enterable too (a 0700 TMPDIR parent would stop bwrap). */
export function assertTempWorkspaceEnterable(ws: Workspace): void {
  if (ws.identity && ws.tempParent) assertEnterable(`the temporary workspace under '${os.tmpdir()}'`, ws.workdir, ws.identity);
}

export interface RunNetwork {
  network: SessionNetwork;
  /** Closes the network and removes its run dir; any number of times. */
  close(): Promise<void>;
}

/**
 * A network of the run's own (never under a service's workspace, whose start clears its run
 * dirs), in the mode chosen; the caller closes it after the run.
 */
export async function openRunNetwork(config: Config, choice: NetworkChoice, identity: Identity | null): Promise<RunNetwork> {
  const netDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bubble-sandbox-net-'));
  let closing: Promise<void> | null = null;
  const removeDir = () => fs.rmSync(netDir, { recursive: true, force: true });
  try {
    fs.chmodSync(netDir, 0o711);
    const network = await createSessionNetwork({
      key: `cli-${process.pid}`,
      mode: choice.mode,
      identity,
      runDir: path.join(netDir, 'run'),
      policy: () => choice,
      allowPrivate: config.egressAllowPrivateCidrs,
      logger: pino({ level: 'silent' }),
    });
    return {
      network,
      close: () => (closing ??= network.close().finally(removeDir)),
    };
  } catch (err) {
    removeDir();
    throw err;
  }
}

export async function runProgram(config: Config, options: RunOptions, program: Program, stdin?: string): Promise<number> {
  if (options.json && options.agent) throw new UsageError('--json and --agent cannot be combined');
  const environment = await environmentOf(config, options.environment);
  const volumes = (options.volume ?? []).map(readVolume);
  const timeoutSeconds = timeoutOf(options.timeout, config);
  const networkChoice = networkOf(options);

  const ws = workspaceOf(config, options.workdir);
  const { workdir, identity, tempParent } = ws;

  const live = !options.json && !options.agent;
  const ac = new AbortController();
  const onSignal = () => ac.abort();
  let result: RunResult;
  try {
    assertTempWorkspaceEnterable(ws);
    for (const v of volumes) if (identity) assertEnterable(`volume '${v.name}'`, v.hostDir, identity);
    copyFilesIn(options.file ?? [], workdir, identity);
    const sandbox = await createSandbox(config);
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    let runNetwork: RunNetwork | null = null;
    try {
      if (networkChoice.mode !== 'none') runNetwork = await openRunNetwork(config, networkChoice, identity);
      const network = runNetwork?.network ?? null;
      result = await sandbox.runner.run({
        environment,
        workspaceDir: workdir,
        volumes,
        program,
        stdin,
        // The proxy variables of an allowlist run (empty otherwise).
        env: network ? { ...network.env } : undefined,
        netnsPath: network?.netnsPath,
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
      await runNetwork?.close();
      await sandbox.close();
    }
  } finally {
    if (tempParent) fs.rmSync(tempParent, { recursive: true, force: true });
  }
  if (options.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else if (options.agent) {
    // Only the program's own output, each stream whole, then its exit status: nothing of ours.
    process.stdout.write(result.stdout);
    process.stderr.write(result.stderr);
  } else if (result.status === 'timeout') process.stderr.write(`bubble-sandbox: timed out after ${timeoutSeconds} s\n`);
  else if (result.status === 'oom') process.stderr.write('bubble-sandbox: killed: out of memory\n');
  return exitCodeOf(result);
}

export function exitCodeOf(r: Pick<RunResult, 'status' | 'exit_code' | 'signal'>): number {
  if (r.status === 'timeout') return 124;
  if (r.exit_code !== null) return r.exit_code;
  const n = r.signal ? os.constants.signals[r.signal as NodeJS.Signals] : undefined;
  return n !== undefined ? 128 + n : 1;
}
