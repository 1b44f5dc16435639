// Reads of workspace files bounded by the size the service decided on, never "to EOF".
//
// Why: a workspace file belongs to the sandbox, and code in it (a background thread of the
// persistent interpreter, a background process) can grow or shrink the file at any moment,
// including between our fstat and the last read. A download announces Content-Length from the
// fstat; streaming the handle to EOF then writes more bytes than announced (a keep-alive client
// reads the extra, sandbox-chosen bytes as the NEXT response on the connection: a forged answer)
// or fewer (the start of the next response is swallowed as body). So:
//   - exactLengthStream yields exactly `size` bytes, read at explicit positions 0..size-1, so
//     growth is never read; if the file ends early it fails with FileShrankError instead of
//     ending, and the HTTP layer must then drop the connection, not finish the response
//     (Fastify destroys the socket when a stream payload errors after the headers went out, and
//     answers a well-framed 500 when it errors before; test/server/download-framing.test.ts).
//   - readUpTo reads at most `size` bytes into memory, for answers whose length is computed from
//     the bytes themselves (one-shot outputs): bounded memory, whatever the file does meanwhile.
import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';

const CHUNK_BYTES = 64 * 1024;

/** The file ended before the length already announced for it. */
export class FileShrankError extends Error {
  readonly code = 'FILE_SHRANK';
  constructor(readonly expected: number, readonly got: number) {
    super(`the file shrank while it was read: ${got} of ${expected} bytes`);
    this.name = 'FileShrankError';
  }
}

export interface ExactLengthOptions {
  /** Bytes per read; 64 KiB by default. */
  chunkBytes?: number;
}

/**
 * A stream of exactly `size` bytes of the file, from offset 0; it owns the handle and closes it
 * when it ends or is destroyed. Errors with FileShrankError when the file ends before `size`.
 */
export function exactLengthStream(handle: FileHandle, size: number, opts: ExactLengthOptions = {}): Readable {
  const chunkBytes = opts.chunkBytes ?? CHUNK_BYTES;
  let position = 0;
  return new Readable({
    highWaterMark: chunkBytes,
    read() {
      const want = Math.min(chunkBytes, size - position);
      if (want <= 0) {
        this.push(null);
        return;
      }
      handle.read(Buffer.allocUnsafe(want), 0, want, position).then(({ bytesRead, buffer }) => {
        if (this.destroyed) return;
        if (bytesRead === 0) {
          this.destroy(new FileShrankError(size, position));
          return;
        }
        position += bytesRead;
        this.push(bytesRead === want ? buffer : buffer.subarray(0, bytesRead));
      }, (err: unknown) => this.destroy(err as Error));
    },
    destroy(err, callback) {
      handle.close().then(() => callback(err), (closeErr: unknown) => callback(err ?? (closeErr as Error)));
    },
  });
}

/** At most `size` bytes of the file from offset 0 (fewer if it ends first); the caller closes the handle. */
export async function readUpTo(handle: FileHandle, size: number): Promise<Buffer> {
  const buffer = Buffer.alloc(size);
  let filled = 0;
  while (filled < size) {
    const { bytesRead } = await handle.read(buffer, filled, Math.min(CHUNK_BYTES, size - filled), filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return filled === size ? buffer : buffer.subarray(0, filled);
}
