// Process entry of the service: config → sandbox → session manager → app → listen, and a
// graceful shutdown on SIGTERM/SIGINT: /readyz turns 503 at once, the listener stays open for
// SHUTDOWN_DRAIN_SECONDS (SIGTERM only) so a load balancer stops sending first, then running
// executions get SHUTDOWN_GRACE_SECONDS. The start owns what it makes (lifecycle.ts): a start
// that fails before listen succeeds, or an unhandled error at any time, releases all of it (the
// uid-range record, cgroups, the change-tracking helper, pool images and their loop devices,
// mounts) and exits non-zero with a one-line reason on stderr; nothing keeps a failed process
// alive for a supervisor to mistake for a running one.
import type { FastifyInstance } from 'fastify';
import pino, { type Logger } from 'pino';
import { isLoopbackHost, type Config } from '../config.js';
import { createSandbox, type Sandbox } from '../sandbox/sandbox.js';
import { SessionManager } from '../sessions/session-manager.js';
import { runSelfTest } from '../sandbox/self-test.js';
import { buildApp, type SelfTestSummary } from './app.js';
import { OwnedResources, startFailureReason, startFailureStatus } from './lifecycle.js';
import { createMetrics, metricsObserver } from './metrics.js';

/** How long a failed start (or a fatal error) may spend releasing what it made before the process exits anyway. */
const RELEASE_DEADLINE_MS = 10_000;

