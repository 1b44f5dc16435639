// Length-prefixed JSON, the kernel's wire format in both directions: a 4-byte big-endian byte
// count, then that many bytes of UTF-8 JSON.

/** Larger than any frame the driver sends (results and tracebacks are clipped in the driver). */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;

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
      const data = this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks);
      this.chunks = [data];
      const length = data.readUInt32BE(0);
      if (length > this.maxBytes) throw new FrameError(`frame of ${length} bytes exceeds ${this.maxBytes}`);
      if (data.length < 4 + length) return out;
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
}
