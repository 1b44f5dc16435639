// Wire schemas: the bounds live here, and the OpenAPI document is generated from them.
// `.meta({ id })` makes a schema a named component of the document (openapi.ts); request bodies stay
// inline so that their examples show in /docs. Rules zod checks in code (refine) are repeated as
// JSON Schema keywords in `.meta()` so that the document shows them too.
import { z } from 'zod';
import { ERROR_CODES } from '../errors.js';
import { MAX_NETWORK_PATTERN_CHARS, MAX_NETWORK_PATTERNS, NETWORK_MODES } from '../sessions/network-policy.js';

export const SessionIdSchema = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'must match [A-Za-z0-9_-]{1,64}');
export const EnvironmentNameSchema = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'must match [A-Za-z0-9_-]+ (at most 64 characters)');
export const VolumeNameSchema = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'must match [A-Za-z0-9_-]+ (at most 64 characters)');

export const ErrorSchema = z
  .object({
    statusCode: z.number().int(),
    // A string at run time (never refuse to send an error); the document lists the codes.
    code: z.string().meta({
      description: `stable machine code: ${Object.entries(ERROR_CODES).map(([c, meaning]) => `${c} (${meaning})`).join('; ')}; or a Fastify FST_* code`,
      // Typed alternatives, so that a generator makes `string` of it (openapi-typescript: an untyped one is `unknown`).
      anyOf: [{ type: 'string', enum: Object.keys(ERROR_CODES) }, { type: 'string', pattern: '^FST_' }],
    }),
    error: z.string().describe('the HTTP reason phrase'),
    message: z.string().describe('what went wrong, naming the field for a 400; never a host path'),
  })
  .meta({ id: 'Error', description: 'Every error answer: Fastify\'s shape with a stable code' });

export const EnvironmentSchema = z.object({
  name: z.string(),
  description: z.string(),
  dependencies: z.array(z.string()),
  kind: z.enum(['venv', 'rootfs']).meta({ description: 'venv: the host\'s /usr plus a Python virtual environment; rootfs: an imported root filesystem is `/` (bubble-sandbox rootfs import)' }),
  python: z.boolean().meta({ description: 'whether python3 is there: script, run_code and processes need it (a rootfs may have none; command and argv work in any)' }),
  preload: z.array(z.string()).meta({ description: 'modules a warm (pre-started) sandbox of this environment imports before an execution claims it ([tool.bubble-sandbox] preload)' }),
});
export const EnvironmentListSchema = z.object({ environments: z.array(EnvironmentSchema) }).meta({ id: 'EnvironmentList' });

const VolumesSchema = z
  .record(VolumeNameSchema, z.enum(['ro', 'rw']))
  .refine((v) => Object.keys(v).length <= 16, 'at most 16 volumes')
  .meta({ description: 'volume name → "ro" or "rw"; mounted at /volumes/<name>', maxProperties: 16 });

const NetworkPatternListSchema = (what: string) => z
  .array(z.string().min(1).max(MAX_NETWORK_PATTERN_CHARS))
  .max(MAX_NETWORK_PATTERNS)
  .describe(`${what}: each an exact host name, \`*.suffix\` for its subdomains only, or an IP literal, optionally with \`:port\` (without one, 80 and 443); at most ${MAX_NETWORK_PATTERNS}`);
const NetworkAllowSchema = NetworkPatternListSchema('hosts the egress proxy connects to');
const NetworkDenySchema = NetworkPatternListSchema('hosts refused even when `allow` matches');

const LISTS_NEED_ALLOWLIST = { message: 'allow and deny are only for mode "allowlist"', path: ['mode'] };
export const NetworkSchema = z
  .strictObject({
    mode: z.enum(NETWORK_MODES).describe('none: loopback only; allowlist: HTTP(S) through the egress proxy to the hosts in allow; outbound: general outbound TCP/UDP, never the host itself'),
    allow: NetworkAllowSchema.optional(),
    deny: NetworkDenySchema.optional(),
  })
  .refine((n) => n.mode === 'allowlist' || (n.allow === undefined && n.deny === undefined), LISTS_NEED_ALLOWLIST)
  .meta({
    description: 'the sandbox\'s network; absent means {"mode":"none"}. allow and deny only with mode allowlist',
    // The refine above, for the document.
    if: { properties: { mode: { not: { const: 'allowlist' } } } },
    then: { properties: { allow: { not: {} }, deny: { not: {} } } },
  });

