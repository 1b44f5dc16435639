// Rich outputs of a run_code call: MIME bundles as Jupyter's display_data / execute_result
// messages carry them. The driver makes them (_bubble_rich.py); the host checks each display
// frame again, since code in the sandbox can write frames of its own, and bounds their total size.

export type RichOutputType = 'display_data' | 'execute_result';

/**
 * One output. `data` keys are MIME types: text/plain, text/html, image/png (base64),
 * image/svg+xml, application/json (any JSON value), text/markdown, text/latex, ...
 */
export interface RichOutput {
  type: RichOutputType;
  data: Record<string, unknown>;
}

const MIME_TYPE = /^[a-z]+\/[a-z0-9.+_-]{1,100}$/i;

/** The output a display frame carries, or null when it is not one. */
export function richOutputOf(frame: Record<string, unknown>): RichOutput | null {
  const type = frame.kind;
  if (type !== 'display_data' && type !== 'execute_result') return null;
  const raw = frame.data;
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return null;
  const data: Record<string, unknown> = {};
  for (const [mime, value] of Object.entries(raw as Record<string, unknown>)) {
    if (!MIME_TYPE.test(mime)) continue;
    if (mime === 'application/json' || mime.endsWith('+json')) data[mime] = value;
    else if (typeof value === 'string') data[mime] = value;
  }
  if (Object.keys(data).length === 0) return null;
  return { type, data };
}

/** Characters an output takes in the answer: what MAX_OUTPUT_CHARS bounds. */
export function richOutputSize(output: RichOutput): number {
  let size = 0;
  for (const [mime, value] of Object.entries(output.data)) {
    size += mime.length + (typeof value === 'string' ? value.length : JSON.stringify(value).length);
  }
  return size;
}

/** The outputs of one call, in order, at most `maxChars` characters in all; the rest are dropped. */
export class RichOutputs {
  readonly list: RichOutput[] = [];
  truncated = false;
  private used = 0;

  constructor(private readonly maxChars: number) {}

  /** Keeps the output if it fits; false when it was dropped. */
  add(output: RichOutput): boolean {
    const size = richOutputSize(output);
    if (this.used + size > this.maxChars) {
      this.truncated = true;
      return false;
    }
    this.used += size;
    this.list.push(output);
    return true;
  }
}
