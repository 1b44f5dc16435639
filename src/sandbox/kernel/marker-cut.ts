// Finds the tokens the driver writes into one call's stdout/stderr: a prefix chosen per call,
// then a payload, then \x1f\x1e. Payload `end`: the cell's output ends here (the token and
// anything after it are dropped). Payload `s<n>`: display output n was produced at this point
// (output-order.ts keeps the order). Bytes between tokens are passed on as they arrive; only a
// tail that could be the start of a token is held back. A token of an earlier call is just
// output: only this call's prefix counts.

import { randomBytes } from 'node:crypto';

const TERMINATOR = Buffer.from('\x1f\x1e');
/** Longest payload a token may carry (`s` + a sequence number); longer: not a token. */
const MAX_PAYLOAD = 24;

/** Secrets handed out per pool refill. */
const SECRETS_PER_REFILL = 64;
const SECRET_BYTES = 16;
let secretPool = Buffer.alloc(0);
let secretAt = 0;

/**
 * 16 bytes from the CSPRNG, as hex: a call's secret. Taken from a pool refilled 64 secrets at a
 * time: a call of the warm path then does no crypto call of its own (randomBytes(16) costs tens of
 * microseconds on a cold path here, a getpid syscall and OpenSSL's DRBG). The pool never leaves
 * the service, and each secret is used once, so a sandbox can no more guess the next call's
 * secret than with a randomBytes call per call.
 */
export function callSecret(): string {
  if (secretAt + SECRET_BYTES > secretPool.length) {
    secretPool = randomBytes(SECRET_BYTES * SECRETS_PER_REFILL);
    secretAt = 0;
  }
  const secret = secretPool.toString('hex', secretAt, secretAt + SECRET_BYTES);
  // Not kept once handed out.
  secretPool.fill(0, secretAt, secretAt + SECRET_BYTES);
  secretAt += SECRET_BYTES;
  return secret;
}

/** The tokens of one call: `end` is the end marker, sync tokens are `${syncPrefix}${n}\x1f\x1e`. */
export function callTokens(secret: string): { prefix: string; end: string; syncPrefix: string } {
  const prefix = `\x1e\x1fbubble-kernel:${secret}:`;
  return { prefix, end: `${prefix}end\x1f\x1e`, syncPrefix: `${prefix}s` };
}

export class MarkerCut {
  private pending: Buffer = Buffer.alloc(0);
  private seen = false;
  private resolveFound: () => void = () => undefined;
  /** Resolves when the end marker has gone by. */
  readonly reached: Promise<void>;

  constructor(
    private readonly prefix: Buffer,
    private readonly onData: (chunk: Buffer) => void,
    private readonly onSync: (seq: number) => void = () => undefined,
  ) {
    if (prefix.length === 0) throw new Error('empty marker');
    this.reached = new Promise((resolve) => {
      this.resolveFound = resolve;
    });
  }

  get found(): boolean {
    return this.seen;
  }

  push(chunk: Buffer): void {
    if (this.seen || chunk.length === 0) return;
    let data = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = Buffer.alloc(0);
    for (;;) {
      const at = data.indexOf(this.prefix);
      if (at < 0) break;
      const payloadStart = at + this.prefix.length;
      const end = data.indexOf(TERMINATOR, payloadStart);
      if (end < 0) {
        if (data.length - payloadStart <= MAX_PAYLOAD) {
          // The token may be cut in two: pass on what is before it, hold the rest.
          if (at > 0) this.onData(data.subarray(0, at));
          this.pending = Buffer.from(data.subarray(at));
          return;
        }
      } else if (end - payloadStart <= MAX_PAYLOAD) {
        const payload = data.subarray(payloadStart, end).toString('latin1');
        const seq = /^s(\d{1,15})$/.exec(payload);
        if (payload === 'end' || seq) {
          if (at > 0) this.onData(data.subarray(0, at));
          if (seq) {
            this.onSync(Number(seq[1]));
            data = data.subarray(end + TERMINATOR.length);
            continue;
          }
          this.seen = true;
          this.resolveFound();
          return;
        }
      }
      // Not a token after all: output up to and including the prefix's first byte.
      this.onData(data.subarray(0, at + 1));
      data = data.subarray(at + 1);
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

  /** Length of the longest end of `data` that is a proper start of the prefix. */
  private partialSuffix(data: Buffer): number {
    const max = Math.min(data.length, this.prefix.length - 1);
    for (let n = max; n > 0; n--) {
      if (data[data.length - n] === this.prefix[0] && data.subarray(data.length - n).equals(this.prefix.subarray(0, n))) return n;
    }
    return 0;
  }
}
