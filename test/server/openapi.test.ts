// The OpenAPI document as an integrator meets it: operation ids and summaries, named components,
// the real media types, security, a named file path, examples the app accepts, and a clean
// `redocly lint` with its recommended rules.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../../src/errors.js';
import { multipartBody, useTestApp } from '../helpers/app.js';
import { expectError } from '../helpers/http.js';

type Json = Record<string, unknown>;
interface Operation {
  operationId?: string;
  summary?: string;
  security?: Record<string, string[]>[];
  parameters?: { name: string; in: string }[];
  requestBody?: { content: Record<string, { schema: Json; examples?: Record<string, { value: unknown }> }> };
  responses: Record<string, { content?: Record<string, { schema: Json }> }>;
}
interface Doc {
  openapi: string;
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Json>; securitySchemes?: Record<string, Json> };
}

const KEY = 'openapi-key-0123456789abcdef';
const AUTH = { authorization: `Bearer ${KEY}` };
const REPO = path.resolve(import.meta.dirname, '../..');

const keyed = useTestApp({ API_KEY: KEY });
const open = useTestApp();
let doc: Doc;
let openDoc: Doc;
beforeAll(async () => {
  doc = (await keyed.app.inject({ method: 'GET', url: '/openapi.json' })).json<Doc>();
  openDoc = (await open.app.inject({ method: 'GET', url: '/openapi.json' })).json<Doc>();
});

function operations(d: Doc): { method: string; url: string; op: Operation }[] {
  return Object.entries(d.paths).flatMap(([url, ops]) => Object.entries(ops).map(([method, op]) => ({ method, url, op })));
}
function op(d: Doc, method: string, url: string): Operation {
  const found = d.paths[url]?.[method];
  if (!found) throw new Error(`${method} ${url} is not in the document`);
  return found;
}
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });

describe('operations', () => {
  it('every operation has a stable camelCase operationId and a summary', () => {
    const ids = operations(doc).map(({ method, url, op: o }) => {
      expect(o.summary, `${method} ${url}`).toMatch(/\S/);
      expect(o.operationId, `${method} ${url}`).toMatch(/^[a-z][A-Za-z0-9]*$/);
      return `${method.toUpperCase()} ${url} ${o.operationId}`;
    });
    expect(ids.sort()).toEqual([
      'DELETE /v1/sessions/{id} deleteSession',
      'DELETE /v1/sessions/{id}/contexts/{cid} deleteContext',
      'DELETE /v1/sessions/{id}/files/{path} deleteFile',
      'DELETE /v1/sessions/{id}/processes/{pid} killProcess',
      'DELETE /v1/volumes/{name} deleteVolume',
      'GET /healthz getHealth',
      'GET /metrics getMetrics',
      'GET /readyz getReadiness',
      'GET /v1/environments listEnvironments',
      'GET /v1/sessions listSessions',
      'GET /v1/sessions/{id} getSession',
      'GET /v1/sessions/{id}/contexts listContexts',
      'GET /v1/sessions/{id}/files listFiles',
      'GET /v1/sessions/{id}/files/{path} downloadFile',
      'GET /v1/sessions/{id}/ports/{port}/{path} proxyPort',
      'GET /v1/sessions/{id}/processes listProcesses',
      'GET /v1/sessions/{id}/processes/{pid} getProcess',
      'GET /v1/sessions/{id}/processes/{pid}/output getProcessOutput',
      'GET /v1/sessions/{id}/processes/{pid}/pty attachProcessTerminal',
      'GET /v1/volumes listVolumes',
      'PATCH /v1/sessions/{id}/network updateSessionNetwork',
      'POST /v1/execute executeOneShot',
      'POST /v1/sessions createSession',
      'POST /v1/sessions/{id}/contexts createContext',
      'POST /v1/sessions/{id}/execute executeInSession',
      'POST /v1/sessions/{id}/files uploadFiles',
      'POST /v1/sessions/{id}/kernel/restart restartKernel',
      'POST /v1/sessions/{id}/notebooks/execute executeNotebook',
      'POST /v1/sessions/{id}/processes startProcess',
      'POST /v1/sessions/{id}/processes/{pid}/signal signalProcess',
      'POST /v1/sessions/{id}/processes/{pid}/stdin writeProcessStdin',
      'POST /v1/sessions/{id}/run_code runCode',
    ]);
  });
});