export const CreateSessionBodySchema = z
  .strictObject({
    environment: EnvironmentNameSchema.optional().describe('execution environment (default "bare")'),
    session_id: SessionIdSchema.optional().describe('your own id; a random one when absent'),
    volumes: VolumesSchema.optional(),
    network: NetworkSchema.optional(),
    writable_root: z.boolean().optional().describe('a writable overlay over the environment\'s root (a rootfs; for a venv environment, the host\'s /usr and the venv): writes there persist across the session\'s executions, count against its disk quota and go with it; inside, the user is root of the sandbox\'s own user namespace (default false)'),
  });
/** The body may be absent altogether (curl -X POST with no data): every field is optional. */
export const CreateSessionBodyOrNothingSchema = CreateSessionBodySchema.nullish().meta({
  description: 'every field is optional; the body may be absent',
  'x-examples': {
    minimal: { summary: 'a session in the default environment, with a random id', value: {} },
    named: { summary: 'your own id, an environment and a read-only shared volume', value: { session_id: 'demo', environment: 'bare', volumes: { 'shared-data': 'ro' } } },
    allowlist: { summary: 'HTTP(S) to the package index only, through the egress proxy', value: { network: { mode: 'allowlist', allow: ['pypi.org', '*.pythonhosted.org'] } } },
  },
});

const NetworkInfoSchema = z
  .object({ mode: z.enum(NETWORK_MODES), allow: z.array(z.string()).optional(), deny: z.array(z.string()).optional() })
  .meta({ id: 'Network', description: 'the session\'s network as given, with mode filled in; allowlist always shows both lists' });

export const SessionInfoSchema = z
  .object({
    session_id: z.string(),
    environment: z.string(),
    created_at: z.string(),
    last_activity: z.string(),
    expires_at: z.string(),
    volumes: z.record(z.string(), z.enum(['ro', 'rw'])),
    network: NetworkInfoSchema,
    writable_root: z.boolean(),
    node_id: z.string().optional().describe('the replica that holds the session (its NODE_ID), when the service runs as several; absent on a single replica'),
  })
  .meta({ id: 'SessionInfo' });
export const SessionListSchema = z
  .object({
    sessions: z.array(SessionInfoSchema),
    unavailable_nodes: z.array(z.string()).optional().describe('replicas that could not be asked, so their sessions are missing from this list; absent on a single replica'),
  })
  .meta({ id: 'SessionList' });

export const UpdateNetworkBodySchema = z
  .strictObject({ allow: NetworkAllowSchema.optional(), deny: NetworkDenySchema.optional() })
  .meta({
    description: 'replaces the lists of an allowlist session; a list left out stays as it was',
    'x-examples': {
      allow: { summary: 'replace the allow list', value: { allow: ['pypi.org', '*.pythonhosted.org', 'api.example.com:443'] } },
      deny: { summary: 'refuse one host from now on, allow unchanged', value: { deny: ['evil.pypi.org'] } },
    },
  });

export const SessionParamsSchema = z.strictObject({ id: SessionIdSchema });

export const VolumeParamsSchema = z.strictObject({ name: VolumeNameSchema });
export const VolumeInfoSchema = z
  .object({
    name: z.string(),
    in_use: z.boolean().describe('true while a live session names it; such a volume cannot be deleted'),
    sessions: z.array(z.string()).describe('ids of the live sessions that name it, sorted'),
    quota_bytes: z.number().int().nullable().describe('size of its quota image (VOLUME_QUOTA_BYTES when it was made); null for a plain directory (quotas off)'),
    used_bytes: z.number().int().nullable().describe('bytes in use on its quota image; null for a plain directory'),
  })
  .meta({ id: 'Volume', description: 'a shared volume' });
export const VolumeListSchema = z
  .object({
    volumes: z.array(VolumeInfoSchema).describe('every shared volume on this server, sorted by name'),
    max_volumes: z.number().int().describe('MAX_VOLUMES: how many may exist; a session naming a new one past it gets 429 MAX_VOLUMES'),
  })
  .meta({ id: 'VolumeList' });
export const FileParamsSchema = z.strictObject({ id: SessionIdSchema, '*': z.string().min(1).max(1024) });
export const DeleteSessionQuerySchema = z.strictObject({
  // Case-insensitive: Python's requests sends True/False as written.
  clear_data: z.string().regex(/^(true|false|1|0)$/i, 'must be true, false, 1 or 0').default('true').transform((v) => v.toLowerCase() === 'true' || v === '1')
    .describe('true (default): remove the workspace; false: keep it on disk for a later session with this id'),
});
export const UploadQuerySchema = z.strictObject({
  dir: z.string().min(1).max(1024).optional().describe('workspace-relative directory for the files, created if missing (no .., no leading /)'),
});

