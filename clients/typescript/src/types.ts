// Friendly names for the generated types (schema.d.ts, made by `npm run generate`).
import type { components, operations } from './schema.js';

export type { components, operations, paths } from './schema.js';

type Schemas = components['schemas'];
type JsonBody<Op extends keyof operations> = operations[Op] extends { requestBody?: { content: { 'application/json': infer B } } } ? B : never;

export type ApiError = Schemas['Error'];
export type SessionInfo = Schemas['SessionInfo'];
export type EnvironmentList = Schemas['EnvironmentList'];
export type ExecutionResult = Schemas['ExecutionResult'];
export type OneShotExecutionResult = Schemas['OneShotExecutionResult'];
export type RunCodeResult = Schemas['RunCodeResult'];
export type FileList = Schemas['FileList'];
export type UploadResult = Schemas['UploadResult'];

export type CreateSessionBody = NonNullable<JsonBody<'createSession'>>;
export type ExecuteBody = JsonBody<'executeInSession'>;
export type OneShotBody = JsonBody<'executeOneShot'>;
export type RunCodeBody = JsonBody<'runCode'>;

/** One line of an NDJSON stream: output as it arrives, then exactly one result (or an error). */
export type StreamEvent<R> = Schemas['OutputEvent'] | (R & { type: 'result' }) | Schemas['ErrorEvent'];
