// Keeps a call's display outputs in order with its stdout and stderr. They travel on different
// pipes (displays on the control pipe, text on fd 1 and 2), so the driver writes sync token n to
// both streams before it sends display n. Text after token n is held until display n has been
// passed on, and display n is held until both streams have passed token n (or the driver said it
// could not write the token to that stream). finish() releases whatever is left, in order.

type Stream = 'stdout' | 'stderr';

export interface OrderedSinks<D> {
  stdout(chunk: Buffer): void;
  stderr(chunk: Buffer): void;
  display(output: D): void;
}

/** Text held waiting for a display that never comes (forged tokens): past this, order is given up. */
const MAX_HELD_BYTES = 4 * 1024 * 1024;

export class OutputOrder<D> {
  /** Displays passed on so far (they are numbered from 1). */
  private released = 0;
  private readonly passed: Record<Stream, number> = { stdout: 0, stderr: 0 };
  private held: { stream: Stream; seq: number; chunk: Buffer }[] = [];
  private heldBytes = 0;
  private readonly waiting = new Map<number, { output: D; waitFor: Record<Stream, boolean> }>();

  constructor(private readonly sinks: OrderedSinks<D>) {}

  data(stream: Stream, chunk: Buffer): void {
    const seq = this.passed[stream];
    if (seq <= this.released) {
      this.sinks[stream](chunk);
      return;
    }
    this.held.push({ stream, seq, chunk });
    this.heldBytes += chunk.length;
    if (this.heldBytes > MAX_HELD_BYTES) this.finish();
  }

  /** The stream passed sync token `seq`. */
  sync(stream: Stream, seq: number): void {
    if (seq > this.passed[stream]) this.passed[stream] = seq;
    this.pump(false);
  }

  /** Display `seq` arrived; waitFor: the streams its token was written to. */
  display(seq: number, output: D, waitFor: Record<Stream, boolean>): void {
    if (seq <= this.released) {
      this.sinks.display(output); // order was given up (finish() or too much held text)
      return;
    }
    if (this.waiting.has(seq)) return;
    this.waiting.set(seq, { output, waitFor });
    this.pump(false);
  }

  /** The call is over: pass on everything held, displays and text in their order. */
  finish(): void {
    this.pump(true);
    this.releaseText(Number.MAX_SAFE_INTEGER);
  }

  private pump(force: boolean): void {
    for (;;) {
      let next = this.released + 1;
      if (force && !this.waiting.has(next)) {
        // A display that never came (dropped or forged): skip to the next one that did.
        const seqs = [...this.waiting.keys()].filter((s) => s > this.released);
        if (seqs.length === 0) return;
        next = Math.min(...seqs);
      }
      const d = this.waiting.get(next);
      if (!d) return;
      if (!force && ((d.waitFor.stdout && this.passed.stdout < next) || (d.waitFor.stderr && this.passed.stderr < next))) return;
      this.releaseText(next - 1);
      this.waiting.delete(next);
      this.released = next;
      this.sinks.display(d.output);
      this.releaseText(next);
    }
  }

  private releaseText(upTo: number): void {
    if (this.held.length === 0) return;
    const keep: typeof this.held = [];
    for (const h of this.held) {
      if (h.seq <= upTo) {
        this.heldBytes -= h.chunk.length;
        this.sinks[h.stream](h.chunk);
      } else {
        keep.push(h);
      }
    }
    this.held = keep;
    if (upTo === Number.MAX_SAFE_INTEGER) this.released = Math.max(this.released, ...Object.values(this.passed));
  }
}
