// Runs once before the suite. Real-bwrap tests are the point of this project: in CI an unusable
// bwrap is a failure, never a silent skip.
import { execFileSync } from 'node:child_process';

export default function setup(): void {
  // The exec helper every sandbox starts through (a no-op when it is up to date).
  execFileSync('bash', [new URL('../scripts/build-exec-helper.sh', import.meta.url).pathname], { stdio: 'inherit' });
  let usable = true;
  let reason = '';
  try {
    execFileSync('bwrap', ['--unshare-all', '--die-with-parent', '--ro-bind', '/usr', '/usr',
      '--symlink', 'usr/bin', '/bin', '--symlink', 'usr/lib', '/lib', '--symlink', 'usr/lib64', '/lib64',
      '--', '/bin/true'], { stdio: 'pipe', timeout: 10_000 });
  } catch (err) {
    usable = false;
    reason = err instanceof Error ? err.message : String(err);
  }
  process.env.BUBBLE_SANDBOX_TEST_BWRAP = usable ? '1' : '0';
  if (!usable && process.env.CI) {
    throw new Error(`bwrap is not usable in CI, refusing to skip the real-sandbox tests: ${reason}`);
  }
  // Per-session uids, quota images, cgroups and network namespaces need root: tests of them skip
  // elsewhere without it, never in CI.
  if (process.env.CI && process.getuid?.() !== 0) {
    throw new Error('CI must run as root: the uid, quota, cgroup and network tests would skip otherwise');
  }
}
