// Length-prefixed JSON, the kernel's wire format in both directions: a 4-byte big-endian byte
// count, then that many bytes of UTF-8 JSON.

/**
 * Larger than any frame the honest driver sends: results are clipped to at most MAX_OUTPUT_CHARS
 * characters in the driver (and again on the host, since code in the sandbox can forge frames).
 * A bigger frame ends the interpreter rather than costing the service memory.
 */
export const MAX_FRAME_BYTES = 8 * 1024 * 1024;

export class FrameError extends Error {
  override name = 'FrameError';
}

export function encodeFrame(message: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(message), 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length, 0);
  return Buffer.concat([head, body]);
}

/** Reassembles frames from chunks cut anywhere. A bad or oversized frame throws FrameError. */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(private readonly maxBytes = MAX_FRAME_BYTES) {}

  push(chunk: Buffer): unknown[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const out: unknown[] = [];
    for (;;) {
      if (this.buffered < 4) return out;
      const length = this.peekLength();
      if (length > this.maxBytes) throw new FrameError(`frame of ${length} bytes exceeds ${this.maxBytes}`);
      // Join the chunks only once the whole frame is there: joining on every chunk would cost the
      // square of the frame size, and code in the sandbox controls the chunking.
      if (this.buffered < 4 + length) return out;
      const data = this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks);
      const body = data.subarray(4, 4 + length).toString('utf8');
      const rest = data.subarray(4 + length);
      this.chunks = rest.length > 0 ? [rest] : [];
      this.buffered = rest.length;
      try {
        out.push(JSON.parse(body));
      } catch {
        throw new FrameError('frame is not valid JSON');
      }
    }
  }

  private peekLength(): number {
    const first = this.chunks[0] as Buffer;
    if (first.length >= 4) return first.readUInt32BE(0);
    // Only a header split across chunks gets here: few bytes, so joining them all is cheap.
    const joined = Buffer.concat(this.chunks);
    this.chunks = [joined];
    return joined.readUInt32BE(0);
  }
}
