// Bounded buffers of a long-running process's output. The service always reads a process's pipes
// (never pauses them), so what it keeps is what bounds memory: a slow or absent reader only
// loses the oldest output, it never makes anything grow.
import { StringDecoder } from 'node:string_decoder';

export type OutputStream = 'stdout' | 'stderr';

export interface OutputChunk {
  stream: OutputStream;
  text: string;
}

export interface OutputRead {
  stdout: string;
  stderr: string;
  next: number;
  truncated_before: boolean;
}

interface Stored extends OutputChunk {
  /** Offset of text[0] in the combined output. */
  start: number;
}

/** Chunks smaller than this are appended to the previous one of the same stream (fewer entries). */
const MERGE_BELOW = 4096;

/**
 * The combined stdout and stderr of a process, the newest `maxChars` characters of it (UTF-16
 * code units, as JavaScript counts). Offsets are absolute: `next` only grows, and a reader that
 * asks for an offset that has fallen out gets what is left and `truncated_before`. A UTF-8
 * character split across two reads of a pipe is decoded whole (a decoder per stream).
 */
export class OutputRing {
  private readonly chunks: Stored[] = [];
  private head = 0;
  private base = 0;
  private end = 0;
  private readonly decoders = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };
  private readonly listeners = new Set<() => void>();

  constructor(private readonly maxChars: number) {}

  /** Offset after the last character written. */
  get next(): number {
    return this.end;
  }

  /** Offset of the oldest character kept. */
  get first(): number {
    return this.base;
  }

  push(stream: OutputStream, data: Buffer): void {
    this.add(stream, this.decoders[stream].write(data));
  }

  /** The end of both streams: whatever a decoder held back (a cut-off character) comes out. */
  finish(): void {
    this.add('stdout', this.decoders.stdout.end());
    this.add('stderr', this.decoders.stderr.end());
  }

  /** Called after each write; returns the unsubscribe function. */
  onWrite(cb: () => void): () => void {
    this.listeners.add(cb);
    return () => this.listeners.delete(cb);
  }

  private add(stream: OutputStream, text: string): void {
    if (text.length === 0) return;
    const last = this.chunks.length > this.head ? this.chunks[this.chunks.length - 1] : undefined;
    if (last && last.stream === stream && last.text.length < MERGE_BELOW) last.text += text;
    else this.chunks.push({ stream, text, start: this.end });
    this.end += text.length;
    this.trim();
    for (const cb of [...this.listeners]) cb();
  }

  private trim(): void {
    while (this.end - this.base > this.maxChars) {
      const c = this.chunks[this.head];
      if (!c) break;
      const over = this.end - this.base - this.maxChars;
      if (c.text.length <= over) {
        this.head++;
        this.base = c.start + c.text.length;
      } else {
        c.text = c.text.slice(over);
        c.start += over;
        this.base = c.start;
      }
    }
    if (this.head > 64 && this.head * 2 > this.chunks.length) {
      this.chunks.splice(0, this.head);
      this.head = 0;
    }
  }

  /** The chunks from offset `since` on, in the order written (same-stream neighbours merged). */
  chunksSince(since: number): { chunks: OutputChunk[]; next: number; truncated_before: boolean } {
    const from = Math.max(since, this.base);
    const out: OutputChunk[] = [];
    for (let i = this.indexOf(from); i < this.chunks.length; i++) {
      const c = this.chunks[i];
      if (!c) break;
      const text = from > c.start ? c.text.slice(from - c.start) : c.text;
      if (text.length === 0) continue;
      const prev = out[out.length - 1];
      if (prev && prev.stream === c.stream) prev.text += text;
      else out.push({ stream: c.stream, text });
    }
    return { chunks: out, next: this.end, truncated_before: since < this.base };
  }

  read(since: number): OutputRead {
    const { chunks, next, truncated_before } = this.chunksSince(since);
    let stdout = '';
    let stderr = '';
    for (const c of chunks) {
      if (c.stream === 'stdout') stdout += c.text;
      else stderr += c.text;
    }
    return { stdout, stderr, next, truncated_before };
  }

  /** Index of the chunk holding offset `at` (binary search over the kept chunks). */
  private indexOf(at: number): number {
    let lo = this.head;
    let hi = this.chunks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((this.chunks[mid]?.start ?? 0) <= at) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }
}

/** The newest `maxBytes` bytes of a terminal's output, replayed to a client that (re)connects. */
export class ByteRing {
  private readonly chunks: Buffer[] = [];
  private size = 0;

  constructor(private readonly maxBytes: number) {}

  push(data: Buffer): void {
    if (this.maxBytes === 0 || data.length === 0) return;
    // A copy: a slice would keep the whole buffer it came from alive.
    this.chunks.push(Buffer.from(data.length > this.maxBytes ? data.subarray(data.length - this.maxBytes) : data));
    this.size += Math.min(data.length, this.maxBytes);
    while (this.size > this.maxBytes) {
      const first = this.chunks[0];
      if (!first) break;
      const over = this.size - this.maxBytes;
      if (first.length <= over) {
        this.chunks.shift();
        this.size -= first.length;
      } else {
        this.chunks[0] = first.subarray(over);
        this.size -= over;
      }
    }
  }

  contents(): Buffer {
    return Buffer.concat(this.chunks, this.size);
  }
}
