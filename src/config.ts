// The only reader of process.env. Every setting is BUBBLE_SANDBOX_<NAME>, validated once at
// start-up; a bad value stops the process with a message naming the variable.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import dotenv from 'dotenv';
import { z } from 'zod';
import { parseCidrs } from './sandbox/network/egress-address.js';

const MiB = 1024 * 1024;

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no', 'TRUE', 'FALSE', 'True', 'False'])
  .transform((v) => ['true', '1', 'yes'].includes(v.toLowerCase()));

const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.coerce.number().int().min(min).max(max);
const num = (min: number, max: number) => z.coerce.number().min(min).max(max);

/**
 * A setting that is a JSON list of strings: each entry is checked (null: fine, else why not) and
 * the list normalised; any failure names what the list must look like.
 */
function jsonStringList(example: string, check: (entries: string[]) => string | null, normalise: (entries: string[]) => string[]) {
  return z.string().transform((raw, ctx) => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      parsed = null;
    }
    const list = z.array(z.string()).max(256).safeParse(parsed);
    const why = list.success ? check(list.data) : null;
    if (!list.success || why !== null) {
      ctx.addIssue({ code: 'custom', message: `must be a JSON list of ${example}${why === null ? '' : ` (${why})`}` });
      return z.NEVER;
    }
    return Object.freeze(normalise(list.data));
  });
}

const extensionList = jsonStringList(
  'extensions such as [".csv",".txt"]',
  (list) => {
    const bad = list.find((e) => !/^\.[A-Za-z0-9_-]{1,16}$/.test(e));
    return bad === undefined ? null : `not an extension: ${JSON.stringify(bad)}`;
  },
  (list) => list.map((e) => e.toLowerCase()),
);

/**
 * CIDRs the egress proxy and outbound mode may connect to although they are private, loopback or
 * link-local (for operators who mean to expose an internal service). Parsed by the egress
 * policy's own parser, so what starts is exactly what the proxy will use.
 */
const cidrList = jsonStringList(
  'CIDRs such as ["10.1.0.0/16","fd00::/8"]',
  (list) => {
    try {
      parseCidrs(list);
      return null;
    } catch (err) {
      return (err as Error).message;
    }
  },
  (list) => [...list],
);

/** Browser origins (scheme://host[:port]) allowed to open the WebSocket routes besides the service's own. */
const originList = jsonStringList(
  'origins such as ["https://app.example.com"]',
  (list) => {
    const bad = list.find((o) => !isOrigin(o));
    return bad === undefined ? null : `not an origin: ${JSON.stringify(bad)}`;
  },
  (list) => list.map((o) => o.toLowerCase()),
);

function isOrigin(s: string): boolean {
  try {
    return /^https?:$/.test(new URL(s).protocol) && new URL(s).origin === s.toLowerCase();
  } catch {
    return false;
  }
}

/** Node id → base URL of the other replicas (see NODE_ID and PEERS). */
const peerMap = z.string().transform((raw, ctx) => {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    parsed = null;
  }
  const map = z.record(z.string().regex(/^[a-z0-9]{1,16}$/), z.url({ protocol: /^https?$/ })).safeParse(parsed);
  if (!map.success) {
    ctx.addIssue({ code: 'custom', message: 'must be a JSON object from node id (1-16 lowercase letters or digits) to an http(s) base URL, such as {"n1":"http://10.0.0.1:8000"}' });
    return z.NEVER;
  }
  return Object.freeze(Object.fromEntries(Object.entries(map.data).map(([k, v]) => [k, v.replace(/\/+$/, '')])));
});