export const FileEntrySchema = z.object({ path: z.string(), size: z.number().int() });
export const UploadResultSchema = z.object({ files: z.array(FileEntrySchema) }).meta({ id: 'UploadResult' });
export const FileListSchema = z.object({
  files: z.array(z.object({ path: z.string(), size: z.number().int(), modified_at: z.string() }))
    .describe('regular files sorted by path in UTF-8 byte order: at most MAX_LIST_FILES entries and MAX_LIST_BYTES bytes of paths per page'),
  next: z.string().nullable().describe('pass as ?cursor= for the next page; null when this page ends the listing'),
}).meta({ id: 'FileList' });
export const ListFilesQuerySchema = z.strictObject({
  cursor: z.string().max(2048).optional().describe('the `next` of the previous page (opaque); the listing resumes after the last path it returned'),
  limit: z.coerce.number().int().min(1).max(1_000_000).optional().describe('most entries on this page; MAX_LIST_FILES when larger or absent'),
});

export const EnvMapSchema = z
  .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'environment variable names match [A-Za-z_][A-Za-z0-9_]*'), z.string().max(32_768).refine((v) => !v.includes('\0'), 'must not contain NUL'))
  .refine((v) => Object.keys(v).length <= 64, 'at most 64 variables')
  .meta({ description: 'extra environment variables (values without NUL)', maxProperties: 64 });

// The minima are the service's; the maxima are the server's configured limits (the handler refuses more).
export const LimitsSchema = z.strictObject({
  memory_bytes: z.number().int().min(16 * 1024 * 1024, 'must be at least 16777216').optional()
    .describe('memory limit in bytes, at least 16 MiB and at most the server\'s MEMORY_LIMIT_BYTES (default 512 MiB)'),
  pids: z.number().int().min(4, 'must be at least 4').optional()
    .describe('most processes and threads, at least 4 and at most the server\'s PIDS_LIMIT (default 128)'),
  cpu_cores: z.number().min(0.01, 'must be at least 0.01').optional()
    .describe('CPU cores, at least 0.01 and at most the server\'s CPU_CORES (default 1)'),
}).describe('lowers the configured per-execution limits; a value above the configured one is 400');

const ExecuteFields = {
  script: z.string().min(1).max(1_000_000).optional().describe('Python source, run by the environment interpreter'),
  command: z.string().min(1).max(100_000).refine((v) => !v.includes('\0'), 'must not contain NUL').optional().describe('shell command, run by /bin/sh -c'),
  argv: z.array(z.string().max(100_000).refine((v) => !v.includes('\0'), 'must not contain NUL')).min(1).max(1000).optional().describe('program and arguments, run without a shell'),
  stdin: z.string().max(10_000_000).optional(),
  timeout_seconds: z.number().positive().optional()
    .describe('wall-clock timeout; default EXECUTION_TIMEOUT_SECONDS (30), at most the server\'s MAX_EXECUTION_TIMEOUT_SECONDS (default 300)'),
  env: EnvMapSchema.optional(),
  limits: LimitsSchema.optional(),
};

const exactlyOneProgram = (v: { script?: unknown; command?: unknown; argv?: unknown }) =>
  [v.script, v.command, v.argv].filter((x) => x !== undefined).length === 1;
const ONE_PROGRAM = { message: 'exactly one of script, command or argv is required', path: ['script'] };
/** The same rule for the document: each alternative names one program field. */
const ONE_PROGRAM_JSON = [{ required: ['script'] }, { required: ['command'] }, { required: ['argv'] }];
const PROGRAM_EXAMPLES = {
  script: { summary: 'a Python script', value: { script: 'import sys\nprint(sys.version_info[:2])', timeout_seconds: 10 } },
  command: { summary: 'a shell command', value: { command: 'ls -la | head', env: { MY_VAR: '1' } } },
  argv: { summary: 'a program and its arguments, no shell', value: { argv: ['python', '-c', 'print(input())'], stdin: 'hello', limits: { memory_bytes: 268435456, pids: 32, cpu_cores: 0.5 } } },
};

