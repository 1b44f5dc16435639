// Finds the end of one call's output in a stream: the driver writes a marker chosen per call
// after the cell's output. Bytes before it are passed on as they arrive (only a tail that could
// be the start of the marker is held back), the marker and anything after it are dropped.
// A marker of an earlier call is just output: only this call's marker counts.

export class MarkerCut {
  private pending: Buffer = Buffer.alloc(0);
  private seen = false;
  private resolveFound: () => void = () => undefined;
  /** Resolves when the marker has gone by. */
  readonly reached: Promise<void>;

  constructor(private readonly marker: Buffer, private readonly onData: (chunk: Buffer) => void) {
    if (marker.length === 0) throw new Error('empty marker');
    this.reached = new Promise((resolve) => {
      this.resolveFound = resolve;
    });
  }

  get found(): boolean {
    return this.seen;
  }

  push(chunk: Buffer): void {
    if (this.seen || chunk.length === 0) return;
    const data = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    const at = data.indexOf(this.marker);
    if (at >= 0) {
      this.seen = true;
      this.pending = Buffer.alloc(0);
      if (at > 0) this.onData(data.subarray(0, at));
      this.resolveFound();
      return;
    }
    const keep = this.partialSuffix(data);
    this.pending = Buffer.from(data.subarray(data.length - keep));
    if (data.length > keep) this.onData(data.subarray(0, data.length - keep));
  }

  /** No marker is coming (the process died or the wait ran out): pass on what was held back. */
  flush(): void {
    if (this.seen) return;
    if (this.pending.length > 0) this.onData(this.pending);
    this.pending = Buffer.alloc(0);
  }

  /** Length of the longest end of `data` that is a proper start of the marker. */
  private partialSuffix(data: Buffer): number {
    const max = Math.min(data.length, this.marker.length - 1);
    for (let n = max; n > 0; n--) {
      if (data[data.length - n] === this.marker[0] && data.subarray(data.length - n).equals(this.marker.subarray(0, n))) return n;
    }
    return 0;
  }
}
