// Reads a V8 .cpuprofile (node --cpu-prof) and answers where the time went: self time per
// function, per package/module, inclusive time of the project's own functions, and how much
// of a wall-clock window the main thread was busy rather than idle (waiting for sandboxes,
// sockets and the thread pool).

export interface CallFrame { functionName: string; url: string; lineNumber: number; columnNumber: number }
export interface ProfileNode { id: number; callFrame: CallFrame; children?: number[] }
export interface CpuProfile { nodes: ProfileNode[]; startTime: number; endTime: number; samples: number[]; timeDeltas: number[] }

export interface Ranked { name: string; ms: number; share_of_busy: number }

export interface ProfileSummary {
  window_ms: number;
  /** Whether the window came from the driver's clock (true) or is the whole profile. */
  windowed: boolean;
  busy_ms: number;
  idle_ms: number;
  busy_fraction: number;
  gc_ms: number;
  program_ms: number;
  top_self: Ranked[];
  by_module: Ranked[];
  project_inclusive: Ranked[];
  /** Busy time charged to the nearest project frame on the stack (native fs and spawn calls land on their caller). */
  by_project_caller: Ranked[];
}

const SPECIAL = new Set(['(idle)', '(program)', '(garbage collector)', '(root)']);

export function frameName(f: CallFrame): string {
  const fn = f.functionName || '(anonymous)';
  if (SPECIAL.has(fn) || f.url === '') return fn;
  return `${fn} ${shortUrl(f.url)}:${f.lineNumber + 1}`;
}

export function shortUrl(url: string): string {
  const u = url.replace(/^file:\/\//, '');
  const nm = u.lastIndexOf('/node_modules/');
  if (nm >= 0) return u.slice(nm + '/node_modules/'.length);
  const dist = u.indexOf('/dist/');
  if (dist >= 0) return u.slice(dist + 1);
  return u;
}

/** The package (node_modules), node: module or project file a frame belongs to. */
export function moduleOf(f: CallFrame): string {
  if (SPECIAL.has(f.functionName)) return f.functionName;
  if (f.url === '') return '(native / builtin)';
  const short = shortUrl(f.url);
  if (f.url.includes('/node_modules/')) {
    const parts = short.split('/');
    return parts[0]?.startsWith('@') ? `${parts[0]}/${parts[1] ?? ''}` : (parts[0] ?? short);
  }
  if (short.startsWith('node:')) return short.split('/').slice(0, 2).join('/');
  return short;
}

function rank(map: Map<string, number>, busy: number, top: number): Ranked[] {
  return [...map.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([name, us]) => ({ name, ms: Math.round(us / 100) / 10, share_of_busy: Math.round((us / busy) * 1000) / 1000 }));
}

/** window: [start, end] in microseconds of CLOCK_MONOTONIC (process.hrtime / 1000), or null for all. */
export function summarizeProfile(p: CpuProfile, window: { start: number; end: number } | null, top = 10): ProfileSummary {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  const times: number[] = [];
  let t = p.startTime;
  for (const d of p.timeDeltas) times.push((t += d));
  let lo = window?.start ?? p.startTime;
  let hi = window?.end ?? p.endTime;
  let windowed = window !== null;
  if (windowed && !times.some((x) => x >= lo && x <= hi)) {
    windowed = false; // clocks did not line up: fall back to the whole profile
    lo = p.startTime;
    hi = p.endTime;
  }

  const self = new Map<string, number>();
  const modules = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const caller = new Map<string, number>();
  let idle = 0;
  let gc = 0;
  let program = 0;
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const ts = times[i] as number;
    if (ts < lo || ts > hi) continue;
    const dur = (i + 1 < times.length ? (times[i + 1] as number) : p.endTime) - ts;
    const node = byId.get(p.samples[i] as number);
    if (!node || dur <= 0) continue;
    total += dur;
    const fn = node.callFrame.functionName;
    if (fn === '(idle)') {
      idle += dur;
      continue;
    }
    if (fn === '(garbage collector)') gc += dur;
    if (fn === '(program)') program += dur;
    const name = frameName(node.callFrame);
    self.set(name, (self.get(name) ?? 0) + dur);
    const mod = moduleOf(node.callFrame);
    modules.set(mod, (modules.get(mod) ?? 0) + dur);
    const seen = new Set<string>();
    let nearest: string | null = null;
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const f = (byId.get(id) as ProfileNode).callFrame;
      if (!f.url.includes('/dist/')) continue;
      const key = frameName(f);
      nearest ??= key;
      if (seen.has(key)) continue;
      seen.add(key);
      inclusive.set(key, (inclusive.get(key) ?? 0) + dur);
    }
    const charged = nearest ?? `(no project frame) ${mod}`;
    caller.set(charged, (caller.get(charged) ?? 0) + dur);
  }
  const busy = total - idle;
  const windowUs = windowed ? hi - lo : p.endTime - p.startTime;
  return {
    window_ms: Math.round(windowUs / 1000),
    windowed,
    busy_ms: Math.round(busy / 1000),
    idle_ms: Math.round(idle / 1000),
    busy_fraction: Math.round((busy / windowUs) * 1000) / 1000,
    gc_ms: Math.round(gc / 1000),
    program_ms: Math.round(program / 1000),
    top_self: rank(self, busy, top),
    by_module: rank(modules, busy, top + 5),
    project_inclusive: rank(inclusive, busy, 15),
    by_project_caller: rank(caller, busy, 15),
  };
}