export const ExecuteBodySchema = z.strictObject(ExecuteFields).refine(exactlyOneProgram, ONE_PROGRAM).meta({
  description: 'exactly one of script, command or argv',
  oneOf: ONE_PROGRAM_JSON,
  'x-examples': PROGRAM_EXAMPLES,
});

export const InputFileSchema = z.strictObject({
  path: z.string().min(1).max(1024).describe('workspace-relative path (no .., no leading /); its extension must be allowed'),
  content_base64: z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be base64'),
});

export const OneShotBodySchema = z
  .strictObject({ ...ExecuteFields, environment: EnvironmentNameSchema.optional(), files: z.array(InputFileSchema).max(1000).optional(), network: NetworkSchema.optional() })
  .refine(exactlyOneProgram, ONE_PROGRAM)
  .meta({
    description: 'exactly one of script, command or argv, run in a fresh workspace that holds `files`',
    oneOf: ONE_PROGRAM_JSON,
    'x-examples': {
      ...PROGRAM_EXAMPLES,
      files: {
        summary: 'input files in, changed files back inline',
        value: { environment: 'bare', command: 'tr a-z A-Z < in.txt > out.txt', files: [{ path: 'in.txt', content_base64: 'aGVsbG8K' }] },
      },
    },
  });

export const PythonErrorSchema = z
  .object({ type: z.string(), message: z.string(), line: z.number().int().nullable(), hint: z.string().nullable() })
  .nullable();

export const ExecutionResultSchema = z
  .object({
    status: z.enum(['ok', 'error', 'timeout', 'oom', 'killed']),
    exit_code: z.number().int().nullable(),
    signal: z.string().nullable(),
    stdout: z.string(),
    stderr: z.string(),
    truncated: z.boolean(),
    max_output_chars: z.number().int(),
    timed_out: z.boolean(),
    timeout_seconds: z.number(),
    duration_ms: z.number().int(),
    files: z.object({ created: z.array(z.string()), modified: z.array(z.string()), deleted: z.array(z.string()) })
      .describe('paths created, modified and deleted, each list sorted; together at most MAX_CHANGED_FILES paths and MAX_CHANGED_FILES_BYTES bytes'),
    files_truncated: z.boolean().describe('true when the lists in `files` are not all that changed: they hold the first changed paths in byte order, the rest were left out'),
    resources: z.object({ memory_peak_bytes: z.number().int().nullable(), cpu_ms: z.number().nullable() }),
    error: PythonErrorSchema,
  })
  .meta({ id: 'ExecutionResult' });

export const OneShotResultSchema = ExecutionResultSchema.extend({
  files: z.object({
    created: z.array(z.string()),
    modified: z.array(z.string()),
    deleted: z.array(z.string()),
    outputs: z.array(z.object({ path: z.string(), size: z.number().int(), content_base64: z.string() })),
    outputs_omitted: z.array(z.string()).describe('changed files not returned inline (over the count or size limit); only paths listed in created or modified, so as capped as they are'),
  }),
}).meta({ id: 'OneShotExecutionResult' });

export type ExecuteBody = z.infer<typeof ExecuteBodySchema>;
export type OneShotBody = z.infer<typeof OneShotBodySchema>;

export const ContextIdSchema = z.string().min(1).max(64);

export const RunCodeBodySchema = z
  .strictObject({
    code: z.string().min(1).max(1_000_000).describe('Python source, run in the session\'s persistent interpreter'),
    timeout_seconds: ExecuteFields.timeout_seconds,
    context_id: ContextIdSchema.optional().describe('a context made with POST /v1/sessions/{id}/contexts; absent: the session\'s default interpreter'),
  })
  .meta({
    'x-examples': {
      define: { summary: 'define a name', value: { code: 'x = 41' } },
      use: { summary: 'use it in the next call; the last expression comes back as result', value: { code: 'x + 1', timeout_seconds: 10 } },
    },
  });

export const RichOutputSchema = z.object({
  type: z.enum(['display_data', 'execute_result']),
  data: z.record(z.string(), z.unknown()).describe('MIME type → value: text/plain, text/html, image/png (base64), image/svg+xml, application/json (any JSON), text/markdown, text/latex'),
}).meta({ id: 'RichOutput', description: 'a MIME bundle, as Jupyter\'s display_data and execute_result carry' });

