// What every benchmark phase gets: the running service, a client for it, the in-process floor,
// the configuration both use, and the sizes of the runs.
import type { Config } from '../../src/config.js';
import type { Floor } from './floor.js';
import type { BenchClient } from './http.js';
import type { BenchServer } from './server.js';

export interface BenchSizes {
  /** Samples per latency series. */
  n: number;
  warmup: number;
  /** Executions per throughput measurement (per side, per client count). */
  throughputN: number;
  clientCounts: number[];
  sessions: number;
  uploadBytes: number;
  uploadReps: number;
  manyFiles: number;
  manyFilesReps: number;
  snapshotReps: number;
  /** The issue-17 phases (warm sandboxes against the raw bwrap floor). */
  warm: WarmSizes;
}

export interface WarmSizes {
  /** Rounds of the interleaved execute / one-shot / raw bwrap series (after `warmup` unrecorded ones). */
  n: number;
  warmup: number;
  /** Rounds of the pandas script (service, then raw bwrap cold); each takes about a second. */
  pandasN: number;
  /** Seconds of each half of the 4-client throughput run (two halves per side, alternated). */
  throughputHalfSeconds: number;
  /** Sessions held at once for the memory figure. */
  memorySessions: number;
  /** run_code against a cold execute in a fresh session: how many fresh sessions. */
  coldSessions: number;
}

export interface BenchContext {
  server: BenchServer;
  client: BenchClient;
  floor: Floor;
  config: Config;
  sizes: BenchSizes;
  /** Root of the service's WORKSPACE_DIR. */
  serviceWorkspaceDir: string;
  /** A scratch directory on the same file system, for the plain disk write. */
  scratchDir: string;
  log(message: string): void;
}

export const PRINT_X = "print('x')";

/**
 * Sizes of the issue-17 phases: the defaults keep them together under about 2.5 minutes here;
 * BENCH_SIZE=small shrinks them for iterating on the bench itself (figures then only indicative).
 * Each can be set alone: BENCH_WARM_N, BENCH_WARM_PANDAS_N, BENCH_WARM_THROUGHPUT_S,
 * BENCH_WARM_MEMORY_SESSIONS, BENCH_WARM_COLD_SESSIONS.
 */
export function warmSizesFromEnv(): WarmSizes {
  const small = process.env.BENCH_SIZE === 'small';
  return {
    n: intFromEnv('BENCH_WARM_N', small ? 15 : 80),
    warmup: small ? 3 : 10,
    pandasN: intFromEnv('BENCH_WARM_PANDAS_N', small ? 3 : 10),
    throughputHalfSeconds: intFromEnv('BENCH_WARM_THROUGHPUT_S', small ? 1 : 3),
    memorySessions: intFromEnv('BENCH_WARM_MEMORY_SESSIONS', small ? 8 : 50),
    coldSessions: intFromEnv('BENCH_WARM_COLD_SESSIONS', small ? 5 : 30),
  };
}

export function intFromEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  return v;
}
