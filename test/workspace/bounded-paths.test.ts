// The first paths in byte order within a count and byte budget, whatever order they come in.
import { describe, expect, it } from 'vitest';
import { SmallestPaths, UNLIMITED, compareByteOrder, type PathBudget } from '../../src/workspace/bounded-paths.js';

const byteOrder = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));

/** The longest prefix of the sorted paths within the budget: what SmallestPaths must keep. */
function expected(paths: string[], budget: PathBudget): string[] {
  const out: string[] = [];
  let bytes = 0;
  for (const p of [...paths].sort(byteOrder)) {
    bytes += Buffer.byteLength(p);
    if (out.length + 1 > budget.maxPaths || bytes > budget.maxBytes) break;
    out.push(p);
  }
  return out;
}

/** A small deterministic generator, so a failure can be replayed. */
function random(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return s / 2 ** 31;
  };
}

describe('compareByteOrder', () => {
  it('orders like the UTF-8 bytes, also where UTF-16 order differs', () => {
    const words = ['a', 'ab', 'b', '', 'é', '\uFF5E', '\u{1F600}', '\uE000', '\uD7FF', 'z\u{10FFFF}', 'z\uFFFF', 'a/b', 'a-b', 'a0'];
    for (const x of words) for (const y of words) expect(Math.sign(compareByteOrder(x, y)), `${x} vs ${y}`).toBe(Math.sign(byteOrder(x, y)));
  });
});

describe('SmallestPaths', () => {
  it('keeps exactly the sorted prefix that fits, for any arrival order and budget', () => {
    const next = random(42);
    const alphabet = ['a', 'b', '/', 'é', '\u{1F600}', '\uFF5E'];
    for (let round = 0; round < 200; round++) {
      const set = new Set<string>();
      const n = Math.floor(next() * 60);
      while (set.size < n) {
        const len = 1 + Math.floor(next() * 12);
        set.add(Array.from({ length: len }, () => alphabet[Math.floor(next() * alphabet.length)]).join(''));
      }
      const paths = [...set];
      const budget = { maxPaths: Math.floor(next() * 70), maxBytes: next() < 0.2 ? Infinity : Math.floor(next() * 400) };
      const kept = new SmallestPaths<number>(budget);
      paths.forEach((p, i) => kept.offer(p, i));
      const want = expected(paths, budget);
      const got = kept.take();
      expect(got.map((g) => g.path)).toEqual(want);
      for (const g of got) expect(paths[g.value]).toBe(g.path);
      expect(kept.cut).toBe(want.length < paths.length);
    }
  });

  it('holds no more than the budget while offered many more', () => {
    const kept = new SmallestPaths<null>({ maxPaths: 10, maxBytes: 1000 });
    for (let i = 100_000; i > 0; i--) kept.offer(`f${i}`, null);
    expect(kept.take().map((g) => g.path)).toEqual(['f1', 'f10', 'f100', 'f1000', 'f10000', 'f100000', 'f10001', 'f10002', 'f10003', 'f10004']);
    expect(kept.cut).toBe(true);
  });

  it('keeps everything when unlimited', () => {
    const kept = new SmallestPaths<null>(UNLIMITED);
    for (const p of ['c', 'a', 'b']) kept.offer(p, null);
    expect(kept.take().map((g) => g.path)).toEqual(['a', 'b', 'c']);
    expect(kept.cut).toBe(false);
  });
});
