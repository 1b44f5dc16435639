// The bench's readers of the warm-sandbox metrics and of the service's process tree: the issue-17
// phases are only fair if the wait for refills really waits, and only honest if an absent metric
// reads as absent (not as zero claims).
import { spawn } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { BenchClient } from '../../bench/lib/http.js';
import { claimsBetween, descendants, newSettleStats, parseMetrics, sample, settleWarmPool, treeMemory } from '../../bench/lib/warm-probe.js';
import { sleep } from '../helpers/host-env.js';

const WARM = (starting: number, hit = 0) => [
  '# HELP bubble_sandbox_warm_sandboxes Warm sandboxes',
  '# TYPE bubble_sandbox_warm_sandboxes gauge',
  'bubble_sandbox_warm_sandboxes{state="idle"} 3',
  `bubble_sandbox_warm_sandboxes{state="starting"} ${starting}`,
  '# TYPE bubble_sandbox_warm_claims_total counter',
  `bubble_sandbox_warm_claims_total{result="hit"} ${hit}`,
  '',
].join('\n');
const WITHOUT = '# TYPE bubble_sandbox_sessions_active gauge\nbubble_sandbox_sessions_active 2\n';

let closeServer: (() => Promise<void>) | null = null;
afterEach(async () => {
  await closeServer?.();
  closeServer = null;
});

/** A /metrics endpoint answering the bodies in turn (the last one from then on); counts scrapes. */
async function metricsServer(bodies: string[]): Promise<{ client: BenchClient; scrapes: () => number }> {
  let n = 0;
  const server = http.createServer((_req, res) => {
    res.end(bodies[Math.min(n, bodies.length - 1)]);
    n += 1;
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = new BenchClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  closeServer = async () => {
    client.close();
    await new Promise((resolve) => server.close(resolve));
  };
  return { client, scrapes: () => n };
}

describe('metrics parsing', () => {
  it('tells a metric the service lacks from a label value never set', () => {
    const s = parseMetrics(WARM(2, 5));
    expect(sample(s, 'bubble_sandbox_warm_sandboxes', { state: 'starting' })).toBe(2);
    expect(sample(s, 'bubble_sandbox_warm_claims_total', { result: 'miss' })).toBe(0);
    expect(sample(parseMetrics(WITHOUT), 'bubble_sandbox_warm_claims_total', { result: 'miss' })).toBeUndefined();
    expect(sample(parseMetrics(WITHOUT), 'bubble_sandbox_sessions_active')).toBe(2);
  });

  it('counts claims between two scrapes, and none without the metric', () => {
    expect(claimsBetween(parseMetrics(WARM(0, 5)), parseMetrics(WARM(0, 7)))).toEqual({ hit: 2, miss: 0 });
    expect(claimsBetween(parseMetrics(WITHOUT), parseMetrics(WITHOUT))).toBeUndefined();
  });
});

describe('waiting for warm refills', () => {
  it('waits until nothing is starting, and past a refill counted just after a 0', async () => {
    // 0 first (the answer arrived before the refill was counted), then the refill, then done.
    const { client, scrapes } = await metricsServer([WARM(0), WARM(1), WARM(1), WARM(0), WARM(0)]);
    const stats = newSettleStats();
    const last = await settleWarmPool(client, stats);
    expect(scrapes()).toBe(5);
    expect(sample(last, 'bubble_sandbox_warm_sandboxes', { state: 'starting' })).toBe(0);
    expect(stats).toMatchObject({ waits: 1, capped: 0, metric_present: true });
  });

  it('gives up at the cap and says so', async () => {
    const { client } = await metricsServer([WARM(1)]);
    const stats = newSettleStats();
    await settleWarmPool(client, stats, 50);
    expect(stats.capped).toBe(1);
    expect(stats.waited_ms).toBeGreaterThanOrEqual(50);
  });

  it('goes on after one scrape when the service has no warm sandboxes', async () => {
    const { client, scrapes } = await metricsServer([WITHOUT]);
    const stats = newSettleStats();
    await settleWarmPool(client, stats);
    expect(scrapes()).toBe(1);
    expect(stats).toMatchObject({ waits: 0, metric_present: false });
  });
});

describe('process tree memory', () => {
  it('finds grandchildren and sums their memory', async () => {
    const child = spawn('/bin/sh', ['-c', '/bin/sleep 30 & /bin/sleep 30 & wait'], { stdio: 'ignore', detached: true });
    try {
      let below: number[] = [];
      for (let i = 0; i < 100 && below.length < 3; i++) {
        await sleep(20);
        below = descendants(process.pid);
      }
      expect(below).toContain(child.pid);
      expect(below.length).toBeGreaterThanOrEqual(3); // sh and its two sleeps
      const mem = treeMemory(child.pid as number);
      expect(mem.processes).toBe(2);
      expect(mem.rss_kib).toBeGreaterThan(0);
      expect(mem.pss_kib).toBeGreaterThan(0);
      expect(mem.pss_kib).toBeLessThanOrEqual(mem.rss_kib);
    } finally {
      process.kill(-(child.pid as number), 'SIGKILL'); // the group: the sleeps too
    }
  });
});
