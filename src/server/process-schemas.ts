// Wire schemas of session processes (POST /v1/sessions/{id}/processes and below); the bounds live
// here, as in schemas.ts, and the OpenAPI document is generated from them.
import { z } from 'zod';
import { PROCESS_SIGNALS, PTY_MAX_SIZE, PTY_MIN_SIZE } from '../sandbox/process-sandbox.js';
import { EnvMapSchema, ErrorSchema, SessionIdSchema } from './schemas.js';

export const ProcessParamsSchema = z.strictObject({
  id: SessionIdSchema,
  pid: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'must match [A-Za-z0-9_-]{1,64}').describe('the process id (p-...) its start answered'),
});

const TerminalSize = z.number().int().min(PTY_MIN_SIZE).max(PTY_MAX_SIZE);
export const PtySizeSchema = z.strictObject({ cols: TerminalSize, rows: TerminalSize })
  .describe(`a pseudo-terminal of this size (${PTY_MIN_SIZE}..${PTY_MAX_SIZE} each); absent: pipes`);

const NoNul = (s: string) => !s.includes('\0');
export const StartProcessBodySchema = z
  .strictObject({
    command: z.string().min(1).max(100_000).refine(NoNul, 'must not contain NUL').optional().describe('shell command, run by /bin/sh -c'),
    argv: z.array(z.string().max(100_000).refine(NoNul, 'must not contain NUL')).min(1).max(1000).optional().describe('program and arguments, run without a shell'),
    env: EnvMapSchema.optional(),
    cwd: z.string().min(1).max(1024).optional().describe('directory to start in, relative to the workspace (no .., no leading /); it must exist'),
    timeout_seconds: z.number().positive().optional().describe('wall-clock limit, then the process is killed (status timeout); default and maximum PROCESS_MAX_SECONDS'),
    pty: PtySizeSchema.optional(),
  })
  .refine((b) => (b.command === undefined) !== (b.argv === undefined), { message: 'exactly one of command or argv is required', path: ['command'] })
  .meta({
    description: 'exactly one of command or argv',
    oneOf: [{ required: ['command'] }, { required: ['argv'] }],
    'x-examples': {
      server: { summary: 'a web server in the session, reachable from its executions and through ports/', value: { argv: ['python3', '-m', 'http.server', '8000', '--bind', '127.0.0.1'], timeout_seconds: 600 } },
      terminal: { summary: 'an interactive shell on a terminal (attach through the pty WebSocket)', value: { argv: ['bash', '-i'], pty: { cols: 80, rows: 24 } } },
    },
  });
export type StartProcessBody = z.infer<typeof StartProcessBodySchema>;

export const ProcessInfoSchema = z
  .object({
    pid: z.string(),
    command: z.string().describe('the command, or the argv joined by spaces'),
    pty: z.boolean(),
    status: z.enum(['running', 'exited', 'killed', 'timeout']).describe('killed: ended by a signal (DELETE, /signal, the session\'s end, or its own); timeout: killed at timeout_seconds'),
    exit_code: z.number().int().nullable().describe('set when it exited on its own'),
    signal: z.string().nullable().describe('the signal it ended by (SIGKILL after a timeout or DELETE)'),
    started_at: z.string(),
    ended_at: z.string().nullable(),
  })
  .meta({ id: 'ProcessInfo' });
export const ProcessListSchema = z.object({ processes: z.array(ProcessInfoSchema).describe('running ones and the MAX_FINISHED_PROCESSES most recently ended, in start order') }).meta({ id: 'ProcessList' });

export const OutputQuerySchema = z.strictObject({
  since: z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0).describe('offset (characters of the combined output) to read from: the `next` of the previous read; 0 for all that is kept'),
});
export const ProcessOutputSchema = z
  .object({
    stdout: z.string(),
    stderr: z.string(),
    next: z.number().int().describe('offset after this output: pass it as ?since= next time'),
    truncated_before: z.boolean().describe('true when output from `since` on fell out of the buffer (PROCESS_OUTPUT_BUFFER_BYTES): what is returned starts later'),
  })
  .meta({ id: 'ProcessOutput', description: 'characters are UTF-16 code units, as JavaScript counts them' });
export const ProcessOutputStreamSchema = z
  .union([
    z.object({ type: z.enum(['stdout', 'stderr']), data: z.string() }).meta({ id: 'ProcessOutputEvent', description: 'output as it arrives' }),
    ProcessInfoSchema.extend({ type: z.literal('exit') }).meta({ id: 'ProcessExitEvent', description: 'the last line, once the process has ended and its output was sent' }),
  ])
  .describe('one JSON object per line');

export const StdinBodySchema = z
  .strictObject({
    data: z.string().min(1).max(1_000_000).optional().describe('text, written as UTF-8'),
    data_base64: z.string().min(1).max(1_400_000).regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be base64').optional().describe('bytes, base64'),
    eof: z.literal(true).optional().describe('close the process\'s stdin (a terminal gets ^D)'),
  })
  .refine((b) => [b.data, b.data_base64, b.eof].filter((v) => v !== undefined).length === 1, { message: 'exactly one of data, data_base64 or eof is required', path: ['data'] })
  .meta({ description: 'exactly one of data, data_base64 or eof', oneOf: [{ required: ['data'] }, { required: ['data_base64'] }, { required: ['eof'] }] });

export const SignalBodySchema = z.strictObject({
  signal: z.enum(PROCESS_SIGNALS).describe('SIGKILL ends the process and everything it started; the others go to its process group (a terminal\'s foreground group)'),
});

export const ProcessErrors = { 400: ErrorSchema, 401: ErrorSchema, 404: ErrorSchema, 503: ErrorSchema };
