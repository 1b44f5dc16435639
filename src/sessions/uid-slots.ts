// Host uid slots: each live session and each one-shot execution runs as a uid of its own.
export class UidSlots {
  private readonly temporary = new Set<number>();

  /** sessionSlots lists the slots live sessions hold. */
  constructor(private readonly sessionSlots: () => Iterable<number>) {}

  /** A uid slot no live session or one-shot execution uses; slot 0 is kept for probes. */
  free(): number {
    const used = new Set(this.sessionSlots());
    for (const s of this.temporary) used.add(s);
    for (let slot = 1; ; slot++) if (!used.has(slot)) return slot;
  }

  /** A slot (host uid) of its own for a one-shot execution, released by release. */
  reserve(): number {
    const slot = this.free();
    this.temporary.add(slot);
    return slot;
  }

  release(slot: number): void {
    this.temporary.delete(slot);
  }
}
