// npm run bench: starts the real service and measures it against the sandbox alone (see
// issue 5), prints a table with ratios and targets, writes bench-results/latest.json.
// It reports; it never fails a build: the exit status is 0 unless the bench itself broke.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../src/config.js';
import { PRINT_X, intFromEnv, warmSizesFromEnv, type BenchContext, type BenchSizes } from './lib/context.js';
import { createFloor, type Floor } from './lib/floor.js';
import { BenchClient, createSession, executeIn } from './lib/http.js';
import { measureLatency } from './lib/phase-latency.js';
import { measureChangedFiles, measureRss } from './lib/phase-files.js';
import { measureSessions, measureUpload } from './lib/phase-sessions.js';
import { measureThroughput } from './lib/phase-throughput.js';
import { measureRunCode } from './lib/phase-run-code.js';
import { egressRows, measureEgress } from './lib/phase-egress.js';
import { measurePty, ptyRows } from './lib/phase-pty.js';
import { measurePorts, portsRows } from './lib/phase-ports.js';
import { measureRich, richRows } from './lib/phase-rich.js';
import { measureRootfs, rootfsRows } from './lib/phase-rootfs.js';
import { clusterRows, measureCluster } from './lib/phase-cluster.js';
import { ISSUE17_SERVICE_ENV, issue17Rows, measureIssue17 } from './lib/phase-issue17.js';
import { buildRows } from './lib/rows.js';
import { machineInfo, renderTable } from './lib/report.js';
import { ENVIRONMENTS_DIR, freePort, makeTempDir, PROJECT_ROOT, cleanEnv, startService, type BenchServer, removeTempDir } from './lib/server.js';

const MiB = 1024 * 1024;
const started = Date.now();
const loadAtStart = os.loadavg().map((v) => Math.round(v * 100) / 100);
const log = (message: string) => process.stderr.write(`[bench +${((Date.now() - started) / 1000).toFixed(1)}s] ${message}\n`);

const sizes: BenchSizes = {
  n: intFromEnv('BENCH_N', 200),
  warmup: 20,
  throughputN: intFromEnv('BENCH_THROUGHPUT_N', 100),
  clientCounts: [1, 4, 16],
  sessions: 100,
  uploadBytes: 8 * MiB,
  uploadReps: 7,
  manyFiles: 10_000,
  manyFilesReps: 20,
  snapshotReps: 20,
  warm: warmSizesFromEnv(),
};

