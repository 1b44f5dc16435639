// Host uid slots: each live session and each one-shot execution runs as a uid of its own.
import { BusyError } from '../errors.js';

export class UidSlots {
  private readonly temporary = new Set<number>();

  /**
   * sessionSlots lists the slots live sessions hold; at most maxTemporary one-shot slots exist at
   * once (the configuration guarantees sessions + that many fit in the uid range, so no two
   * sandboxes ever share a host uid).
   */
  constructor(private readonly sessionSlots: () => Iterable<number>, private readonly maxTemporary: number) {}

  /** A uid slot no live session or one-shot execution uses; slot 0 is kept for probes. */
  free(): number {
    const used = new Set(this.sessionSlots());
    for (const s of this.temporary) used.add(s);
    for (let slot = 1; ; slot++) if (!used.has(slot)) return slot;
  }

  /** A slot (host uid) of its own for a one-shot execution, released by release. */
  reserve(): number {
    if (this.temporary.size >= this.maxTemporary) throw new BusyError(5);
    const slot = this.free();
    this.temporary.add(slot);
    return slot;
  }

  release(slot: number): void {
    this.temporary.delete(slot);
  }
}
