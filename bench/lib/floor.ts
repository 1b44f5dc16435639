// The floors the service is compared with, all run from the bench process itself:
//   - "floor": the project's own hardened chain, createSandbox(config).runner.run(...) (the exec
//     helper: rlimits, cgroup join, uid drop → bwrap with --args/--seccomp/O_PATH fds);
//   - "floor without cgroup": the same chain with cgroups off, to split the chain's cost;
//   - "raw": bwrap spawned directly with the same option set (same namespaces, mounts, seccomp
//     program, script and workspace fds, same uid via spawn's uid/gid), but no exec helper and
//     no cgroup: what the chain around bwrap costs;
//   - "bare": python3 -c outside any sandbox, for scale.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Writable } from 'node:stream';
import type { Config } from '../../src/config.js';
import { buildBwrapInvocation, encodeArgs, SANDBOX_PATHS } from '../../src/sandbox/bwrap-args.js';
import { findEnvironment, type Environment } from '../../src/sandbox/environments.js';
import { createSandbox, type Sandbox } from '../../src/sandbox/sandbox.js';
import { baseEnvironment, pythonFor } from '../../src/sandbox/spawn.js';
import type { RunResult } from '../../src/sandbox/types.js';

const O_PATH = 0o10000000;
/** Slots far above those the service gives its sessions, so the uids never collide. */
const FLOOR_SLOT_BASE = 3000;

export interface Floor {
  sandbox: Sandbox;
  environment: Environment;
  /** The hardened chain through the project's runner, in workspace `i` (own dir and uid). */
  runFloor(i: number, script: string): Promise<RunResult>;
  /** The same with BUBBLE_SANDBOX_CGROUPS=off: the exec helper, no cgroup (rlimits only). */
  runFloorNoCgroup(i: number, script: string): Promise<RunResult>;
  /** bwrap with the same options, spawned directly; resolves with stdout. */
  runRaw(i: number, script: string): Promise<string>;
  /** python3 -c outside any sandbox; resolves with stdout. */
  runBare(script: string): Promise<string>;
  close(): Promise<void>;
}

export async function createFloor(config: Config, rootDir: string, environmentName = 'bare'): Promise<Floor> {
  const environment = await findEnvironment(config.environmentsDir, environmentName);
  if (!environment?.usable) throw new Error(`environment ${environmentName} is not usable: ${environment?.reason ?? 'missing'}`);
  const sandbox = await createSandbox(config);
  const noCgroupSandbox = await createSandbox({ ...config, cgroups: 'off' });
  const workspaces = new Map<number, { dir: string; identity: { uid: number; gid: number } | null }>();

  const workspace = (i: number) => {
    let ws = workspaces.get(i);
    if (!ws) {
      const dir = path.join(rootDir, `ws-${i}`);
      fs.mkdirSync(dir, { mode: 0o755 });
      const identity = sandbox.identityFor(FLOOR_SLOT_BASE + i);
      if (identity) fs.chownSync(dir, identity.uid, identity.gid);
      ws = { dir, identity };
      workspaces.set(i, ws);
    }
    return ws;
  };

  const runWith = (box: Sandbox, i: number, script: string) => {
    const ws = workspace(i);
    return box.runner.run({
      environment,
      workspaceDir: ws.dir,
      volumes: [],
      program: { kind: 'script', source: script },
      timeoutMs: Math.round(config.executionTimeoutSeconds * 1000),
      maxOutputChars: config.maxOutputChars,
      limits: box.defaultLimits,
      identity: ws.identity,
    });
  };

  const { bwrapPath, layout, seccompProgram } = sandbox.runner.spawnDeps;
  const runRaw = async (i: number, script: string): Promise<string> => {
    const ws = workspace(i);
    const invocation = buildBwrapInvocation({
      systemMounts: layout.systemMounts,
      etcFiles: layout.etcFiles,
      procMasks: layout.procMasks,
      venvDir: environment.venvDir,
      sandboxFiles: ['main.py'],
      volumes: [],
      seccomp: seccompProgram !== null,
      tmpSizeBytes: sandbox.defaultLimits.tmpSizeBytes,
      env: baseEnvironment(environment),
      command: [pythonFor(environment), SANDBOX_PATHS.script],
    });
    const stdio: (number | 'pipe')[] = ['pipe', 'pipe', 'pipe'];
    const payloads = new Map<number, Buffer>([[3, encodeArgs(invocation.options)]]);
    const opened: number[] = [];
    try {
      for (const [k, role] of invocation.fdRoles.entries()) {
        if (role.role === 'workspace') {
          const fd = fs.openSync(ws.dir, O_PATH | fs.constants.O_NOFOLLOW | fs.constants.O_DIRECTORY);
          opened.push(fd);
          stdio.push(fd);
          continue;
        }
        stdio.push('pipe');
        if (role.role === 'seccomp' && seccompProgram) payloads.set(3 + k, seccompProgram);
        if (role.role === 'sandbox-file') payloads.set(3 + k, Buffer.from(script, 'utf8'));
      }
      const child = spawn(bwrapPath, invocation.argv, {
        stdio, env: {}, ...(ws.identity ? { uid: ws.identity.uid, gid: ws.identity.gid } : {}),
      });
      for (const fd of opened.splice(0)) fs.closeSync(fd); // bwrap holds its own copy now
      return await collect(child, payloads);
    } finally {
      for (const fd of opened) fs.closeSync(fd);
    }
  };

  const runBare = (script: string) => collect(spawn('/usr/bin/python3', ['-c', script], { stdio: 'pipe', env: {} }), new Map());

  return {
    sandbox,
    environment,
    runFloor: (i, script) => runWith(sandbox, i, script),
    runFloorNoCgroup: (i, script) => runWith(noCgroupSandbox, i, script),
    runRaw,
    runBare,
    close: async () => {
      await sandbox.close();
      await noCgroupSandbox.close();
    },
  };
}

function collect(child: ReturnType<typeof spawn>, payloads: Map<number, Buffer>): Promise<string> {
  for (const [fd, payload] of payloads) {
    const stream = child.stdio[fd] as Writable | null | undefined;
    stream?.on('error', () => undefined);
    stream?.end(payload);
  }
  child.stdin?.on('error', () => undefined);
  child.stdin?.end();
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr?.setEncoding('utf8').on('data', (c: string) => (err += c));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`exit ${String(code)}: ${err.slice(0, 500)}`));
    });
  });
}