describe('named components', () => {
  it('answers refer to named schemas instead of inlining them', () => {
    const json = (o: Operation, status: string) => o.responses[status]?.content?.['application/json']?.schema;
    expect(json(op(doc, 'post', '/v1/sessions/{id}/execute'), '200')).toEqual(ref('ExecutionResult'));
    expect(json(op(doc, 'post', '/v1/execute'), '200')).toEqual(ref('OneShotExecutionResult'));
    expect(json(op(doc, 'post', '/v1/sessions/{id}/run_code'), '200')).toEqual(ref('RunCodeResult'));
    expect(json(op(doc, 'post', '/v1/sessions'), '201')).toEqual(ref('SessionInfo'));
    expect(json(op(doc, 'get', '/v1/sessions/{id}'), '200')).toEqual(ref('SessionInfo'));
    expect(json(op(doc, 'patch', '/v1/sessions/{id}/network'), '200')).toEqual(ref('SessionInfo'));
    expect(JSON.stringify(doc.components.schemas.SessionInfo)).toContain(JSON.stringify(ref('Network')));
    expect(json(op(doc, 'get', '/v1/sessions/{id}/files'), '200')).toEqual(ref('FileList'));
    expect(json(op(doc, 'get', '/v1/volumes'), '200')).toEqual(ref('VolumeList'));
    expect(json(op(doc, 'get', '/readyz'), '200')).toEqual(ref('Ready'));
    expect(json(op(doc, 'get', '/readyz'), '503')).toEqual(ref('Ready'));
    expect(JSON.stringify(doc.components.schemas.VolumeList)).toContain(JSON.stringify(ref('Volume')));
    for (const { method, url, op: o } of operations(doc)) {
      for (const status of Object.keys(o.responses)) {
        if (status.startsWith('4') || (status === '503' && url.startsWith('/v1'))) expect(json(o, status), `${method} ${url} ${status}`).toEqual(ref('Error'));
      }
    }
    // Only what an operation reaches: no input/output twins left over.
    expect(Object.keys(doc.components.schemas).filter((n) => n.endsWith('Input'))).toEqual([]);
  });

  it('Error lists every code the service answers: each one thrown in src is in the enum', () => {
    const code = doc.components.schemas.Error?.properties as Record<string, { anyOf?: { enum?: string[]; pattern?: string }[] }> | undefined;
    const alternatives = code?.code?.anyOf ?? [];
    const listed = alternatives.flatMap((a) => a.enum ?? []);
    expect(alternatives.some((a) => a.pattern === '^FST_')).toBe(true);
    const thrown = new Set<string>();
    const walk = (dir: string) => {
      for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, entry.name);
        if (entry.isDirectory()) walk(p);
        else if (p.endsWith('.ts')) {
          const text = fs.readFileSync(p, 'utf8');
          const patterns = [
            /super\(\s*\d{3},\s*'([A-Z_]+)'/g, /new AppError\(\s*\d{3},\s*'([A-Z_]+)'/g, /BadRequestError\('([A-Z_]+)'/g,
            /errorBody\(\s*\d{3},\s*'([A-Z_]+)'/g, /readonly code = '([A-Z_]+)';\s*readonly statusCode = [1-4]\d\d/g, /(?<!readonly )\bcode = '([A-Z_]+)'/g,
          ];
          for (const re of patterns) for (const m of text.matchAll(re)) if (m[1]) thrown.add(m[1]);
        }
      }
    };
    walk(path.join(REPO, 'src'));
    expect(thrown.size).toBeGreaterThan(20);
    expect([...thrown].filter((c) => !listed.includes(c)).sort()).toEqual([]);
    expect(listed.sort()).toEqual(Object.keys(ERROR_CODES).sort());
    for (const c of ['FST_ERR_VALIDATION', 'INVALID_CURSOR', 'PATH_CONFLICT', 'WORKSPACE_FULL', 'MAX_VOLUMES', 'VOLUME_IN_USE', 'FILE_NOT_FOUND']) expect(listed).toContain(c);
  });
});

describe('media types', () => {
  it('the upload is multipart/form-data with binary file parts and the dir query', () => {
    const o = op(doc, 'post', '/v1/sessions/{id}/files');
    expect(Object.keys(o.requestBody?.content ?? {})).toEqual(['multipart/form-data']);
    const schema = o.requestBody?.content['multipart/form-data']?.schema as { properties: { files: { type: string; items: Json } } };
    expect(schema.properties.files.type).toBe('array');
    expect(schema.properties.files.items).toEqual({ type: 'string', format: 'binary' });
    expect(o.parameters?.some((p) => p.name === 'dir' && p.in === 'query')).toBe(true);
  });

  it('the download answers application/octet-stream bytes', () => {
    const content = op(doc, 'get', '/v1/sessions/{id}/files/{path}').responses['200']?.content ?? {};
    expect(Object.keys(content)).toEqual(['application/octet-stream']);
    expect(content['application/octet-stream']?.schema).toEqual({ type: 'string', format: 'binary' });
  });

  it.each([
    ['/v1/sessions/{id}/execute', ['OutputEvent', 'ExecutionResultEvent', 'ErrorEvent']],
    ['/v1/execute', ['OutputEvent', 'OneShotExecutionResultEvent', 'ErrorEvent']],
    ['/v1/sessions/{id}/run_code', ['OutputEvent', 'DisplayEvent', 'RunCodeResultEvent', 'ErrorEvent']],
  ])(
    '%s answers application/json or application/x-ndjson events', (url, events) => {
      const content = op(doc, 'post', url).responses['200']?.content ?? {};
      expect(Object.keys(content).sort()).toEqual(['application/json', 'application/x-ndjson']);
      expect(content['application/x-ndjson']?.schema).toMatchObject({ anyOf: events.map(ref) });
    },
  );

  it('/metrics answers Prometheus text', () => {
    expect(Object.keys(op(doc, 'get', '/metrics').responses['200']?.content ?? {})).toEqual(['text/plain']);
  });
});

describe('security', () => {
  it('with an API key, every /v1 operation declares bearer and the probes and /metrics none', () => {
    expect(doc.components.securitySchemes?.bearer).toMatchObject({ type: 'http', scheme: 'bearer' });
    for (const { method, url, op: o } of operations(doc)) {
      expect(o.security, `${method} ${url}`).toEqual(url.startsWith('/v1/') ? [{ bearer: [] }] : []);
    }
  });

  it('without an API key, no operation asks for one', () => {
    expect(openDoc.components.securitySchemes).toBeUndefined();
    for (const { op: o } of operations(openDoc)) expect(o.security).toEqual([]);
  });
});

describe('the file path parameter', () => {
  it('is named {path}, not Fastify\'s wildcard', () => {
    expect(Object.keys(doc.paths).filter((p) => p.includes('*'))).toEqual([]);
    for (const method of ['get', 'delete']) {
      const params = op(doc, method, '/v1/sessions/{id}/files/{path}').parameters ?? [];
      expect(params.map((p) => `${p.in}:${p.name}`).sort()).toEqual(['path:id', 'path:path']);
    }
  });

  it('takes slashes literally or as %2F', async () => {
    await keyed.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'paths' }, headers: AUTH });
    const mp = multipartBody([{ name: 'r.csv', content: 'a,b\n' }]);
    const up = await keyed.app.inject({ method: 'POST', url: '/v1/sessions/paths/files?dir=out/deep', payload: mp.payload, headers: { ...mp.headers, ...AUTH } });
    expect(up.statusCode, up.body).toBe(201);
    for (const p of ['out/deep/r.csv', 'out%2Fdeep%2Fr.csv']) {
      const res = await keyed.app.inject({ method: 'GET', url: `/v1/sessions/paths/files/${p}`, headers: AUTH });
      expect(res.statusCode, `${p}: ${res.body}`).toBe(200);
      expect(res.body).toBe('a,b\n');
    }
  });
});

