// A fresh host directory per test holding `ws` (the workspace) and `outside` (what a planted
// link points at, which must never change).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach } from 'vitest';

export interface Fixture {
  base: string;
  ws: string;
  outside: string;
}

async function makeFixture(): Promise<Fixture> {
  const base = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'bubble-wsfs-'));
  const ws = path.join(base, 'ws');
  const outside = path.join(base, 'outside');
  await fs.promises.mkdir(ws);
  await fs.promises.mkdir(outside);
  return { base, ws, outside };
}

/**
 * Gives every test (of the file, or of the describe block it is called in) a fresh fixture,
 * removed after the test. The object returned reads the directories of the test running now.
 */
export function useFixture(): Fixture {
  let current: Fixture | null = null;
  beforeEach(async () => {
    current = await makeFixture();
  });
  afterEach(() => {
    // GNU rm never follows links and copes with trees deeper than PATH_MAX.
    if (current) execFileSync('rm', ['-rf', '--one-file-system', current.base]);
    current = null;
  });
  const now = (): Fixture => {
    if (!current) throw new Error('the workspace fixture exists only while a test runs');
    return current;
  };
  return {
    get base() {
      return now().base;
    },
    get ws() {
      return now().ws;
    },
    get outside() {
      return now().outside;
    },
  };
}

export function mkfifo(p: string): void {
  execFileSync('mkfifo', [p]);
}

/** Rejects if `promise` has not settled within ms (a FIFO open that blocks would hang forever). */
export async function within<T>(ms: number, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The rejection of `promise` (fails the test if it resolves). */
export async function rejectionOf(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof Error) return err;
    throw new Error(`rejected with a non-Error: ${String(err)}`);
  }
  throw new Error('expected a rejection, but it resolved');
}

export function listDir(p: string): string[] {
  return fs.readdirSync(p).sort();
}
