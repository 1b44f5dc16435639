// Process entry of the service: config → sandbox → session manager → app → listen, and a
// graceful shutdown on SIGTERM/SIGINT.
import pino, { type Logger } from 'pino';
import { isLoopbackHost, type Config } from '../config.js';
import { createSandbox } from '../sandbox/sandbox.js';
import { SessionManager } from '../sessions/session-manager.js';
import { runSelfTest } from '../sandbox/self-test.js';
import { buildApp, type SelfTestSummary } from './app.js';
import { createMetrics, metricsObserver } from './metrics.js';

export function createLogger(config: Config): Logger {
  return pino({
    level: config.logLevel,
    base: { service: 'bubble-sandbox' },
    redact: { paths: ['req.headers.authorization', 'headers.authorization'], censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}

export async function runServer(config: Config): Promise<void> {
  const logger = createLogger(config);
  // First: a second instance on the same host uids stops here (UidRangeInUseError), before it
  // touches any workspace or cgroup.
  const sandbox = await createSandbox(config, logger, { lockUidRange: true });
  const metrics = createMetrics();
  const sessions = new SessionManager({ config, sandbox, logger, observer: metricsObserver(metrics) });
  await sessions.init();
  let selfTest: SelfTestSummary = { status: config.selfTestOnStart ? 'running' : 'disabled', passed: 0, failed: 0, failed_probes: [], finished_at: null };
  const app = await buildApp({ config, sandbox, sessions, metrics, logger, selfTest: () => selfTest });

  if (!config.apiKey && !isLoopbackHost(config.host)) {
    // Only with ALLOW_UNAUTHENTICATED=true: loadConfig refuses it otherwise.
    logger.warn({ host: config.host }, 'listening beyond loopback without BUBBLE_SANDBOX_API_KEY (ALLOW_UNAUTHENTICATED=true): anyone who can reach this port can run code');
  }
  const probe = await sandbox.probe();
  if (probe.available) logger.info({ cgroups: sandbox.cgroupMode, seccomp: sandbox.seccomp, probe_ms: probe.duration_ms }, 'sandbox probe passed');
  else logger.error({ reason: probe.reason }, 'sandbox probe failed: executions will fail until this is fixed (see /readyz)');
  if (sandbox.cgroupMode === 'none') logger.warn({ reason: sandbox.cgroupReason }, 'no cgroups: memory, process and CPU limits are rlimits only');

  await app.listen({ host: config.host, port: config.port });

  if (config.selfTestOnStart) {
    // In the background: the service answers meanwhile; /readyz shows the outcome.
    void runSelfTest(sandbox, { logger }).then((report) => {
      const failed = report.probes.filter((p) => !p.passed);
      selfTest = {
        status: report.passed ? 'passed' : 'failed',
        passed: report.probes.length - failed.length,
        failed: failed.length,
        failed_probes: failed.map((p) => `${p.category}/${p.name}`),
        finished_at: new Date().toISOString(),
      };
      if (report.passed) logger.info({ probes: report.probes.length, duration_ms: report.duration_ms }, 'isolation self-test passed');
      else logger.warn({ failed: failed.map((p) => ({ probe: `${p.category}/${p.name}`, detail: p.detail })) }, 'isolation self-test found unprotected properties');
    }, (err: unknown) => logger.error({ err }, 'isolation self-test could not run'));
  }

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, grace_seconds: config.shutdownGraceSeconds }, 'shutting down');
    const closing = app.close();
    await sessions.close(config.shutdownGraceSeconds * 1000);
    // Keep-alive sockets that carried the last answers would otherwise hold close() open.
    app.server.closeIdleConnections();
    await closing;
    await sandbox.close();
    logger.info('stopped');
    logger.flush();
    process.exit(0);
  };
  process.once('SIGTERM', () => void shutdown('SIGTERM'));
  process.once('SIGINT', () => void shutdown('SIGINT'));
  await new Promise<never>(() => undefined);
}
