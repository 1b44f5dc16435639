// Prometheus metrics from a registry per app instance (tests build many apps in one process).
// The text passes `promtool check metrics`: prom-client's default process and Node.js metrics keep
// their standard names (process_cpu_seconds_total, process_resident_memory_bytes, ...), except the
// three gauges it names *_total (their content is in nodejs_active_resources{type} and
// nodejs_active_handles/requests{type} as well).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { SessionObserver } from '../sessions/session-manager.js';
import { VERSION } from '../version.js';

export interface Metrics {
  registry: Registry;
  executions: Counter<'status'>;
  executionDuration: Histogram;
  sessionsActive: Gauge;
  uploadBytes: Counter;
  rejected: Counter<'reason'>;
  executionsRunning: Gauge;
  workspacePoolReady: Gauge;
  workspacesCreated: Counter<'source'>;
  httpDuration: Histogram<'method' | 'route' | 'status_code'>;
  executionsQueued: Gauge;
  interpretersLive: Gauge;
  egressRequests: Counter<'decision'>;
  forwardedRequests: Counter<'node' | 'outcome'>;
  warmSandboxes: Gauge<'state'>;
  warmClaims: Counter<'result'>;
  warmDiscarded: Counter<'reason'>;
  warmMemory: Gauge;
  warmForking: Gauge;
}

/** Default metrics prom-client exposes as gauges under a counter's *_total name. */
const MISNAMED_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  for (const name of MISNAMED_DEFAULTS) registry.removeSingleMetric(name);
  new Gauge({
    name: 'bubble_sandbox_build_info',
    help: 'Always 1; the labels name the running version',
    labelNames: ['version', 'node_version'],
    registers: [registry],
  }).set({ version: VERSION, node_version: process.version }, 1);
  return {
    registry,
    executions: new Counter({ name: 'bubble_sandbox_executions_total', help: 'Executions finished, by status', labelNames: ['status'], registers: [registry] }),
    executionDuration: new Histogram({
      name: 'bubble_sandbox_execution_duration_seconds',
      help: 'Wall-clock duration of executions',
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers: [registry],
    }),
    sessionsActive: new Gauge({ name: 'bubble_sandbox_sessions_active', help: 'Sessions that exist now', registers: [registry] }),
    uploadBytes: new Counter({ name: 'bubble_sandbox_upload_bytes_total', help: 'Bytes accepted by uploads', registers: [registry] }),
    forwardedRequests: new Counter({
      name: 'bubble_sandbox_forwarded_requests_total',
      help: 'Requests and WebSocket upgrades for another replica\'s session, by that replica (node) and outcome: answered (by the peer) or unavailable (503 NODE_UNAVAILABLE)',
      labelNames: ['node', 'outcome'],
      registers: [registry],
    }),
    rejected: new Counter({ name: 'bubble_sandbox_rejected_requests_total', help: 'Requests refused, by reason (error code)', labelNames: ['reason'], registers: [registry] }),
    executionsRunning: new Gauge({ name: 'bubble_sandbox_executions_running', help: 'Sandboxes running now', registers: [registry] }),
    workspacePoolReady: new Gauge({ name: 'bubble_sandbox_workspace_pool_ready', help: 'Quota workspaces built ahead and ready for new sessions', registers: [registry] }),
    workspacesCreated: new Counter({
      name: 'bubble_sandbox_workspaces_created_total',
      help: 'Workspaces of new sessions, by source: pool (claimed ready) or built (on the request path)',
      labelNames: ['source'],
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: 'bubble_sandbox_http_request_duration_seconds',
      help: 'Time from request to answer, by method, route template and status code',
      labelNames: ['method', 'route', 'status_code'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [registry],
    }),
    executionsQueued: new Gauge({ name: 'bubble_sandbox_executions_queued', help: 'Executions waiting for a free sandbox slot', registers: [registry] }),
    interpretersLive: new Gauge({ name: 'bubble_sandbox_interpreters_live', help: 'Persistent run_code interpreters alive now', registers: [registry] }),
    warmSandboxes: new Gauge({ name: 'bubble_sandbox_warm_sandboxes', help: 'Pre-started sandboxes, by state: idle (ready to be claimed) or starting', labelNames: ['state'], registers: [registry] }),
    warmClaims: new Counter({ name: 'bubble_sandbox_warm_claims_total', help: 'Executions that found a warm sandbox ready for them (hit) or spawned one (miss)', labelNames: ['result'], registers: [registry] }),
    warmDiscarded: new Counter({
      name: 'bubble_sandbox_warm_discarded_total',
      help: 'Warm sandboxes ended unused, by reason (idle, budget, max, memory_pressure, replaced, dropped, shutdown, env, shadowed, died)',
      labelNames: ['reason'],
      registers: [registry],
    }),
    warmMemory: new Gauge({ name: 'bubble_sandbox_warm_memory_bytes', help: 'Memory the idle warm sandboxes hold, from their cgroups', registers: [registry] }),
    warmForking: new Gauge({ name: 'bubble_sandbox_warm_forks_starting', help: 'Fork servers forking their next execution ahead now (the spare: its namespaces, mounts and cgroup being made)', registers: [registry] }),
    egressRequests: new Counter({
      name: 'bubble_sandbox_egress_requests_total',
      help: 'Connections the egress proxy of allowlist sessions let through (allowed) or refused (denied)',
      labelNames: ['decision'],
      registers: [registry],
    }),
  };
}

/** Feeds execution and session events from the session manager into the metrics. */
export function metricsObserver(metrics: Metrics): SessionObserver {
  return {
    onFinished(result: { status: string; duration_ms: number }): void {
      metrics.executions.inc({ status: result.status });
      metrics.executionDuration.observe(result.duration_ms / 1000);
    },
    onSessionCountChanged(n: number): void {
      metrics.sessionsActive.set(n);
    },
    onWorkspaceCreated(source: 'pool' | 'built'): void {
      metrics.workspacesCreated.inc({ source });
    },
    onWorkspacePoolChanged(ready: number): void {
      metrics.workspacePoolReady.set(ready);
    },
    onEgressDecision(decision: 'allowed' | 'denied'): void {
      metrics.egressRequests.inc({ decision });
    },
    onWarmCounts(c: Parameters<NonNullable<SessionObserver['onWarmCounts']>>[0]): void {
      metrics.warmSandboxes.set({ state: 'idle' }, c.idle);
      metrics.warmSandboxes.set({ state: 'starting' }, c.starting);
      metrics.warmMemory.set(c.memoryBytes);
      metrics.warmForking.set(c.forking);
    },
    onWarmClaim(result: 'hit' | 'miss'): void {
      metrics.warmClaims.inc({ result });
    },
    onWarmDiscarded(reason: string): void {
      metrics.warmDiscarded.inc({ reason });
    },
  };
}