let cleanupDone: Promise<void> | null = null;
const cleanups: (() => Promise<void> | void)[] = [];
function cleanup(): Promise<void> {
  cleanupDone ??= (async () => {
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch (err) {
        log(`cleanup step failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  })();
  return cleanupDone;
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`${signal}: stopping the service and removing temp dirs`);
    void cleanup().finally(() => process.exit(130));
  });
}

async function main(): Promise<void> {
  const tmp = makeTempDir('bubble-bench-');
  cleanups.push(() => removeTempDir(tmp));
  const serviceWorkspaceDir = path.join(tmp, 'service');
  const floorDir = path.join(tmp, 'floor');
  const scratchDir = path.join(tmp, 'disk');
  for (const d of [serviceWorkspaceDir, floorDir, scratchDir]) fs.mkdirSync(d, { mode: 0o711 });

  const env = cleanEnv({
    BUBBLE_SANDBOX_HOST: '127.0.0.1',
    BUBBLE_SANDBOX_PORT: String(await freePort()),
    BUBBLE_SANDBOX_WORKSPACE_DIR: serviceWorkspaceDir,
    BUBBLE_SANDBOX_ENVIRONMENTS_DIR: ENVIRONMENTS_DIR,
    // Multipart framing rides on top of the 8 MiB; the default (10 MiB) leaves room already.
    BUBBLE_SANDBOX_MAX_UPLOAD_SIZE_BYTES: String(Math.max(10 * MiB, sizes.uploadBytes + MiB)),
    // The changed-files phase has every one of its files reported, as before the lists were capped.
    BUBBLE_SANDBOX_MAX_CHANGED_FILES: String(Math.max(1000, sizes.manyFiles)),
    // Issue 17's memory figure holds 50 sessions while the bench's own ones still exist.
    ...ISSUE17_SERVICE_ENV,
  });
  const config = loadConfig(env, PROJECT_ROOT);

  log('starting the service');
  const server: BenchServer = await startService(env);
  cleanups.push(() => server.stop());
  log(`service pid ${server.pid} at ${server.baseUrl}`);
  const client = new BenchClient(server.baseUrl);
  cleanups.push(() => client.close());
  const floor: Floor = await createFloor(config, floorDir);
  cleanups.push(() => floor.close());
  const ctx: BenchContext = { server, client, floor, config, sizes, serviceWorkspaceDir, scratchDir, log };

  // Warm the service up (JIT, caches) before anything is measured, the idle RSS included.
  await createSession(client, 'bench-warm');
  for (let i = 0; i < 20; i++) {
    const r = await executeIn(client, 'bench-warm', { script: PRINT_X });
    if (r.status !== 200 || r.result?.status !== 'ok') throw new Error(`warm-up execution failed: ${r.status} ${r.text.slice(0, 500)}\n${server.tail()}`);
  }

  log('RSS: idle, then peak while a script prints 100 MB');
  const rss = await measureRss(ctx);
  log(`latency: ${sizes.n} runs per series, interleaved service/floor/floor w/o cgroup/raw/bare`);
  const latency = await measureLatency(ctx);
  log('throughput');
  const throughput = await measureThroughput(ctx);
  log('session create/delete');
  const sessions = await measureSessions(client, sizes.sessions);
  log('upload');
  const upload = await measureUpload(ctx);
  log(`changed-files report with ${sizes.manyFiles} files`);
  const changedFiles = await measureChangedFiles(ctx);
  log('run_code: warm interpreter vs cold execute');
  const runCode = await measureRunCode({ ...ctx, servicePid: server.pid });
  const issue17 = await measureIssue17({ ...ctx, floorDir, serviceEnv: env });
  log('PTY keystroke to echo through the WebSocket');
  const pty = await measurePty({ client, server, n: sizes.n, warmup: sizes.warmup, log });
  log('ports/ proxy vs connectPort to the same server');
  const ports = await measurePorts({ client, server, n: sizes.n, warmup: sizes.warmup, log, serviceWorkspaceDir });
  log('rich outputs and notebooks');
  const rich = await measureRich({ client, server, n: sizes.n, warmup: sizes.warmup, log });
  log('root filesystems: create with writable_root, execute in rootfs vs venv');
  const rootfs = await measureRootfs({ client, server, n: sizes.n, warmup: sizes.warmup, log, serviceWorkspaceDir });
  log('stopping the service');
  await server.stop();
  log('three replicas: forwarding overhead, and throughput against one replica');
  const cluster = await measureCluster({ n: sizes.n, warmup: sizes.warmup, log });

  // Session create/delete and upload again on a service without the per-session loop-mounted
  // quota image: tells the image's share of those costs from the rest.
  log('session create/delete and upload with BUBBLE_SANDBOX_WORKSPACE_QUOTA=off');
  const plainDir = path.join(tmp, 'service-no-quota');
  fs.mkdirSync(plainDir, { mode: 0o711 });
  const plainServer = await startService({ ...env, BUBBLE_SANDBOX_PORT: String(await freePort()), BUBBLE_SANDBOX_WORKSPACE_DIR: plainDir, BUBBLE_SANDBOX_WORKSPACE_QUOTA: 'off' });
  cleanups.push(() => plainServer.stop());
  const plainClient = new BenchClient(plainServer.baseUrl);
  cleanups.push(() => plainClient.close());
  const noQuota = {
    sessions: await measureSessions(plainClient, Math.min(50, sizes.sessions)),
    upload: await measureUpload({ client: plainClient, sizes, scratchDir }),
  };
  await plainServer.stop();

  const results = { latency, throughput, sessions, upload, changed_files: changedFiles, rss, run_code: runCode, issue17, without_workspace_quota: noQuota, egress: await measureEgress({ n: sizes.n, log }), pty, ports, rich, rootfs, cluster };
  const rows = [...buildRows(results), ...issue17Rows(issue17, runCode), ...egressRows(results.egress), ...ptyRows(pty), ...portsRows(ports), ...richRows(rich), ...rootfsRows(rootfs), ...clusterRows(cluster)];
  const machine = machineInfo();
  const out = {
    machine,
    load_average_at_start: loadAtStart,
    sandbox: { cgroups: floor.sandbox.cgroupMode, seccomp: floor.sandbox.seccomp },
    service_ready_checks: server.readyChecks,
    settings: {
      max_concurrent_executions: config.maxConcurrentExecutions,
      max_queued_executions: config.maxQueuedExecutions,
      log_level: config.logLevel,
      memory_limit_bytes: config.memoryLimitBytes,
      max_output_chars: config.maxOutputChars,
    },
    sizes,
    results,
    table: rows,
    duration_s: Math.round((Date.now() - started) / 100) / 10,
  };
  const resultsDir = path.join(PROJECT_ROOT, 'bench-results');
  fs.mkdirSync(resultsDir, { recursive: true });
  const file = path.join(resultsDir, 'latest.json');
  fs.writeFileSync(file, `${JSON.stringify(out, null, 2)}\n`);

  process.stdout.write(`\nbubble-sandbox benchmark — ${machine.cpu_model}, ${machine.cores} cores, ${machine.kernel}, node ${machine.node}, ${machine.bwrap}, cgroups ${out.sandbox.cgroups}, ${machine.date}\n`);
  process.stdout.write(`floor = createSandbox(config).runner.run in the bench process (w/o cgroup: same with CGROUPS=off); raw = bwrap with the same options and uid, no sh wrapper/setpriv/cgroup; bare = python3 -c outside any sandbox\n\n`);
  if (Math.max(loadAtStart[0] ?? 0, machine.load_average[0] ?? 0) > machine.cores) {
    process.stdout.write(`warning: load average ${loadAtStart.join(' ')} at start, ${machine.load_average.join(' ')} at end on ${machine.cores} cores: other work competed with this run; absolute times are inflated, ratios less so\n\n`);
  }
  process.stdout.write(`${renderTable(rows)}\n\nfigures: ${path.relative(process.cwd(), file) || file} (${out.duration_s} s)\n`);
}

main()
  .catch((err: unknown) => {
    log(`the benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exitCode = 1;
  })
  .finally(() => cleanup().then(() => log('cleaned up')));