/** Each entry: env name suffix → schema, default (as the env string) and meaning (for .env.example and docs). */
export const SETTINGS = {
  HOST: { schema: z.string().min(1), default: '127.0.0.1', doc: 'address the HTTP server listens on' },
  PORT: { schema: int(0, 65535), default: '8000', doc: 'TCP port the HTTP server listens on' },
  ENVIRONMENTS_DIR: { schema: z.string().min(1), default: 'environments', doc: 'directory of execution environments (<name>/pyproject.toml + <name>/.venv)' },
  WORKSPACE_DIR: { schema: z.string().min(1), default: 'workspace_data', doc: 'root of session workspaces, volumes and session metadata' },
  MAX_UPLOAD_SIZE_BYTES: { schema: int(1), default: String(10 * MiB), doc: 'max total bytes of one upload request (or of the files of one POST /v1/execute)' },
  MAX_UPLOAD_FILES: { schema: int(1, 10_000), default: '100', doc: 'max number of files in one upload request' },
  ALLOWED_EXTENSIONS: { schema: extensionList, default: '[".txt",".csv",".md",".json",".yaml",".yml",".tsv",".xml",".ipynb"]', doc: 'JSON list of allowed upload extensions, compared case-insensitively with the last suffix' },
  EXECUTION_TIMEOUT_SECONDS: { schema: num(0.1, 86_400), default: '30', doc: 'default wall-clock timeout of one execution' },
  MAX_EXECUTION_TIMEOUT_SECONDS: { schema: num(0.1, 86_400), default: '300', doc: 'largest timeout_seconds a request may ask for' },
  MAX_OUTPUT_CHARS: { schema: int(100, 100_000_000), default: '100000', doc: 'per-stream cap on stdout/stderr characters returned (head and tail kept)' },
  SESSION_IDLE_TIMEOUT_SECONDS: { schema: num(1, 31_536_000), default: '3600', doc: 'a session idle longer than this is removed with its data' },
  SWEEP_INTERVAL_SECONDS: { schema: num(0.1, 86_400), default: '30', doc: 'how often idle sessions are looked for' },
  MAX_SESSIONS: { schema: int(1, 100_000), default: '50', doc: 'max concurrent sessions' },
  ALLOW_PERSISTENT_SESSIONS: { schema: bool, default: 'true', doc: 'whether DELETE with clear_data=false (keep the workspace) is allowed' },
  LOG_LEVEL: { schema: z.string().transform((v) => v.toLowerCase()).pipe(z.enum(['trace', 'debug', 'info', 'warn', 'warning', 'error', 'fatal', 'silent', 'critical'])).transform((v) => (v === 'warning' ? 'warn' : v === 'critical' ? 'fatal' : v)), default: 'INFO', doc: 'log level: TRACE, DEBUG, INFO, WARNING, ERROR, CRITICAL (case-insensitive)' },
  API_KEY: { schema: z.string().min(16, 'must be at least 16 characters').optional(), default: undefined, doc: 'when set, every /v1 route requires Authorization: Bearer <key>' },
  ALLOW_UNAUTHENTICATED: { schema: bool, default: 'false', doc: 'allow listening on a non-loopback HOST without API_KEY (anyone who reaches the port can then use every session)' },
  ALLOWED_ORIGINS: { schema: originList, default: '[]', doc: 'JSON list of browser origins (e.g. ["https://app.example.com"]) that may open the WebSocket routes (pty, ports) and use /mcp besides the service\'s own host; a request with another Origin header is refused with 403. Clients that send no Origin (not browsers) are not affected' },
  WS_MAX_FRAME_BYTES: { schema: int(1024, 64 * MiB), default: String(64 * 1024), doc: 'largest WebSocket message a client may send on the pty route; a bigger one closes the socket with 1009 (the process keeps running)' },
  MAX_CONCURRENT_EXECUTIONS: { schema: int(1, 1024), default: String(Math.max(1, os.availableParallelism())), doc: 'sandboxes running at once across all sessions (default: number of cores)' },
  MAX_QUEUED_EXECUTIONS: { schema: int(0, 100_000), default: '64', doc: 'executions waiting for a free slot before new ones get 429 BUSY' },
  MEMORY_LIMIT_BYTES: { schema: int(16 * MiB), default: String(512 * MiB), doc: 'memory limit of one execution (cgroup; no swap)' },
  PIDS_LIMIT: { schema: int(8, 1_000_000), default: '128', doc: 'max processes/threads of one execution (cgroup pids.max)' },
  CPU_CORES: { schema: num(0.01, 1024), default: '1', doc: 'CPU cores one execution may use (cgroup cpu quota)' },
  TMP_SIZE_BYTES: { schema: int(MiB), default: String(64 * MiB), doc: 'size of the private /tmp tmpfs of one execution' },
  WORKSPACE_QUOTA_BYTES: { schema: int(MiB), default: String(512 * MiB), doc: 'disk quota of one workspace (a loop-mounted ext4 image per session), and the largest file a sandbox may write (RLIMIT_FSIZE)' },
  VOLUME_QUOTA_BYTES: { schema: int(MiB), default: String(1024 * MiB), doc: 'disk quota of one shared volume (a loop-mounted ext4 image per volume, when workspace quotas are on)' },
  WORKSPACE_QUOTA: { schema: z.enum(['auto', 'off']), default: 'auto', doc: 'auto: enforce WORKSPACE_QUOTA_BYTES with a loop-mounted image per workspace when the host allows it (root, loop devices, mkfs.ext4); off: plain directories' },
  CHANGE_TRACKING: { schema: z.enum(['auto', 'off']), default: 'auto', doc: 'auto: learn which files an execution changed from the kernel (fanotify on the workspace\'s quota image) when the host allows it, instead of scanning the workspace; off: always scan' },
  WORKSPACE_POOL_SIZE: { schema: int(0, 256), default: '4', doc: 'quota workspaces built ahead in the background so a session create only renames one into place (each holds a loop device and a sparse image); 0: build each on create' },
  SANDBOXES_CPU_CORES: { schema: num(0.01, 1024), default: String(Math.max(0.5, os.availableParallelism() - 1)), doc: 'CPU cores all sandboxes together may use (quota of their shared parent cgroup), below the host\'s so the service always answers (default: cores - 1, at least 0.5)' },
  MAX_VOLUMES: { schema: int(0, 100_000), default: '64', doc: 'most shared volumes that may exist (each a quota image and a loop device); a session naming a new one past it gets 429 MAX_VOLUMES' },
  MAX_OPEN_FILES: { schema: int(16, 1_048_576), default: '1024', doc: 'RLIMIT_NOFILE inside the sandbox' },
  CGROUPS: { schema: z.enum(['auto', 'off']), default: 'auto', doc: 'auto: use cgroup v2 or v1 when writable; off: rlimits only' },
  CGROUP_POOL_SIZE: { schema: int(0, 10_000), default: '16', doc: 'execution cgroups kept idle for reuse, for one-shot executions and in each session\'s group: a finished execution\'s cgroup is emptied, its counters reset and its limits written again instead of removing it and making another (cgroup v1; v2 reuses only where its kernel can reset memory.peak); 0: a new cgroup per execution' },
  SANDBOX_UID_BASE: { schema: int(1000, 2 ** 31 - 70_000), default: '200000', doc: 'when running as root: first host uid/gid given to sandboxes (one per session)' },
  SANDBOX_UID_COUNT: { schema: int(1, 65_536), default: '4096', doc: 'size of the host uid range for sandboxes' },
  ROOTFS_UID: { schema: int(1000, 2 ** 31 - 2), default: '199999', doc: 'when running as root: host uid/gid that unpacks imported root filesystems (inside a sandbox) and owns their files; outside SANDBOX_UID_BASE..+SANDBOX_UID_COUNT, so no session can write them' },
  ROOTFS_IMPORT_TIMEOUT_SECONDS: { schema: num(1, 86_400), default: '1800', doc: 'bubble-sandbox rootfs import: how long unpacking one archive may take before it is stopped (nothing is kept)' },
  UID_LOCK_DIR: { schema: z.string().min(1), default: '/run/bubble-sandbox/uid-ranges', doc: 'when running as root: where each instance on this host records the sandbox uid range it holds; an instance refuses to start on a range a live one holds' },
  MAX_CHANGED_FILES: { schema: int(1, 1_000_000), default: '1000', doc: 'most paths an execution result lists in files.created, modified and deleted together; past it (or MAX_CHANGED_FILES_BYTES) the lists are cut and files_truncated is true' },
  MAX_CHANGED_FILES_BYTES: { schema: int(1024, 64 * MiB), default: String(256 * 1024), doc: 'most bytes of paths an execution result lists in files.created, modified and deleted together' },
  MAX_LIST_FILES: { schema: int(1, 1_000_000), default: '1000', doc: 'GET /v1/sessions/{id}/files: most entries on one page; a longer listing answers with a next cursor' },
  MAX_LIST_BYTES: { schema: int(1024, 64 * MiB), default: String(MiB), doc: 'GET /v1/sessions/{id}/files: most bytes of paths on one page' },
  MAX_OUTPUT_FILES: { schema: int(0, 10_000), default: '20', doc: 'POST /v1/execute: max output files returned inline; MCP run_code: max images returned' },
  MAX_OUTPUT_FILE_BYTES: { schema: int(0), default: String(MiB), doc: 'POST /v1/execute: max bytes of one output file returned inline; MCP: max bytes of one image of run_code and of a file read_file returns' },
  KERNEL_IDLE_TIMEOUT_SECONDS: { schema: num(1, 31_536_000), default: '600', doc: 'run_code: a persistent interpreter idle longer than this is stopped (the next call starts fresh)' },
  KERNEL_INTERRUPT_GRACE_SECONDS: { schema: num(0.1, 60), default: '2', doc: 'run_code: after a timeout, how long an interrupted interpreter may take to come back before it is killed' },
  MAX_KERNELS: { schema: int(1, 10_000), default: '16', doc: 'run_code: persistent interpreters alive at once; the least recently used is stopped first' },
  MAX_CONTEXTS_PER_SESSION: { schema: int(0, 1000), default: '8', doc: 'run_code: named contexts (POST /v1/sessions/{id}/contexts) one session may have, besides its default one; each is an interpreter counted by MAX_KERNELS; past it 429 TOO_MANY_CONTEXTS' },
  MAX_PROCESSES_PER_SESSION: { schema: int(0, 10_000), default: '8', doc: 'processes (POST /v1/sessions/{id}/processes) of one session running at once; past it 429 TOO_MANY_PROCESSES' },
  PROCESS_MAX_SECONDS: { schema: num(1, 31_536_000), default: '3600', doc: 'default and largest timeout_seconds of a process: it is killed (status timeout) when it runs longer; also its RLIMIT_CPU' },
  PROCESS_OUTPUT_BUFFER_BYTES: { schema: int(1024, 256 * MiB), default: String(MiB), doc: 'output a process keeps for GET .../output (stdout and stderr together, counted in characters): older output is dropped (truncated_before)' },
  PTY_SCROLLBACK_BYTES: { schema: int(0, 64 * MiB), default: String(64 * 1024), doc: 'terminal output of a pty process kept and replayed to a client that (re)connects to its WebSocket' },
  MAX_FINISHED_PROCESSES: { schema: int(0, 10_000), default: '16', doc: 'ended processes a session keeps listed (with their output); older ones are forgotten' },
  SHUTDOWN_GRACE_SECONDS: { schema: num(0, 3600), default: '10', doc: 'on SIGTERM, how long running executions may finish before they are killed' },
  SHUTDOWN_DRAIN_SECONDS: { schema: num(0, 3600), default: '5', doc: 'on SIGTERM, how long the service keeps serving with /readyz at 503 before it closes its listener, so a load balancer stops sending first (then SHUTDOWN_GRACE_SECONDS applies); 0: close at once. SIGINT and a second signal skip it' },
  SELF_TEST_ON_START: { schema: bool, default: 'true', doc: 'run the isolation self-test (check --full) in the background at start; /readyz reports its summary' },
  READY_CACHE_SECONDS: { schema: num(0, 3600), default: '10', doc: 'how long /readyz reuses its last sandbox probe' },
  EGRESS_ALLOW_PRIVATE_CIDRS: { schema: cidrList, default: '[]', doc: 'JSON list of CIDRs that network modes allowlist and outbound may reach although they are loopback, private, link-local or CGNAT (e.g. ["10.1.2.0/24"] to expose an internal package mirror); default: none' },
  NODE_ID: { schema: z.string().regex(/^([a-z0-9]{1,16})?$/, 'must be 1-16 lowercase letters or digits (or empty)'), default: '', doc: 'this replica\'s id in a cluster: every session id it makes starts with it (n1-3f9c...), so any replica knows where a session lives; empty: ids without a prefix (one replica), or n<ordinal> of the host name when PEER_URL_PATTERN is set (a StatefulSet pod bubble-sandbox-2 is n2)' },
  PEERS: { schema: peerMap, default: '{}', doc: 'JSON object from node id to base URL of the other replicas (e.g. {"n1":"http://10.0.0.1:8000","n2":"http://10.0.0.2:8000"}; this replica may be listed too); a request for a session of another replica is forwarded there. Empty: one replica. Not with PEER_URL_PATTERN' },
  PEER_URL_PATTERN: { schema: z.string().regex(/^(https?:\/\/[^\s]*\{i\}[^\s]*)?$/, 'must be an http(s) URL with {i} where the ordinal goes'), default: '', doc: 'the replicas\' base URLs with {i} for the ordinal, e.g. http://bubble-sandbox-{i}.bubble-sandbox-peers:8000 (a StatefulSet\'s stable names); with PEER_COUNT it makes the peers n0..n<count-1>. Not with PEERS' },
  PEER_COUNT: { schema: int(0, 1000), default: '0', doc: 'number of replicas PEER_URL_PATTERN names (the StatefulSet\'s replicas)' },
  CLUSTER_SECRET: { schema: z.string().min(16, 'must be at least 16 characters').optional(), default: undefined, doc: 'shared by all replicas: carried by every request one replica sends another (forwarded requests, placement and owner look-ups), and required of any request that says it was forwarded; needed when there are peers' },
  PEER_TIMEOUT_SECONDS: { schema: num(0.05, 600), default: '2', doc: 'how long a replica waits to connect to a peer (and for a placement, owner or listing answer) before it counts the peer as down' },
  NODE_RETRY_AFTER_SECONDS: { schema: int(1, 3600), default: '5', doc: 'Retry-After of a 503 NODE_UNAVAILABLE (a session whose replica is down)' },
  WARM_SANDBOXES_MAX: { schema: int(0, 10_000), default: '64', doc: 'pre-started ("warm") sandboxes at once, idle or starting: after an execution of a session the next sandbox is built ahead (interpreter started, the environment\'s preload modules imported) and the next execution claims it; each is used once. 0: off, every execution spawns' },
  WARM_IDLE_SECONDS: { schema: num(1, 86_400), default: '300', doc: 'a warm sandbox nobody claimed for this long is discarded' },
  WARM_MEMORY_BUDGET_BYTES: { schema: int(0), default: String(4096 * MiB), doc: 'memory the idle warm sandboxes may hold together (their cgroups\' memory); past it the least recently built are discarded. Added to the sandboxes\' parent cgroup limit' },
  WARM_MIN_AVAILABLE_BYTES: { schema: int(0), default: String(1024 * MiB), doc: 'memory pressure: while the host\'s MemAvailable (/proc/meminfo, checked every second) is below this, idle warm sandboxes are discarded (largest first) and none are started; 0: no check' },
  BWRAP_PATH: { schema: z.string().min(1), default: 'bwrap', doc: 'bubblewrap binary' },
  EXEC_HELPER_PATH: { schema: z.string().min(1), default: 'build/bubble-sandbox-exec', doc: 'the compiled step between the service and bwrap (rlimits, cgroup and netns join, drop to the sandbox uid, no_new_privs, empty environment), built by scripts/build-exec-helper.sh; relative: to the package directory. The service refuses to start without it' },
  WARM_FORK_SERVER: { schema: z.enum(['on', 'off']), default: 'on', doc: 'on: a session\'s warm sandbox is a fork server that stays and forks each execution of the session (a cgroup, new PID, mount, IPC, UTS and cgroup namespaces, a fresh /proc, /dev, /tmp and /sandbox, no capability, the seccomp filter, per execution); needs cgroups. off: a warm sandbox is used once and built again after each execution. One-shot runs always use theirs once' },
  SPAWN_HELPER: { schema: z.enum(['on', 'off']), default: 'on', doc: 'on: sandboxes are forked by bubble-sandbox-spawner (built beside EXEC_HELPER_PATH by scripts/build-exec-helper.sh), a small process the service starts once, instead of forking the service itself on its event loop for each; off: the service forks (node:child_process), as before' },
  E2B_DEFAULT_ENVIRONMENT: { schema: z.string().min(1), default: 'pandas-exec', doc: 'E2B compatibility: the environment a sandbox created from the E2B SDKs\' default templates (base, code-interpreter-v1) runs in; any other template names an environment' },
} as const;

