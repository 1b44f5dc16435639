// `bubble-sandbox check`: start a real sandbox here and say whether it works, and why not.
import type { Config } from '../config.js';
import { createSandbox } from './sandbox.js';

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
    if (opts.json) console.log(JSON.stringify(report, null, 2));
    else {
      console.log(probe.available ? `sandbox: available (${probe.duration_ms} ms)` : `sandbox: UNAVAILABLE: ${probe.reason ?? 'unknown'}`);
      console.log(`cgroups: ${sandbox.cgroupMode}${sandbox.cgroupReason ? ` (${sandbox.cgroupReason})` : ''}`);
      console.log(`seccomp: ${sandbox.seccomp ? 'on' : 'off'}`);
    }
    return probe.available ? 0 : 1;
  } finally {
    await sandbox.close();
  }
}
