// A minimal keep-alive HTTP client on node:http: less client-side work per request than fetch,
// so what the benchmark measures is the service, not the client.
import http from 'node:http';
import { randomBytes } from 'node:crypto';

export interface HttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

export class BenchClient {
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  private readonly url: URL;

  constructor(baseUrl: string) {
    this.url = new URL(baseUrl);
  }

  request(method: string, route: string, body?: Buffer | string, headers: http.OutgoingHttpHeaders = {}): Promise<HttpResponse> {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : typeof body === 'string' ? Buffer.from(body) : body;
      const req = http.request({
        agent: this.agent, host: this.url.hostname, port: this.url.port, method, path: route,
        headers: payload ? { 'content-length': payload.length, ...headers } : headers,
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(payload);
    });
  }

  json(method: string, route: string, body?: unknown): Promise<HttpResponse> {
    return body === undefined
      ? this.request(method, route)
      : this.request(method, route, JSON.stringify(body), { 'content-type': 'application/json' });
  }

  /** One multipart/form-data request with a single file part named `file`. */
  upload(route: string, filename: string, content: Buffer): Promise<HttpResponse> {
    const boundary = `----bench${randomBytes(12).toString('hex')}`;
    const head = Buffer.from(`--${boundary}\r\ncontent-disposition: form-data; name="file"; filename="${filename}"\r\ncontent-type: application/octet-stream\r\n\r\n`);
    const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
    return this.request('POST', route, Buffer.concat([head, content, tail]), { 'content-type': `multipart/form-data; boundary=${boundary}` });
  }

  close(): void {
    this.agent.destroy();
  }
}

export interface ExecOutcome {
  status: number;
  headers: http.IncomingHttpHeaders;
  result: { status?: string; stdout?: string; duration_ms?: number; files?: { created?: string[] } } | null;
  text: string;
}

export async function executeIn(client: BenchClient, sessionId: string, body: Record<string, unknown>): Promise<ExecOutcome> {
  const res = await client.json('POST', `/v1/sessions/${sessionId}/execute`, body);
  let result: ExecOutcome['result'] = null;
  try {
    result = JSON.parse(res.text) as ExecOutcome['result'];
  } catch {
    result = null;
  }
  return { status: res.status, headers: res.headers, result, text: res.text };
}

export async function createSession(client: BenchClient, sessionId: string, environment = 'bare'): Promise<void> {
  const res = await client.json('POST', '/v1/sessions', { session_id: sessionId, environment });
  if (res.status !== 201 && res.status !== 200) throw new Error(`creating session ${sessionId}: ${res.status} ${res.text}`);
}

export async function deleteSession(client: BenchClient, sessionId: string): Promise<void> {
  const res = await client.request('DELETE', `/v1/sessions/${sessionId}?clear_data=true`);
  if (res.status !== 204) throw new Error(`deleting session ${sessionId}: ${res.status} ${res.text}`);
}