export function createLogger(config: Config): Logger {
  return pino({
    level: config.logLevel,
    base: { service: 'bubble-sandbox' },
    redact: { paths: ['req.headers.authorization', 'headers.authorization', 'req.headers["x-bubble-cluster-secret"]', 'headers["x-bubble-cluster-secret"]'], censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}

/** A SIGTERM or SIGINT that arrived while starting: the start stops after its current step. */
class StopDuringStart extends Error {
  constructor(readonly signal: NodeJS.Signals) {
    super(`stopped by ${signal} while starting`);
  }
}

interface Started { sandbox: Sandbox; sessions: SessionManager; app: FastifyInstance; setSelfTest(s: SelfTestSummary): void }

interface StartHooks {
  owned: OwnedResources;
  /** Throws StopDuringStart when a signal asked to stop; called between steps. */
  checkpoint: () => void;
  shuttingDown: () => boolean;
}

async function start(config: Config, logger: Logger, { owned, checkpoint, shuttingDown }: StartHooks): Promise<Started> {
  // First: a second instance on the same host uids stops here (UidRangeInUseError), before it
  // touches any workspace or cgroup.
  const sandbox = await createSandbox(config, logger, { lockUidRange: true });
  owned.add('uid-range record and cgroups', () => sandbox.close());
  checkpoint();
  const metrics = createMetrics();
  const sessions = new SessionManager({ config, sandbox, logger, observer: metricsObserver(metrics) });
  // Before init: a half-done init (the helper started, images mounted) is released too.
  owned.add('change-tracking helper, workspace pool and mounts', () => sessions.close(0));
  await sessions.init();
  checkpoint();
  let selfTest: SelfTestSummary = { status: config.selfTestOnStart ? 'running' : 'disabled', passed: 0, failed: 0, failed_probes: [], finished_at: null };
  const app = await buildApp({ config, sandbox, sessions, metrics, logger, selfTest: () => selfTest, shuttingDown });
  owned.add('HTTP listener', async () => {
    const closing = app.close();
    app.server.closeAllConnections();
    await closing;
  });

  if (!config.apiKey && !isLoopbackHost(config.host)) {
    // Only with ALLOW_UNAUTHENTICATED=true: loadConfig refuses it otherwise.
    logger.warn({ host: config.host }, 'listening beyond loopback without BUBBLE_SANDBOX_API_KEY (ALLOW_UNAUTHENTICATED=true): anyone who can reach this port can run code');
  }
  const probe = await sandbox.probe();
  if (probe.available) logger.info({ cgroups: sandbox.cgroupMode, seccomp: sandbox.seccomp, probe_ms: probe.duration_ms }, 'sandbox probe passed');
  else logger.error({ reason: probe.reason }, 'sandbox probe failed: executions will fail until this is fixed (see /readyz)');
  if (sandbox.cgroupMode === 'none') logger.warn({ reason: sandbox.cgroupReason }, 'no cgroups: memory, process and CPU limits are rlimits only');
  checkpoint();

  await app.listen({ host: config.host, port: config.port });
  return { sandbox, sessions, app, setSelfTest: (s) => (selfTest = s) };
}

export async function runServer(config: Config): Promise<never> {
  const logger = createLogger(config);
  const owned = new OwnedResources(logger);
  const exit = (code: number): never => {
    logger.flush();
    process.exit(code);
  };

  let phase: 'starting' | 'serving' | 'stopping' | 'failing' = 'starting';
  let exitStatus = 0;
  const fail = async (err: unknown): Promise<never> => {
    if (phase === 'stopping' || phase === 'failing') {
      // Already on the way out: the stop goes on (it is bounded), but it is no longer a clean one.
      logger.error({ err }, 'unhandled error while stopping');
      exitStatus = 1;
      return new Promise<never>(() => undefined);
    }
    const reason = startFailureReason(err, config);
    logger.fatal({ err, reason }, phase === 'starting' ? 'start-up failed: releasing what it made' : 'unhandled error: releasing everything and exiting');
    phase = 'failing';
    process.stderr.write(`bubble-sandbox: ${reason}\n`);
    await owned.releaseAll(RELEASE_DEADLINE_MS);
    return exit(startFailureStatus(err));
  };
  process.on('uncaughtException', (err) => void fail(err));
  process.on('unhandledRejection', (reason) => void fail(reason));

  let stopRequested: NodeJS.Signals | null = null;
  let onSignal = (signal: NodeJS.Signals) => {
    if (stopRequested !== null) return;
    stopRequested = signal;
    logger.info({ signal }, 'stop requested while starting: stopping after the current step');
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));

  let draining = false;
  let started: Started;
  try {
    started = await start(config, logger, {
      owned,
      checkpoint: () => {
        if (stopRequested !== null) throw new StopDuringStart(stopRequested);
      },
      shuttingDown: () => draining,
    });
  } catch (err) {
    if (!(err instanceof StopDuringStart)) return fail(err);
    phase = 'stopping';
    await owned.releaseAll(RELEASE_DEADLINE_MS);
    logger.info({ signal: err.signal }, 'stopped before serving');
    return exit(0);
  }
  phase = 'serving';
  const { sandbox, sessions, app } = started;

  if (config.selfTestOnStart) {
    // In the background: the service answers meanwhile; /readyz shows the outcome.
    void runSelfTest(sandbox, { logger }).then((report) => {
      const failed = report.probes.filter((p) => !p.passed);
      started.setSelfTest({
        status: report.passed ? 'passed' : 'failed',
        passed: report.probes.length - failed.length,
        failed: failed.length,
        failed_probes: failed.map((p) => `${p.category}/${p.name}`),
        finished_at: new Date().toISOString(),
      });
      if (report.passed) logger.info({ probes: report.probes.length, duration_ms: report.duration_ms }, 'isolation self-test passed');
      else logger.warn({ failed: failed.map((p) => ({ probe: `${p.category}/${p.name}`, detail: p.detail })) }, 'isolation self-test found unprotected properties');
    }, (err: unknown) => logger.error({ err }, 'isolation self-test could not run'));
  }

  let endDrain: (() => void) | null = null;
  const shutdown = async (signal: NodeJS.Signals) => {
    if (phase !== 'serving') {
      endDrain?.(); // a second signal ends the drain at once
      return;
    }
    phase = 'stopping';
    draining = true;
    // A terminal's Ctrl-C (SIGINT) has no load balancer to wait for.
    const drainMs = signal === 'SIGTERM' ? config.shutdownDrainSeconds * 1000 : 0;
    logger.info({ signal, drain_seconds: drainMs / 1000, grace_seconds: config.shutdownGraceSeconds }, 'shutting down');
    if (drainMs > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, drainMs);
        endDrain = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      endDrain = null;
      logger.info('drain over: closing the listener');
    }
    const closing = app.close();
    await sessions.close(config.shutdownGraceSeconds * 1000);
    // Keep-alive sockets that carried the last answers would otherwise hold close() open.
    app.server.closeIdleConnections();
    await closing;
    await sandbox.close();
    logger.info('stopped');
    exit(exitStatus);
  };
  onSignal = (signal) => void shutdown(signal);
  if (stopRequested !== null) void shutdown(stopRequested);
  return new Promise<never>(() => undefined);
}