export const RunCodeResultSchema = ExecutionResultSchema.extend({
  error: z
    .object({ type: z.string(), message: z.string(), line: z.number().int().nullable(), hint: z.string().nullable(), traceback: z.array(z.string()) })
    .nullable(),
  result: z.string().nullable().describe('repr() of the final expression, like a notebook cell'),
  kernel_restarted: z.boolean().describe('true when the interpreter was lost since the last call and its state is gone'),
  outputs: z.array(RichOutputSchema).describe('display() outputs, matplotlib figures and the final expression\'s value (execute_result), in the order produced'),
  outputs_truncated: z.boolean().describe('true when outputs were dropped: past MAX_OUTPUT_CHARS characters in all'),
}).meta({ id: 'RunCodeResult' });

export type RunCodeBody = z.infer<typeof RunCodeBodySchema>;

// NDJSON streaming (Accept: application/x-ndjson): the schema of one line. Documentation only: the
// stream is written by streaming.ts, never through a serializer.
const OutputEventSchema = z.object({ type: z.enum(['stdout', 'stderr']), data: z.string() })
  .meta({ id: 'OutputEvent', description: 'output as it arrives' });
const ErrorEventSchema = ErrorSchema.extend({ type: z.literal('error') })
  .meta({ id: 'ErrorEvent', description: 'the last line when the service failed after the stream began' });
const streamOf = (result: z.ZodObject, id: string) => z.union([
  OutputEventSchema,
  result.extend({ type: z.literal('result') }).meta({ id, description: 'the last line: the result, with empty stdout and stderr' }),
  ErrorEventSchema,
]).describe('one JSON object per line');
export const ExecutionStreamSchema = streamOf(ExecutionResultSchema, 'ExecutionResultEvent');
export const OneShotStreamSchema = streamOf(OneShotResultSchema, 'OneShotExecutionResultEvent');
const DisplayEventSchema = z.object({ type: z.literal('display'), output: RichOutputSchema })
  .meta({ id: 'DisplayEvent', description: 'run_code: a rich output, in its place among stdout and stderr' });
export const RunCodeStreamSchema = z.union([
  OutputEventSchema,
  DisplayEventSchema,
  RunCodeResultSchema.extend({ type: z.literal('result') }).meta({ id: 'RunCodeResultEvent', description: 'the last line: the result, with empty stdout and stderr' }),
  ErrorEventSchema,
]).describe('one JSON object per line');

export const ContextParamsSchema = z.strictObject({ id: SessionIdSchema, cid: ContextIdSchema });
export const CreateContextBodySchema = z.strictObject({
  language: z.literal('python').default('python').describe('the interpreter\'s language (only python)'),
});
export const ContextSchema = z.object({
  context_id: z.string(),
  language: z.literal('python'),
  created_at: z.string().describe('ISO 8601 UTC'),
}).meta({ id: 'Context' });
export const ContextListSchema = z.object({ contexts: z.array(ContextSchema) }).meta({ id: 'ContextList' });

// Notebooks: POST /v1/sessions/{id}/notebooks/execute.
const NotebookPathSchema = z.string().min(1).max(1024);
export const NotebookExecuteBodySchema = z.strictObject({
  path: NotebookPathSchema.describe('workspace path of the notebook (.ipynb, nbformat 4)'),
  output_path: NotebookPathSchema.optional().describe('where the executed notebook is written; default `<name>.out.ipynb` beside it'),
  timeout_seconds: z.number().positive().optional().describe('the whole run, the kernel\'s start included; default EXECUTION_TIMEOUT_SECONDS, at most MAX_EXECUTION_TIMEOUT_SECONDS'),
  cell_timeout_seconds: z.number().int().min(1).optional().describe('each cell, and the kernel\'s start (whole seconds: nbclient\'s unit); default timeout_seconds rounded up, at most timeout_seconds'),
});

const NotebookErrorSchema = z.object({ ename: z.string(), evalue: z.string(), traceback: z.array(z.string()) }).meta({ id: 'NotebookError' });
export const NotebookResultSchema = z.object({
  status: z.enum(['ok', 'error', 'timeout']),
  cells: z.array(z.object({
    index: z.number().int().describe('position in the notebook\'s cells (code cells only are listed)'),
    status: z.enum(['ok', 'error', 'skipped']),
    execution_count: z.number().int().nullable(),
    error: NotebookErrorSchema.nullable(),
  })),
  output_path: z.string(),
  error: NotebookErrorSchema.nullable().describe('a failure outside the cells: the kernel did not start, the overall timeout, the run was killed'),
  files: ExecutionResultSchema.shape.files,
  files_truncated: z.boolean(),
  duration_ms: z.number().int(),
}).meta({ id: 'NotebookResult' });
