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

export function intFromEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  return v;
}
