// Where a new session goes: the replica with the most free capacity, counted as the free share
// of its session slots plus the free share of its execution slots (running and queued executions
// take from it). A draining replica takes none. Ties go to the replica that was asked (no hop),
// else to a random one of the tied, so creates spread evenly over replicas of equal load.

export interface NodeLoad {
  node_id: string;
  sessions: number;
  max_sessions: number;
  running: number;
  queued: number;
  max_running: number;
  draining: boolean;
}

export function freeCapacity(l: NodeLoad): number {
  const sessions = Math.max(0, l.max_sessions - l.sessions) / Math.max(1, l.max_sessions);
  const executions = Math.max(0, l.max_running - l.running - l.queued) / Math.max(1, l.max_running);
  return sessions + executions;
}

/** The node id to create on, or null when every replica is draining or full. */
export function choosePlacement(loads: readonly NodeLoad[], self: string, random: () => number = Math.random): string | null {
  const open = loads.filter((l) => !l.draining && l.sessions < l.max_sessions);
  if (open.length === 0) return null;
  const best = Math.max(...open.map(freeCapacity));
  const tied = open.filter((l) => best - freeCapacity(l) < 1e-9);
  if (tied.some((l) => l.node_id === self)) return self;
  return tied[Math.min(tied.length - 1, Math.floor(random() * tied.length))]?.node_id ?? null;
}
