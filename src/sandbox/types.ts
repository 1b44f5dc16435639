// Plain values that cross the boundary between the runner and its callers.
import type { Environment } from './environments.js';
import type { PythonError } from './python-error.js';

export type Program =
  | { kind: 'script'; source: string }
  | { kind: 'command'; command: string }
  | { kind: 'argv'; argv: string[] };

export interface ResourceLimits {
  memoryBytes: number;
  pids: number;
  cpuCores: number;
  tmpSizeBytes: number;
  /** RLIMIT_FSIZE: the largest file one process may write. */
  fileSizeBytes: number;
  openFiles: number;
}

export interface VolumeMount {
  name: string;
  hostDir: string;
  mode: 'ro' | 'rw';
}

export interface RunRequest {
  /** null: no venv, the system python3. */
  environment: Environment | null;
  workspaceDir: string;
  volumes: VolumeMount[];
  program: Program;
  stdin?: string | undefined;
  env?: Record<string, string> | undefined;
  timeoutMs: number;
  maxOutputChars: number;
  limits: ResourceLimits;
  /** Host uid/gid the sandbox runs as; null keeps ours (when we are not root). */
  identity: { uid: number; gid: number } | null;
  signal?: AbortSignal | undefined;
  /** The session's network namespace to run in (SessionNetwork.netnsPath); absent: a private loopback-only one. */
  netnsPath?: string | undefined;
  onOutput?: ((stream: 'stdout' | 'stderr', text: string) => void) | undefined;
}

export type ExecutionStatus = 'ok' | 'error' | 'timeout' | 'oom' | 'killed';

export interface RunResult {
  status: ExecutionStatus;
  exit_code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  truncated: boolean;
  max_output_chars: number;
  timed_out: boolean;
  timeout_seconds: number;
  duration_ms: number;
  resources: { memory_peak_bytes: number | null; cpu_ms: number | null };
  error: PythonError | null;
}
