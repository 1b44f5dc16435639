// The OpenAPI document: @fastify/swagger options around fastify-type-provider-zod's transforms.
// The zod schemas give the shapes (named ones become components); this file adds what the route
// schemas cannot say themselves: a named {path} instead of Fastify's wildcard, the bearer security
// of /v1 routes when an API key is set, the multipart body of an upload, and no unused components.
import { STATUS_CODES } from 'node:http';
import type { FastifyDynamicSwaggerOptions, SwaggerTransform } from '@fastify/swagger';
import { jsonSchemaTransform, jsonSchemaTransformObject } from 'fastify-type-provider-zod';
import type { Config } from '../config.js';
import { VERSION } from '../version.js';

type JsonObject = Record<string, unknown>;

const isObject = (v: unknown): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

const SECURITY_NAME = 'bearer';

/** How a multipart route's body looks: file parts under any field name (`files` in the document). */
const MULTIPART_FILES_BODY = {
  type: 'object',
  properties: {
    files: {
      type: 'array',
      items: { type: 'string', format: 'binary' },
      description: 'one or more file parts; each is stored as <dir>/<basename of its filename> (the field name does not matter)',
    },
  },
  required: ['files'],
};

/** Fastify's wildcard (`/files/*`) as a named parameter: `/files/:path`, documented as `{path}`. */
function nameWildcard(url: string, schema: JsonObject): string {
  if (!url.endsWith('/*')) return url;
  const params = schema.params;
  if (isObject(params) && isObject(params.properties) && '*' in params.properties) {
    const { '*': wildcard, ...rest } = params.properties;
    params.properties = {
      ...rest,
      path: {
        description: 'workspace-relative file path; it may contain `/` (out/result.csv), literally or as %2F',
        ...(isObject(wildcard) ? wildcard : {}),
      },
    };
    if (Array.isArray(params.required)) params.required = params.required.map((r: unknown) => (r === '*' ? 'path' : r));
  }
  return `${url.slice(0, -1)}:path`;
}

/** A response without a description of its own is described by its status ("Not Found"), not "Default Response". */
function describeResponses(schema: JsonObject): void {
  if (!isObject(schema.response)) return;
  for (const [status, response] of Object.entries(schema.response)) {
    if (isObject(response) && response.description === undefined && response['x-response-description'] === undefined) {
      response['x-response-description'] = STATUS_CODES[status] ?? status;
    }
  }
}

function createRouteTransform(apiKey: boolean): SwaggerTransform {
  return (input) => {
    const out = jsonSchemaTransform(input);
    const schema = out.schema as JsonObject;
    if (schema.hide === true) return out;
    const url = nameWildcard(out.url, schema);
    // Probes and /metrics never ask for the key; with no key configured nothing does.
    schema.security = apiKey && url.startsWith('/v1/') ? [{ [SECURITY_NAME]: [] }] : [];
    describeResponses(schema);
    const consumes = schema.consumes;
    if (schema.body === undefined && Array.isArray(consumes) && consumes.includes('multipart/form-data')) {
      schema.body = MULTIPART_FILES_BODY;
    }
    return { schema, url };
  };
}

/** Every `#/components/schemas/<name>` a value refers to. */
function collectRefs(value: unknown, into: Set<string>): void {
  if (Array.isArray(value)) {
    for (const v of value) collectRefs(v, into);
  } else if (isObject(value)) {
    for (const [k, v] of Object.entries(value)) {
      if (k === '$ref' && typeof v === 'string' && v.startsWith('#/components/schemas/')) into.add(v.slice('#/components/schemas/'.length));
      else collectRefs(v, into);
    }
  }
}

/**
 * Keeps only the component schemas the operations reach. The zod transform emits every registered
 * schema twice (as input `XInput` and as output `X`); ours are used one way only.
 */
export function pruneUnusedSchemas<T extends JsonObject>(doc: T): T {
  const components = isObject(doc.components) ? doc.components : {};
  const schemas = isObject(components.schemas) ? components.schemas : {};
  const reached = new Set<string>();
  collectRefs({ ...doc, components: { ...components, schemas: {} } }, reached);
  const queue = [...reached];
  for (let name = queue.pop(); name !== undefined; name = queue.pop()) {
    const found = new Set<string>();
    collectRefs(schemas[name], found);
    for (const f of found) {
      if (!reached.has(f)) {
        reached.add(f);
        queue.push(f);
      }
    }
  }
  const kept = Object.fromEntries(Object.entries(schemas).filter(([name]) => reached.has(name)).sort(([a], [b]) => a.localeCompare(b)));
  return { ...doc, components: { ...components, schemas: kept } };
}

export function openApiOptions(config: Pick<Config, 'apiKey'>): FastifyDynamicSwaggerOptions {
  const apiKey = Boolean(config.apiKey);
  return {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'bubble-sandbox',
        description: 'Run untrusted Python and shell code in bubblewrap sandboxes',
        version: VERSION,
        license: { name: 'MIT', identifier: 'MIT' },
      },
      servers: [{ url: '/', description: 'this server' }],
      components: apiKey
        ? { securitySchemes: { [SECURITY_NAME]: { type: 'http', scheme: 'bearer', description: 'BUBBLE_SANDBOX_API_KEY: Authorization: Bearer <key> on every /v1 route' } } }
        : {},
    },
    transform: createRouteTransform(apiKey),
    transformObject: (input) => pruneUnusedSchemas(jsonSchemaTransformObject(input) as JsonObject),
  };
}
