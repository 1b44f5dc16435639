// What the issue-17 phases read from the running service besides their timings: its warm-sandbox
// metrics (agreed names: bubble_sandbox_warm_sandboxes{state}, _warm_claims_total{result},
// _warm_memory_bytes, and _warm_forks_starting with fork servers) from GET /metrics, and the memory of its process tree from /proc.
// Every reader copes with a service that has no warm sandboxes (before issue 17): the metric
// is then reported as absent, and the waits return at once.
import fs from 'node:fs';
import type { BenchClient } from './http.js';
import { now, sleep } from './stats.js';

export const WARM_METRICS = {
  sandboxes: 'bubble_sandbox_warm_sandboxes',
  claims: 'bubble_sandbox_warm_claims_total',
  memory: 'bubble_sandbox_warm_memory_bytes',
  forking: 'bubble_sandbox_warm_forks_starting',
} as const;

/** One scrape of /metrics: the declared metric names, and every sample by `name{labels}`. */
export interface Scrape {
  declared: Set<string>;
  samples: Map<string, number>;
}

export function parseMetrics(text: string): Scrape {
  const declared = new Set<string>();
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.startsWith('# TYPE ')) {
      const name = line.split(' ')[2];
      if (name) declared.add(name);
      continue;
    }
    if (line === '' || line.startsWith('#')) continue;
    const cut = line.lastIndexOf(' ');
    const value = Number(line.slice(cut + 1));
    if (cut > 0 && Number.isFinite(value)) samples.set(line.slice(0, cut), value);
  }
  return { declared, samples };
}

export async function scrape(client: BenchClient): Promise<Scrape> {
  const res = await client.request('GET', '/metrics');
  if (res.status !== 200) throw new Error(`GET /metrics: ${res.status} ${res.text.slice(0, 200)}`);
  return parseMetrics(res.text);
}

/**
 * A sample's value; a declared metric without that sample counts 0 (prom-client prints no line for
 * a label value never set); `undefined` when the service does not have the metric at all.
 */
export function sample(s: Scrape, name: string, labels?: Record<string, string>): number | undefined {
  if (!s.declared.has(name)) return undefined;
  const key = labels ? `${name}{${Object.entries(labels).map(([k, v]) => `${k}="${v}"`).join(',')}}` : name;
  return s.samples.get(key) ?? 0;
}

export interface Claims { hit: number; miss: number }

export function claims(s: Scrape): Claims | undefined {
  const hit = sample(s, WARM_METRICS.claims, { result: 'hit' });
  if (hit === undefined) return undefined;
  return { hit, miss: sample(s, WARM_METRICS.claims, { result: 'miss' }) ?? 0 };
}

/** Claims between two scrapes; `undefined` without the metric. */
export function claimsBetween(before: Scrape, after: Scrape): Claims | undefined {
  const a = claims(before);
  const b = claims(after);
  return a && b ? { hit: b.hit - a.hit, miss: b.miss - a.miss } : undefined;
}

/** A running total of claims; stays null while the service has no claims metric. */
export function addClaims(total: Claims | null, c: Claims | undefined): Claims | null {
  if (!c) return total;
  return { hit: (total?.hit ?? 0) + c.hit, miss: (total?.miss ?? 0) + c.miss };
}

/** Counts of the waits for refills over a phase: how often, how long, how many ran into the cap. */
export interface SettleStats { waits: number; waited_ms: number; capped: number; metric_present: boolean }

export function newSettleStats(): SettleStats {
  return { waits: 0, waited_ms: 0, capped: 0, metric_present: false };
}

/**
 * Waits until no warm sandbox is being started and no fork server is forking its spare, so that
 * the next measured request (service or floor) does not share the machine with a background
 * refill (a used-once warm sandbox's, or a fork server's after each of its executions: a fork,
 * namespaces, mounts, a cgroup placement that waits for RCU). Two readings of 0 a few ms apart:
 * an execution's answer may reach the client just before its refill is counted as starting.
 * Without the metric: one scrape, then on at once. Returns the last scrape.
 */
