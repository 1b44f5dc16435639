// Liveness, readiness (a real sandbox probe, cached) and Prometheus metrics. No auth.
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { ProbeResult } from '../../sandbox/sandbox.js';
import { NETWORK_MODES } from '../../sessions/network-policy.js';

const ReadySchema = z.object({
  status: z.enum(['ready', 'unavailable']),
  reason: z.string().optional(),
  checks: z.object({
    sandbox: z.object({ available: z.boolean(), reason: z.string().nullable(), duration_ms: z.number() }),
    cgroups: z.object({ mode: z.enum(['v2', 'v1', 'none']), reason: z.string().nullable() }),
    seccomp: z.boolean(),
    self_test: z.object({
      status: z.enum(['disabled', 'running', 'passed', 'failed']),
      passed: z.number().int(),
      failed: z.number().int(),
      failed_probes: z.array(z.string()),
      finished_at: z.string().nullable(),
    }),
    workspace_quota: z.object({ enabled: z.boolean(), reason: z.string().nullable() }),
    change_tracking: z.object({ mode: z.enum(['fanotify', 'scan']), reason: z.string().nullable() }).describe('how executions learn which files they changed: from the kernel (fanotify), or by scanning the workspace'),
    workspace_pool: z.object({ size: z.number().int(), ready: z.number().int() }),
    environments: z.object({ usable: z.array(z.string()), unusable: z.array(z.string()) }),
    network: z.object({
      modes: z.array(z.enum(NETWORK_MODES)).describe('network modes a session or one-shot execution may ask for on this host'),
      unavailable: z.record(z.string(), z.string()).describe('mode → why this host cannot provide it (asking for it is 422 NETWORK_MODE_UNAVAILABLE)'),
    }),
    shutting_down: z.boolean(),
  }),
}).meta({ id: 'Ready', description: 'ready when a real sandbox probe passes, else unavailable with the reason' });

export const probeRoutes: FastifyPluginAsyncZod = async (app) => {
  const { sandbox, sessions, metrics, config } = app.deps;
  let cached: { at: number; result: ProbeResult } | null = null;
  let inflight: Promise<ProbeResult> | null = null;

  async function probe(): Promise<ProbeResult> {
    const fresh = cached && Date.now() - cached.at < config.readyCacheSeconds * 1000;
    if (fresh && cached) return cached.result;
    inflight ??= sandbox.probe().then((result) => {
      cached = { at: Date.now(), result };
      inflight = null;
      return result;
    });
    return inflight;
  }

  app.get('/healthz', { schema: { tags: ['probes'], operationId: 'getHealth', summary: 'Liveness: 200 while the process serves', response: { 200: z.object({ status: z.literal('ok') }) } } }, () => ({ status: 'ok' as const }));

  app.get('/readyz', { schema: { tags: ['probes'], operationId: 'getReadiness', summary: 'Readiness: a real sandbox probe (cached)', response: { 200: ReadySchema, 503: ReadySchema } } }, async (_request, reply) => {
    const [result, envs] = await Promise.all([probe(), import('../../sandbox/environments.js').then((m) => m.discoverEnvironments(config.environmentsDir, config.workspaceDir))]);
    const checks = {
      sandbox: result,
      cgroups: { mode: sandbox.cgroupMode, reason: sandbox.cgroupReason },
      seccomp: sandbox.seccomp,
      workspace_quota: sessions.quota,
      change_tracking: sessions.changeTracking,
      workspace_pool: sessions.workspacePool,
      self_test: app.deps.selfTest?.() ?? { status: 'disabled' as const, passed: 0, failed: 0, failed_probes: [], finished_at: null },
      environments: { usable: envs.filter((e) => e.usable).map((e) => e.name), unusable: envs.filter((e) => !e.usable).map((e) => e.name) },
      network: { modes: sessions.networks.available.modes, unavailable: sessions.networks.available.unavailable },
      shutting_down: sessions.isClosing || app.deps.shuttingDown?.() === true,
    };
    let reason: string | null = null;
    if (checks.shutting_down) reason = 'the service is shutting down';
    else if (!result.available) reason = result.reason ?? 'the sandbox probe failed';
    else if (checks.self_test.status === 'failed') reason = `the isolation self-test failed: ${checks.self_test.failed_probes.join(', ')}`;
    else if (checks.environments.usable.length === 0) reason = 'no usable environment (run npm run setup)';
    if (reason !== null) return reply.code(503).send({ status: 'unavailable' as const, reason, checks });
    return { status: 'ready' as const, checks };
  });

  app.get('/metrics', {
    schema: {
      tags: ['probes'], operationId: 'getMetrics', summary: 'Prometheus metrics (bubble_sandbox_*)',
      response: { 200: { description: 'Prometheus text exposition format', content: { 'text/plain': { schema: z.string() } } } },
    },
  }, async (_request, reply) => {
    metrics.executionsRunning.set(sessions.limiter.active);
    metrics.executionsQueued.set(sessions.limiter.queued);
    metrics.interpretersLive.set(sessions.kernels.size);
    void reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });
};