describe('examples and bounds', () => {
  it('every request example in the document is accepted by the route it documents', async () => {
    const created = await keyed.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'examples', network: { mode: 'allowlist' } }, headers: AUTH }); // PATCH .../network needs allowlist
    expect(created.statusCode).toBe(201);
    let sent = 0;
    const kinds = new Set<string>();
    for (const { method, url, op: o } of operations(doc)) {
      for (const [mediaType, media] of Object.entries(o.requestBody?.content ?? {})) {
        for (const [name, example] of Object.entries(media.examples ?? {})) {
          const res = await keyed.app.inject({
            method: method.toUpperCase() as 'POST', url: url.replace('{id}', 'examples'),
            headers: { ...AUTH, 'content-type': mediaType }, payload: JSON.stringify(example.value),
          });
          expect(res.statusCode, `${method} ${url} example ${name}: ${res.body}`).toBeLessThan(300);
          if (url.endsWith('/execute')) kinds.add(name);
          sent++;
        }
      }
    }
    expect(sent).toBeGreaterThanOrEqual(10);
    expect([...kinds].sort()).toEqual(['argv', 'command', 'files', 'script']);
  });

  it('the minima the app enforces are the ones the document shows', async () => {
    const execute = op(doc, 'post', '/v1/sessions/{id}/execute').requestBody?.content['application/json']?.schema as
      { properties: { limits: { properties: Record<string, { minimum: number }> } } };
    const minima = Object.fromEntries(Object.entries(execute.properties.limits.properties).map(([k, v]) => [k, v.minimum]));
    expect(minima).toEqual({ memory_bytes: 16 * 1024 * 1024, pids: 4, cpu_cores: 0.01 });
    await keyed.app.inject({ method: 'POST', url: '/v1/sessions', payload: { session_id: 'bounds' }, headers: AUTH });
    for (const [field, min] of Object.entries(minima)) {
      const below = field === 'cpu_cores' ? min / 2 : min - 1;
      const body = expectError(await keyed.app.inject({ method: 'POST', url: '/v1/sessions/bounds/execute', headers: AUTH, payload: { command: 'true', limits: { [field]: below } } }), 400, 'FST_ERR_VALIDATION');
      expect(body.message).toContain(`limits.${field}`);
      const ok = await keyed.app.inject({ method: 'POST', url: '/v1/sessions/bounds/execute', headers: AUTH, payload: { command: 'true', limits: { [field]: min } } });
      expect(ok.statusCode, ok.body).toBe(200);
    }
  });

  it('the document says that exactly one of script, command and argv is required', () => {
    for (const url of ['/v1/sessions/{id}/execute', '/v1/execute']) {
      const schema = op(doc, 'post', url).requestBody?.content['application/json']?.schema;
      expect(schema?.oneOf).toEqual([{ required: ['script'] }, { required: ['command'] }, { required: ['argv'] }]);
    }
  });
});

