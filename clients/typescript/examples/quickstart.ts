// A tour of the client against a running service:
//   BUBBLE_SANDBOX_URL=http://127.0.0.1:8000 BUBBLE_SANDBOX_API_KEY=... npx tsx clients/typescript/examples/quickstart.ts
import { BubbleSandboxError, createBubbleSandboxClient } from '../src/index.js';

const client = createBubbleSandboxClient({
  baseUrl: process.env.BUBBLE_SANDBOX_URL ?? 'http://127.0.0.1:8000',
  apiKey: process.env.BUBBLE_SANDBOX_API_KEY,
});

// Typed calls: paths, bodies and answers come from the service's OpenAPI document.
const { data: session, error } = await client.api.POST('/v1/sessions', { body: { environment: 'bare' } });
if (!session) throw new Error(`create failed: ${error?.code ?? 'unknown'}`);
const id = session.session_id;
console.log(`session ${id}`);

try {
  const { data: run } = await client.api.POST('/v1/sessions/{id}/execute', { params: { path: { id } }, body: { command: 'echo hello from $(uname -s)' } });
  console.log(`execute: ${run?.status} ${run?.stdout.trim()}`);

  // State lasts between run_code calls.
  await client.api.POST('/v1/sessions/{id}/run_code', { params: { path: { id } }, body: { code: 'total = sum(range(10))' } });
  const { data: cell } = await client.api.POST('/v1/sessions/{id}/run_code', { params: { path: { id } }, body: { code: 'total * 2' } });
  console.log(`run_code: ${cell?.result}`);

  // Files in (multipart), a program that reads them, bytes out.
  await client.uploadFiles(id, [{ name: 'numbers.csv', content: 'n\n1\n2\n3\n' }], { dir: 'in' });
  await client.api.POST('/v1/sessions/{id}/execute', {
    params: { path: { id } },
    body: { script: "import csv, os\nos.makedirs('out', exist_ok=True)\nrows = list(csv.DictReader(open('in/numbers.csv')))\nopen('out/sum.txt', 'w').write(str(sum(int(r['n']) for r in rows)))\n" },
  });
  console.log(`download: ${new TextDecoder().decode(await client.downloadFile(id, 'out/sum.txt'))}`);

  // Output as it arrives (NDJSON), then the result.
  const events = await client.streamExecute(id, { command: 'for i in 1 2 3; do echo tick $i; sleep 0.2; done' });
  for await (const event of events) {
    if (event.type === 'stdout') process.stdout.write(`stream: ${event.data}`);
    else if (event.type === 'result') console.log(`stream result: ${event.status}, exit ${event.exit_code}`);
  }

  // Errors carry the service's stable code.
  await client.downloadFile(id, 'missing.txt').catch((err: unknown) => {
    if (err instanceof BubbleSandboxError) console.log(`error: ${err.status} ${err.code}`);
    else throw err;
  });
} finally {
  await client.api.DELETE('/v1/sessions/{id}', { params: { path: { id }, query: { clear_data: 'true' } } });
  console.log('deleted');
}
