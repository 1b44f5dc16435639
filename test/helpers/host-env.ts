// Paths, ports, environments and temp dirs for running the service as a process: without vitest,
// so the benchmark (bench/lib/server.ts) uses them too.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const PROJECT_ROOT = path.resolve(import.meta.dirname, '..', '..');
export const BIN = path.join(PROJECT_ROOT, 'bin', 'bubble-sandbox.js');
export const ENVIRONMENTS_DIR = path.join(PROJECT_ROOT, 'environments');

/** A port that was free a moment ago: listen on 0, read the number, close. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error('no port'));
        return;
      }
      srv.close(() => resolve(addr.port));
    });
  });
}

/** The parent environment without any BUBBLE_SANDBOX_* variable, so settings never leak in. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('BUBBLE_SANDBOX_') && v !== undefined) env[k] = v;
  return { ...env, BUBBLE_SANDBOX_ENVIRONMENTS_DIR: ENVIRONMENTS_DIR, ...extra };
}

/** A fresh directory under os.tmpdir() that sandbox uids can traverse (mode 0711). */
export function makeTempDir(prefix: string, mode = 0o711): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, mode);
  return dir;
}

/** Lazily unmounts every mount at or below `dir` (a resolved path), deepest first. */
export function unmountAllUnder(dir: string): void {
  const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) spawnSync('umount', ['-l', m]);
}

/**
 * Removes a test's temp directory. A server killed with SIGKILL (or a failed test) leaves quota
 * images mounted below it, so those are detached first.
 */
export function removeTempDir(dir: string): void {
  unmountAllUnder(dir);
  fs.rmSync(dir, { recursive: true, force: true });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
