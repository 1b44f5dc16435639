// Bounded capture of one output stream: the head and the tail are kept, the middle is counted
// and dropped, so memory stays at about the cap however much the process prints.
import { StringDecoder } from 'node:string_decoder';

export interface CapturedOutput {
  text: string;
  truncated: boolean;
  totalChars: number;
}

export function omissionMarker(omitted: number): string {
  return `\n[... ${omitted} characters omitted ...]\n`;
}

export class OutputCapture {
  private readonly decoder = new StringDecoder('utf8');
  private readonly headCap: number;
  private readonly tailCap: number;
  private head = '';
  private tail = '';
  private total = 0;

  /**
   * @param maxChars the cap on the kept text (marker excluded)
   * @param onLive called with text as it arrives, up to the head cap; the rest is sent by finish()
   */
  constructor(maxChars: number, private readonly onLive?: (text: string) => void) {
    this.headCap = Math.ceil(maxChars / 2);
    this.tailCap = maxChars - this.headCap;
  }

  push(chunk: Buffer): void {
    this.take(this.decoder.write(chunk));
  }

  private take(text: string): void {
    if (text.length === 0) return;
    this.total += text.length;
    let rest = text;
    if (this.head.length < this.headCap) {
      const room = this.headCap - this.head.length;
      const part = rest.slice(0, room);
      this.head += part;
      this.onLive?.(part);
      rest = rest.slice(room);
    }
    if (rest.length === 0 || this.tailCap === 0) return;
    this.tail += rest;
    // Trim lazily so a stream of small chunks does not re-slice on every push.
    if (this.tail.length > this.tailCap * 2) this.tail = this.tail.slice(-this.tailCap);
  }

  finish(): CapturedOutput {
    this.take(this.decoder.end());
    if (this.tail.length > this.tailCap) {
      this.tail = this.tail.slice(-this.tailCap);
    }
    const kept = this.head.length + this.tail.length;
    const omitted = this.total - kept;
    if (omitted <= 0) {
      if (this.tail.length > 0) this.onLive?.(this.tail);
      return { text: this.head + this.tail, truncated: false, totalChars: this.total };
    }
    const rest = omissionMarker(omitted) + this.tail;
    this.onLive?.(rest);
    return { text: this.head + rest, truncated: true, totalChars: this.total };
  }
}
