// The first paths of a set in byte order, kept within a count and a byte budget while the set is
// seen one path at a time, in any order: what an execution's change lists and a listing page
// report. A sandbox can make 100,000 files with 1,000-byte paths; sorting them all to keep the
// first thousand would hold every path (and a Buffer per path) at once. A max-heap instead keeps
// only the smallest paths that fit, so memory stays within the budget plus one entry whatever
// the set's size, at O(log n) per path.
//
// The kept paths are always a prefix of the whole set in byte order: every path left out sorts
// after every path kept. So a reader can resume after the last path it got (a listing cursor),
// and "files_truncated" means exactly "there are more, all of them after these".

/** How much one answer may hold. */
export interface PathBudget {
  /** Most paths. */
  maxPaths: number;
  /** Most bytes of UTF-8 paths, all together. */
  maxBytes: number;
}

export const UNLIMITED: PathBudget = { maxPaths: Number.POSITIVE_INFINITY, maxBytes: Number.POSITIVE_INFINITY };

const BEYOND_D7FF = /[\uD800-\uFFFF]/;

/**
 * Byte order of the UTF-8 encodings, without encoding: UTF-16 code unit order differs only
 * where a surrogate (a character beyond U+FFFF) meets U+E000..U+FFFF, so those are remapped.
 */
export function compareByteOrder(a: string, b: string): number {
  // Below U+D800 the two orders agree: the engine's own comparison is much faster than a loop.
  if (!BEYOND_D7FF.test(a) && !BEYOND_D7FF.test(b)) return a < b ? -1 : a > b ? 1 : 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return rank(x) - rank(y);
  }
  return a.length - b.length;
}

function rank(unit: number): number {
  if (unit >= 0xd800 && unit <= 0xdfff) return unit + 0x2000;
  if (unit >= 0xe000) return unit - 0x800;
  return unit;
}

interface Held<T> { path: string; bytes: number; value: T }

/**
 * Offer paths (unique) with a value each; `take()` returns the smallest ones that fit the budget,
 * sorted. `cut` tells whether any offered path was left out.
 */
export class SmallestPaths<T> {
  /** Max-heap on path: the largest kept path is at 0, first to go when over budget. */
  private readonly heap: Held<T>[] = [];
  private bytes = 0;
  /** The smallest path left out so far: nothing at or after it can be kept any more. */
  private bound: string | null = null;

  constructor(private readonly budget: PathBudget) {}

  get cut(): boolean {
    return this.bound !== null;
  }

  /** Whether a path could still be kept (cheap: lets a caller skip work for one that cannot). */
  wants(path: string): boolean {
    return this.bound === null || compareByteOrder(path, this.bound) < 0;
  }

  offer(path: string, value: T): void {
    if (!this.wants(path)) return;
    const held = { path, bytes: Buffer.byteLength(path), value };
    this.push(held);
    this.bytes += held.bytes;
    while (this.heap.length > this.budget.maxPaths || this.bytes > this.budget.maxBytes) {
      const dropped = this.pop();
      this.bytes -= dropped.bytes;
      this.bound = dropped.path; // each one dropped is smaller than the last: it is the heap's maximum
    }
  }

  /** The kept paths in byte order; the collector is empty afterwards. */
  take(): { path: string; value: T }[] {
    const out: { path: string; value: T }[] = [];
    while (this.heap.length > 0) {
      const { path, value } = this.pop();
      out.push({ path, value });
    }
    this.bytes = 0;
    return out.reverse();
  }

  private push(item: Held<T>): void {
    const h = this.heap;
    let i = h.push(item) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (compareByteOrder((h[parent] as Held<T>).path, item.path) >= 0) break;
      h[i] = h[parent] as Held<T>;
      i = parent;
    }
    h[i] = item;
  }

  private pop(): Held<T> {
    const h = this.heap;
    const top = h[0] as Held<T>;
    const last = h.pop() as Held<T>;
    if (h.length === 0) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const r = l + 1;
      const child = r < h.length && compareByteOrder((h[r] as Held<T>).path, (h[l] as Held<T>).path) > 0 ? r : l;
      if (compareByteOrder((h[child] as Held<T>).path, last.path) <= 0) break;
      h[i] = h[child] as Held<T>;
      i = child;
    }
    h[i] = last;
    return top;
  }
}
