// The isolation self-test: each probe starts a real sandbox on this host and checks one property
// the design relies on (identity, capabilities, namespaces, network, filesystem, environment,
// descriptors, seccomp, limits). A probe that cannot prove its property fails; nothing is skipped,
// so a host that silently lost a protection (no cgroups, no seccomp) shows up as FAIL.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Sandbox } from './sandbox.js';
import { catStatus, clip, fail, ProbeFailure, statusFields, type Outcome, type ProbeContext } from './self-test-kit.js';
import { PROBES } from './self-test-probes.js';

export interface SelfTestProbe {
  name: string;
  category: string;
  passed: boolean;
  detail: string;
  duration_ms: number;
}

export interface SelfTestReport {
  passed: boolean;
  probes: SelfTestProbe[];
  duration_ms: number;
}

export interface SelfTestOptions {
  /** Probes running at once (default 2): enough to finish in a few seconds without crowding the host. */
  concurrency?: number;
  /** Identity slot the probes run as (default 0, like the start-up probe). */
  slot?: number;
  /**
   * 'fork-server': every probe runs in an execution forked by a fork server started for its
   * workspace (warm/fork-server.ts), ended after it, to prove that path keeps every property too.
   * Default 'cold': each probe spawns its own sandbox.
   */
  through?: 'cold' | 'fork-server';
  logger?: Logger;
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}

export const SELF_TEST_PROBES: readonly string[] = PROBES.map((p) => `${p.category}/${p.name}`);

export async function runSelfTest(sandbox: Sandbox, opts: SelfTestOptions = {}): Promise<SelfTestReport> {
  const started = performance.now();
  const identity = sandbox.identityFor(opts.slot ?? 0);
  const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'bubble-sandbox-selftest-'));
  let n = 0;
  let status: Promise<Map<string, string>> | null = null;
  const ctx: ProbeContext = {
    sandbox,
    identity,
    status: () => (status ??= ctx.run(catStatus).then(({ result }) => statusFields(result))),
    async run(program, runOpts = {}) {
      const workspace = path.join(parent, `ws-${++n}`);
      fs.mkdirSync(workspace, { mode: 0o755 });
      if (identity) fs.chownSync(workspace, identity.uid, identity.gid);
      const target = { environment: null, workspaceDir: workspace, volumes: [], limits: { ...sandbox.defaultLimits, ...runOpts.limits }, identity };
      const owner = `self-test:${n}`;
      // A starting fork server is waited for by the run's claim.
      if (opts.through === 'fork-server') sandbox.runner.warm?.prestart(owner, target, { reuse: true });
      try {
        const result = await sandbox.runner.run({
          ...target,
          program,
          env: runOpts.env,
          timeoutMs: runOpts.timeoutMs ?? 10_000,
          maxOutputChars: 20_000,
        });
        return { result, workspace };
      } finally {
        if (opts.through === 'fork-server') await sandbox.runner.warm?.dropOwner(owner);
      }
    },
  };
  try {
    fs.chmodSync(parent, 0o711); // the sandbox uid must reach its workspace, but not list its siblings
    const probes = await mapLimit(PROBES, opts.concurrency ?? 2, async (p): Promise<SelfTestProbe> => {
      const t0 = performance.now();
      let outcome: Outcome;
      try {
        outcome = await p.check(ctx);
      } catch (err) {
        if (!(err instanceof ProbeFailure)) opts.logger?.error({ err, probe: `${p.category}/${p.name}` }, 'self-test probe crashed');
        outcome = fail(err instanceof ProbeFailure ? err.message : `probe error: ${clip(err instanceof Error ? err.message : String(err))}`);
      }
      return { name: p.name, category: p.category, passed: outcome.passed, detail: outcome.detail, duration_ms: Math.round(performance.now() - t0) };
    });
    return { passed: probes.every((p) => p.passed), probes, duration_ms: Math.round(performance.now() - started) };
  } finally {
    fs.rmSync(parent, { recursive: true, force: true });
  }
}