type Settings = typeof SETTINGS;
type SettingValue<K extends keyof Settings> = z.output<Settings[K]['schema']>;

export type Config = Readonly<{ [K in keyof Settings as CamelCase<K>]: SettingValue<K> }>;

type CamelCase<S extends string> = S extends `${infer H}_${infer T}` ? `${Lowercase<H>}${Capitalize<CamelCase<T>>}` : Lowercase<S>;

export const ENV_PREFIX = 'BUBBLE_SANDBOX_';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

function camel(key: string): string {
  return key.toLowerCase().replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());
}

/** The installed package: one level above both src/ and dist/. */
export const PACKAGE_ROOT = path.resolve(import.meta.dirname, '..');

/**
 * Parse settings from an environment map (process.env by default). Throws ConfigError naming the
 * variable. Relative directories set on purpose resolve against `cwd`; the default environments
 * directory is the package's own, so the command line works from any directory.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd(), packageRoot = PACKAGE_ROOT): Config {
  const out: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const [key, spec] of Object.entries(SETTINGS)) {
    const variable = ENV_PREFIX + key;
    const raw = env[variable] ?? spec.default;
    const parsed = (spec.schema as z.ZodType).safeParse(raw === '' && spec.default === undefined ? undefined : raw);
    if (!parsed.success) {
      const why = parsed.error.issues.map((i) => i.message).join('; ');
      problems.push(`${variable}=${JSON.stringify(raw)}: ${why}`);
      continue;
    }
    out[camel(key)] = parsed.data;
  }
  if (problems.length > 0) throw new ConfigError(`invalid configuration: ${problems.join(', ')}`);
  const cfg = out as Config & Record<string, unknown>;
  if (cfg.executionTimeoutSeconds > cfg.maxExecutionTimeoutSeconds) {
    throw new ConfigError(`invalid configuration: ${ENV_PREFIX}EXECUTION_TIMEOUT_SECONDS exceeds ${ENV_PREFIX}MAX_EXECUTION_TIMEOUT_SECONDS`);
  }
  const slotsNeeded = cfg.maxSessions + cfg.maxConcurrentExecutions + cfg.maxQueuedExecutions + 1;
  if (cfg.sandboxUidCount < slotsNeeded) {
    throw new ConfigError(`invalid configuration: ${ENV_PREFIX}SANDBOX_UID_COUNT=${cfg.sandboxUidCount} must be at least ${slotsNeeded} (MAX_SESSIONS + MAX_CONCURRENT_EXECUTIONS + MAX_QUEUED_EXECUTIONS + 1), so no two sandboxes share a host uid`);
  }
  if (cfg.rootfsUid >= cfg.sandboxUidBase && cfg.rootfsUid < cfg.sandboxUidBase + cfg.sandboxUidCount) {
    throw new ConfigError(`invalid configuration: ${ENV_PREFIX}ROOTFS_UID=${cfg.rootfsUid} is inside the sandbox uid range (SANDBOX_UID_BASE..+SANDBOX_UID_COUNT): a session could then write the shared root filesystems`);
  }
  if (cfg.apiKey === undefined && !cfg.allowUnauthenticated && !isLoopbackHost(cfg.host)) {
    throw new ConfigError(`invalid configuration: ${ENV_PREFIX}HOST=${cfg.host} is reachable from other machines and ${ENV_PREFIX}API_KEY is not set, so anyone who reaches the port could use every session; set ${ENV_PREFIX}API_KEY, listen on 127.0.0.1, or set ${ENV_PREFIX}ALLOW_UNAUTHENTICATED=true on purpose`);
  }
  Object.assign(out, clusterSettings(cfg, env));
  out.environmentsDir = path.resolve(env[`${ENV_PREFIX}ENVIRONMENTS_DIR`] === undefined ? packageRoot : cwd, cfg.environmentsDir);
  out.workspaceDir = path.resolve(cwd, cfg.workspaceDir);
  out.execHelperPath = path.resolve(env[`${ENV_PREFIX}EXEC_HELPER_PATH`] === undefined ? packageRoot : cwd, cfg.execHelperPath);
  return Object.freeze(out) as Config;
}

/** NODE_ID and PEERS as they apply: the pattern expanded, the node id from the host name, a secret when there are peers. */
function clusterSettings(cfg: Config, env: NodeJS.ProcessEnv): { nodeId: string; peers: Readonly<Record<string, string>> } {
  const fail = (why: string) => new ConfigError(`invalid configuration: ${why}`);
  let { nodeId, peers } = cfg;
  if (cfg.peerUrlPattern !== '') {
    if (Object.keys(peers).length > 0) throw fail(`${ENV_PREFIX}PEERS and ${ENV_PREFIX}PEER_URL_PATTERN are two ways to say the same thing; set one`);
    if (cfg.peerCount < 1) throw fail(`${ENV_PREFIX}PEER_URL_PATTERN needs ${ENV_PREFIX}PEER_COUNT (the number of replicas)`);
    peers = Object.freeze(Object.fromEntries(Array.from({ length: cfg.peerCount }, (_v, i) => [`n${i}`, cfg.peerUrlPattern.replaceAll('{i}', String(i))])));
    if (nodeId === '') {
      const host = env.HOSTNAME ?? os.hostname();
      const ordinal = /-(\d{1,3})$/.exec(host)?.[1];
      if (ordinal === undefined) throw fail(`${ENV_PREFIX}NODE_ID is not set and the host name ${JSON.stringify(host)} does not end in a StatefulSet ordinal (-0, -1, ...)`);
      nodeId = `n${Number(ordinal)}`;
    }
  }
  const others = Object.keys(peers).filter((id) => id !== nodeId);
  if (others.length > 0) {
    if (nodeId === '') throw fail(`${ENV_PREFIX}PEERS names other replicas, so ${ENV_PREFIX}NODE_ID must say which one this is`);
    if (cfg.clusterSecret === undefined) throw fail(`${ENV_PREFIX}PEERS names other replicas, so ${ENV_PREFIX}CLUSTER_SECRET must be set (the same on every replica): forwarding is never an open door`);
  }
  return { nodeId, peers };
}

/** Whether a listen address only takes connections from this host. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h) || /^::ffff:127(\.\d{1,3}){3}$/.test(h);
}

/** process.env with a .env file (if present) underneath it: real variables win. */
export function environmentWithDotEnv(file = path.resolve('.env')): NodeJS.ProcessEnv {
  let fromFile: Record<string, string> = {};
  try {
    fromFile = dotenv.parse(fs.readFileSync(file));
  } catch {
    // no .env file: environment variables only
  }
  return { ...fromFile, ...process.env };
}
