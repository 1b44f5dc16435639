// The bubble-sandbox client: `api` is openapi-fetch over the generated types (every route, typed
// paths, bodies and answers: `const { data, error } = await client.api.POST('/v1/sessions', { body: {} })`),
// and the hand-kept extras for upload, download and NDJSON streams.
import createClient from 'openapi-fetch';
import { createExtras } from './extras.js';
import type { paths } from './types.js';

export { BubbleSandboxError, type UploadFile } from './extras.js';
export type * from './types.js';

export interface ClientOptions {
  /** e.g. http://127.0.0.1:8000 */
  baseUrl: string;
  /** BUBBLE_SANDBOX_API_KEY of the service, when it has one. */
  apiKey?: string | undefined;
  fetch?: (input: Request) => Promise<Response>;
}

export function createBubbleSandboxClient(opts: ClientOptions) {
  // Answers typed as their JSON form; the NDJSON form of the execution routes is the extras' stream*.
  const api = createClient<paths, 'application/json'>({
    baseUrl: opts.baseUrl.replace(/\/+$/, ''),
    headers: opts.apiKey ? { authorization: `Bearer ${opts.apiKey}` } : {},
    ...(opts.fetch ? { fetch: opts.fetch } : {}),
  });
  return { api, ...createExtras(api) };
}

export type BubbleSandboxClient = ReturnType<typeof createBubbleSandboxClient>;
