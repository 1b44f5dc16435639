// A network namespace held by an open descriptor of this process: no mount, no name under
// /run/netns, nothing to clean after a crash (the kernel frees the namespace when the last
// descriptor or process in it goes). Node cannot unshare or setns itself, so `unshare --net`
// makes the namespace, brings `lo` up, and waits on its stdin while we open /proc/<its pid>/ns/net;
// then it is let go. Whoever needs to enter the namespace opens `/proc/<our pid>/fd/<fd>`
// (nsenter --net=..., slirp4netns --netns-type=path), which only root may do.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { resolveCommand } from '../spawn.js';

const CREATE_TIMEOUT_MS = 5_000;
// Inside the new namespace: loopback up, then tell the service and wait until it lets go.
const HOLD_SCRIPT = 'ip link set lo up || exit 1; echo ok; read -r _';

export interface HeldNetns {
  readonly fd: number;
  /** What nsenter and slirp4netns open: /proc/<service pid>/fd/<fd>. */
  readonly path: string;
  /** Close the descriptor (idempotent); the kernel frees the namespace once nothing else is in it. */
  close(): void;
}

export async function createNetns(): Promise<HeldNetns> {
  const child = spawn(resolveCommand('unshare'), ['--net', '--', '/bin/sh', '-c', HOLD_SCRIPT], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
  });
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => {
    if (stderr.length < 2000) stderr += c.toString('utf8');
  });
  child.stdin.on('error', () => undefined);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('unshare --net did not become ready in time')), CREATE_TIMEOUT_MS);
      child.stdout.once('data', () => {
        clearTimeout(timer);
        resolve();
      });
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`unshare --net failed (${signal ?? `exit ${code}`}): ${stderr.trim() || 'no message'}`));
      });
    });
    if (child.pid === undefined) throw new Error('unshare --net has no pid');
    const fd = fs.openSync(`/proc/${child.pid}/ns/net`, 'r');
    let open = true;
    return {
      fd,
      path: `/proc/${process.pid}/fd/${fd}`,
      close: () => {
        if (!open) return;
        open = false;
        fs.closeSync(fd);
      },
    };
  } finally {
    // It has done its part either way: end its `read` (or kill it on failure) and reap it.
    child.stdin.end();
    const killer = setTimeout(() => child.kill('SIGKILL'), 1_000);
    await closed;
    clearTimeout(killer);
  }
}