describe('what a client generator needs (clients/typescript uses openapi-typescript)', () => {
  it('operationIds are unique, and every path parameter is a {name} that the operation declares', () => {
    const ids = operations(doc).map(({ op: o }) => o.operationId);
    expect(new Set(ids).size).toBe(ids.length);
    for (const { method, url, op: o } of operations(doc)) {
      expect(url, 'no Fastify wildcard or :param left').not.toMatch(/[*:]/);
      const declared = (o.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name).sort();
      expect(declared, `${method} ${url}`).toEqual([...url.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]).sort());
    }
  });

  it('every alternative of an anyOf is typed (an untyped one becomes `unknown` in generated types)', () => {
    const untyped: string[] = [];
    const walk = (v: unknown, at: string) => {
      if (Array.isArray(v)) v.forEach((x, i) => walk(x, `${at}/${i}`));
      else if (v !== null && typeof v === 'object') {
        for (const [k, x] of Object.entries(v as Json)) {
          if (k === 'anyOf' && Array.isArray(x)) {
            x.forEach((alt: Json, i) => {
              if (alt.type === undefined && alt.$ref === undefined && alt.const === undefined) untyped.push(`${at}/anyOf/${i}`);
            });
          }
          walk(x, `${at}/${k}`);
        }
      }
    };
    walk(doc, '#');
    expect(untyped).toEqual([]);
  });

  it('the JSON answers of /v1 operations are named component schemas (the ports proxy answers whatever the port does)', () => {
    for (const { method, url, op: o } of operations(doc).filter(({ url: u, op: x }) => u.startsWith('/v1/') && x.operationId !== 'proxyPort')) {
      for (const [status, response] of Object.entries(o.responses)) {
        const schema = response.content?.['application/json']?.schema;
        if (schema !== undefined) expect(schema, `${method} ${url} ${status}`).toHaveProperty('$ref');
      }
    }
  });
});

describe('redocly lint (recommended rules)', () => {
  const lint = async (d: Doc) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bs-openapi-'));
    try {
      const file = path.join(dir, 'openapi.json');
      fs.writeFileSync(file, JSON.stringify(d, null, 2));
      const cli = path.join(REPO, 'node_modules/@redocly/cli/bin/cli.js');
      const { stdout } = await promisify(execFile)(process.execPath, [cli, 'lint', '--extends=recommended', '--format=json', file], {
        cwd: dir, env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true', NO_COLOR: '1' }, maxBuffer: 16 * 1024 * 1024,
      }).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }));
      return JSON.parse(stdout) as { totals: { errors: number; warnings: number }; problems: { ruleId: string; severity: string; location: { pointer: string }[] }[] };
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  };

  it.each([['with an API key', () => doc], ['without one', () => openDoc]])('%s: no errors; the only warnings are probes without a 4xx answer', async (_name, get) => {
    const result = await lint(get());
    expect(result.problems.filter((p) => p.severity === 'error')).toEqual([]);
    expect(result.totals.errors).toBe(0);
    // The probes and /metrics never refuse a request: there is no 4xx to document. The pty route
    // is a WebSocket: its success is 101 Switching Protocols, no 2xx.
    expect(result.problems.map((p) => `${p.ruleId} ${p.location[0]?.pointer ?? ''}`).sort()).toEqual([
      'operation-2xx-response #/paths/~1v1~1sessions~1{id}~1processes~1{pid}~1pty/get/responses',
      'operation-4xx-response #/paths/~1healthz/get/responses',
      'operation-4xx-response #/paths/~1metrics/get/responses',
      'operation-4xx-response #/paths/~1readyz/get/responses',
    ]);
  }, 60_000);
});
