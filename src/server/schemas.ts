// Wire schemas: the bounds live here, and the OpenAPI document is generated from them.
import { z } from 'zod';

export const SessionIdSchema = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'must match [A-Za-z0-9_-]{1,64}');
export const EnvironmentNameSchema = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'must match [A-Za-z0-9_-]+ (at most 64 characters)');
export const VolumeNameSchema = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'must match [A-Za-z0-9_-]+ (at most 64 characters)');

export const ErrorSchema = z
  .object({ statusCode: z.number().int(), code: z.string(), error: z.string(), message: z.string() })
  .describe('Error');

export const EnvironmentSchema = z.object({
  name: z.string(),
  description: z.string(),
  dependencies: z.array(z.string()),
});
export const EnvironmentListSchema = z.object({ environments: z.array(EnvironmentSchema) });

const VolumesSchema = z
  .record(VolumeNameSchema, z.enum(['ro', 'rw']))
  .refine((v) => Object.keys(v).length <= 16, 'at most 16 volumes')
  .describe('volume name → "ro" or "rw"; mounted at /volumes/<name>');

export const CreateSessionBodySchema = z
  .strictObject({
    environment: EnvironmentNameSchema.optional().describe('execution environment (default "bare")'),
    session_id: SessionIdSchema.optional().describe('your own id; a random one when absent'),
    volumes: VolumesSchema.optional(),
  })
  .describe('CreateSession');
/** The body may be absent altogether (curl -X POST with no data): every field is optional. */
export const CreateSessionBodyOrNothingSchema = CreateSessionBodySchema.nullish();

export const SessionInfoSchema = z
  .object({
    session_id: z.string(),
    environment: z.string(),
    created_at: z.string(),
    last_activity: z.string(),
    expires_at: z.string(),
    volumes: z.record(z.string(), z.enum(['ro', 'rw'])),
  })
  .describe('SessionInfo');
export const SessionListSchema = z.object({ sessions: z.array(SessionInfoSchema) });

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
  .describe('VolumeInfo');
export const VolumeListSchema = z
  .object({
    volumes: z.array(VolumeInfoSchema).describe('every shared volume on this server, sorted by name'),
    max_volumes: z.number().int().describe('MAX_VOLUMES: how many may exist; a session naming a new one past it gets 429 MAX_VOLUMES'),
  })
  .describe('VolumeList');
export const FileParamsSchema = z.strictObject({ id: SessionIdSchema, '*': z.string().min(1).max(1024) });
export const DeleteSessionQuerySchema = z.strictObject({
  // Case-insensitive: Python's requests sends True/False as written.
  clear_data: z.string().regex(/^(true|false|1|0)$/i, 'must be true, false, 1 or 0').default('true').transform((v) => v.toLowerCase() === 'true' || v === '1')
    .describe('true (default): remove the workspace; false: keep it on disk for a later session with this id'),
});
export const UploadQuerySchema = z.strictObject({ dir: z.string().min(1).max(1024).optional() });

export const FileEntrySchema = z.object({ path: z.string(), size: z.number().int() });
export const UploadResultSchema = z.object({ files: z.array(FileEntrySchema) });
export const FileListSchema = z.object({
  files: z.array(z.object({ path: z.string(), size: z.number().int(), modified_at: z.string() }))
    .describe('regular files sorted by path in UTF-8 byte order: at most MAX_LIST_FILES entries and MAX_LIST_BYTES bytes of paths per page'),
  next: z.string().nullable().describe('pass as ?cursor= for the next page; null when this page ends the listing'),
}).describe('FileList');
export const ListFilesQuerySchema = z.strictObject({
  cursor: z.string().max(2048).optional().describe('the `next` of the previous page (opaque); the listing resumes after the last path it returned'),
  limit: z.coerce.number().int().min(1).max(1_000_000).optional().describe('most entries on this page; MAX_LIST_FILES when larger or absent'),
});

const EnvMapSchema = z
  .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'environment variable names match [A-Za-z_][A-Za-z0-9_]*'), z.string().max(32_768).refine((v) => !v.includes('\0'), 'must not contain NUL'))
  .refine((v) => Object.keys(v).length <= 64, 'at most 64 variables');

export const LimitsSchema = z.strictObject({
  memory_bytes: z.number().int().positive().optional(),
  pids: z.number().int().positive().optional(),
  cpu_cores: z.number().positive().optional(),
});

const ExecuteFields = {
  script: z.string().min(1).max(1_000_000).optional().describe('Python source, run by the environment interpreter'),
  command: z.string().min(1).max(100_000).refine((v) => !v.includes('\0'), 'must not contain NUL').optional().describe('shell command, run by /bin/sh -c'),
  argv: z.array(z.string().max(100_000).refine((v) => !v.includes('\0'), 'must not contain NUL')).min(1).max(1000).optional().describe('program and arguments, run without a shell'),
  stdin: z.string().max(10_000_000).optional(),
  timeout_seconds: z.number().positive().optional(),
  env: EnvMapSchema.optional(),
  limits: LimitsSchema.optional(),
};

const exactlyOneProgram = (v: { script?: unknown; command?: unknown; argv?: unknown }) =>
  [v.script, v.command, v.argv].filter((x) => x !== undefined).length === 1;
const ONE_PROGRAM = { message: 'exactly one of script, command or argv is required', path: ['script'] };

export const ExecuteBodySchema = z.strictObject(ExecuteFields).refine(exactlyOneProgram, ONE_PROGRAM).describe('Execute');

export const InputFileSchema = z.strictObject({
  path: z.string().min(1).max(1024),
  content_base64: z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be base64'),
});

export const OneShotBodySchema = z
  .strictObject({ ...ExecuteFields, environment: EnvironmentNameSchema.optional(), files: z.array(InputFileSchema).max(1000).optional() })
  .refine(exactlyOneProgram, ONE_PROGRAM)
  .describe('OneShotExecute');

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
  .describe('ExecutionResult');

export const OneShotResultSchema = ExecutionResultSchema.extend({
  files: z.object({
    created: z.array(z.string()),
    modified: z.array(z.string()),
    deleted: z.array(z.string()),
    outputs: z.array(z.object({ path: z.string(), size: z.number().int(), content_base64: z.string() })),
    outputs_omitted: z.array(z.string()).describe('changed files not returned inline (over the count or size limit); only paths listed in created or modified, so as capped as they are'),
  }),
}).describe('OneShotExecutionResult');

export type ExecuteBody = z.infer<typeof ExecuteBodySchema>;
export type OneShotBody = z.infer<typeof OneShotBodySchema>;

export const RunCodeBodySchema = z
  .strictObject({
    code: z.string().min(1).max(1_000_000).describe('Python source, run in the session\'s persistent interpreter'),
    timeout_seconds: z.number().positive().optional(),
  })
  .describe('RunCode');

export const RunCodeResultSchema = ExecutionResultSchema.extend({
  error: z
    .object({ type: z.string(), message: z.string(), line: z.number().int().nullable(), hint: z.string().nullable(), traceback: z.array(z.string()) })
    .nullable(),
  result: z.string().nullable().describe('repr() of the final expression, like a notebook cell'),
  kernel_restarted: z.boolean().describe('true when the interpreter was lost since the last call and its state is gone'),
}).describe('RunCodeResult');

export type RunCodeBody = z.infer<typeof RunCodeBodySchema>;
