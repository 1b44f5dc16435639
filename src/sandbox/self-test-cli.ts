// `bubble-sandbox check`: start a real sandbox here and say whether it works, and why not.
// With --full, also run the isolation self-test and exit non-zero unless every probe passed.
import type { Config } from '../config.js';
import { createSandbox } from './sandbox.js';
import { runSelfTest, type SelfTestReport } from './self-test.js';

export function formatSelfTest(report: SelfTestReport): string[] {
  const lines = report.probes.map((p) => `${p.passed ? 'PASS' : 'FAIL'}  ${p.category}/${p.name}  ${p.detail} (${p.duration_ms} ms)`);
  const failed = report.probes.filter((p) => !p.passed).length;
  lines.push(`${report.probes.length - failed} passed, ${failed} failed (${report.duration_ms} ms)`);
  return lines;
}

export async function runCheck(config: Config, opts: { full: boolean; json: boolean }): Promise<number> {
  const sandbox = await createSandbox(config);
  try {
    const probe = await sandbox.probe();
    const report = {
      available: probe.available,
      reason: probe.reason,
      cgroups: sandbox.cgroupMode,
      cgroups_reason: sandbox.cgroupReason,
      seccomp: sandbox.seccomp,
      duration_ms: probe.duration_ms,
    };
    // The self-test needs a sandbox that starts at all; otherwise every probe would say the same.
    const selfTest = opts.full && probe.available ? await runSelfTest(sandbox) : null;
    if (opts.json) {
      console.log(JSON.stringify(opts.full ? { ...report, self_test: selfTest } : report, null, 2));
    } else {
      console.log(probe.available ? `sandbox: available (${probe.duration_ms} ms)` : `sandbox: UNAVAILABLE: ${probe.reason ?? 'unknown'}`);
      console.log(`cgroups: ${sandbox.cgroupMode}${sandbox.cgroupReason ? ` (${sandbox.cgroupReason})` : ''}`);
      console.log(`seccomp: ${sandbox.seccomp ? 'on' : 'off'}`);
      if (opts.full && !selfTest) console.log('self-test: not run (the sandbox does not start)');
      if (selfTest) for (const line of formatSelfTest(selfTest)) console.log(line);
    }
    if (!probe.available) return 1;
    return selfTest && !selfTest.passed ? 1 : 0;
  } finally {
    await sandbox.close();
  }
}