export async function settleWarmPool(client: BenchClient, stats: SettleStats, capMs = 2000): Promise<Scrape> {
  const t0 = now();
  let zeros = 0;
  let last = await scrape(client);
  for (;;) {
    const sandboxes = sample(last, WARM_METRICS.sandboxes, { state: 'starting' });
    if (sandboxes === undefined) return last;
    const starting = sandboxes + (sample(last, WARM_METRICS.forking) ?? 0);
    stats.metric_present = true;
    zeros = starting === 0 ? zeros + 1 : 0;
    if (zeros >= 2) break;
    if (now() - t0 > capMs) {
      stats.capped += 1;
      break;
    }
    await sleep(zeros === 1 ? 3 : 5);
    last = await scrape(client);
  }
  stats.waits += 1;
  stats.waited_ms += now() - t0;
  return last;
}

/** The process ids below `root` (not itself), from the ppid field of every /proc/<pid>/stat. */
export function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(entry));
    children.set(ppid, list);
  }
  const out: number[] = [];
  const queue = [...(children.get(root) ?? [])];
  while (queue.length > 0) {
    const pid = queue.shift() as number;
    out.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return out;
}

/** A /proc/<pid>/smaps_rollup line in KiB (Rss, Pss); 0 for a process that is gone or unreadable. */
function rollupKiB(pid: number, field: 'Rss' | 'Pss'): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export interface TreeMemory {
  processes: number;
  /** Summed RSS: shared pages (the interpreter, libraries) counted once per process. */
  rss_kib: number;
  /** Summed PSS: shared pages split between the processes that map them. */
  pss_kib: number;
}

/** Memory of every process below the service (sandboxes, helpers), the service itself left out. */
export function treeMemory(servicePid: number): TreeMemory {
  const pids = descendants(servicePid);
  let rss = 0;
  let pss = 0;
  for (const pid of pids) {
    rss += rollupKiB(pid, 'Rss');
    pss += rollupKiB(pid, 'Pss');
  }
  return { processes: pids.length, rss_kib: rss, pss_kib: pss };
}

/** CPU time (ms) the process and everything below it have used so far; gone processes count 0. */
export function treeCpuMs(root: number): number {
  let ticks = 0;
  for (const pid of [root, ...descendants(root)]) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]); // utime, stime
    } catch {
      // gone meanwhile
    }
  }
  return ticks * 10; // USER_HZ is 100 on Linux
}

export interface QuietWait { waited_ms: number; capped: boolean; last_busy_share: number }

/**
 * Waits until the service's process tree is quiet: under `maxBusyShare` of one core in each of
 * two windows of `windowMs` in a row. Earlier phases leave background work behind (the
 * workspace pool refilling after many creates, unmounts of deleted sessions, refills of warm
 * sandboxes) that a latency measured right after them would share the machine with.
 */
export async function waitForQuietService(pid: number, opts: { windowMs?: number; maxBusyShare?: number; capMs?: number } = {}): Promise<QuietWait> {
  const windowMs = opts.windowMs ?? 250;
  const maxBusy = opts.maxBusyShare ?? 0.05;
  const capMs = opts.capMs ?? 15_000;
  const t0 = now();
  let quiet = 0;
  let share = Number.NaN;
  let before = treeCpuMs(pid);
  while (quiet < 2) {
    if (now() - t0 > capMs) return { waited_ms: now() - t0, capped: true, last_busy_share: share };
    const w0 = now();
    await sleep(windowMs);
    const after = treeCpuMs(pid);
    share = (after - before) / (now() - w0);
    before = after;
    quiet = share <= maxBusy ? quiet + 1 : 0;
  }
  return { waited_ms: now() - t0, capped: false, last_busy_share: share };
}
