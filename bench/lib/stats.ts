// Small numeric helpers for the benchmark: nearest-rank percentiles and rounding for the report.

export interface Summary {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  mean: number;
  min: number;
  max: number;
}

/** Nearest-rank percentile of an unsorted sample (p in 0..100). */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1] as number;
}

export function summarize(values: readonly number[]): Summary {
  const n = values.length;
  const mean = n === 0 ? Number.NaN : values.reduce((a, b) => a + b, 0) / n;
  return {
    n,
    p50: round(percentile(values, 50)),
    p90: round(percentile(values, 90)),
    p99: round(percentile(values, 99)),
    mean: round(mean),
    min: round(n === 0 ? Number.NaN : Math.min(...values)),
    max: round(n === 0 ? Number.NaN : Math.max(...values)),
  };
}

/** Three decimals: milliseconds to the microsecond. */
export function round(v: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

export function ratio(a: number, b: number): number {
  return b === 0 || !Number.isFinite(a) || !Number.isFinite(b) ? Number.NaN : round(a / b);
}

export { sleep } from '../../test/helpers/host-env.js';

/** Milliseconds since an arbitrary origin, sub-millisecond resolution. */
export const now = () => performance.now();
