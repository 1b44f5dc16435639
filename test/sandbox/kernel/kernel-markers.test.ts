// The end-of-cell markers (driver.py _drained): a stream the service has already read to the end
// gets no marker (one wake-up of the service fewer per stream), a stream with output still
// unread gets one, and the output is whole either way. Real bwrap, through KernelProcess.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { KernelProcess, type DoneFrame } from '../../../src/sandbox/kernel/kernel-process.js';
import { baseEnvironment } from '../../../src/sandbox/spawn.js';
import { makeWorkspace } from '../../helpers/sandbox.js';
import { createKernelFixture, type KernelFixture } from './helpers.js';

let f: KernelFixture;
let proc: KernelProcess;
let workspace: string;
const seen = { stdout: [] as Buffer[], stderr: [] as Buffer[] };

beforeAll(async () => {
  f = await createKernelFixture();
  const identity = f.sandbox.identityFor(1);
  workspace = makeWorkspace(identity?.uid);
  proc = await KernelProcess.start({
    deps: f.runner.spawnDeps, cgroupName: f.runner.nextCgroupName('kernel'), environment: null, workspaceDir: workspace, volumes: [],
    env: baseEnvironment(null), limits: f.sandbox.defaultLimits, identity, cpuSeconds: 3600,
  }, 20_000);
  proc.sink = { stdout: (c) => seen.stdout.push(c), stderr: (c) => seen.stderr.push(c) };
});

afterAll(async () => {
  await proc.dispose();
  fs.rmSync(path.dirname(workspace), { recursive: true, force: true });
  await f.dispose();
});

function run(id: number, code: string): Promise<DoneFrame> {
  const done = proc.waitDone(id);
  proc.send({ type: 'run', id, code, marker: `<END-${id}>`, sync: `<SYNC-${id}>`, max_result_chars: 10_000, max_outputs_chars: 10_000 });
  return done;
}

const text = (chunks: Buffer[]) => Buffer.concat(chunks.splice(0)).toString('utf8');

test('a silent cell writes no marker: the streams were read to the end', async () => {
  await run(1, 'x = 1'); // the first cell after start-up
  text(seen.stdout);
  text(seen.stderr);
  const done = await run(2, '1 + 1');
  expect(done.result).toBe('2');
  expect(done.markers).toEqual({ stdout: false, stderr: false });
  expect(text(seen.stdout)).toBe('');
  expect(text(seen.stderr)).toBe('');
});

test('output the service has not read yet is followed by the marker, and arrives whole', async () => {
  // The cell prints, then says so through a file; this process does not read its pipes meanwhile
  // (the event loop is held), so the output is still unread when the cell ends.
  const flag = path.join(workspace, 'printed');
  const done = run(3, `print('y' * 5000, flush=True)\nimport sys\nsys.stderr.write('e' * 10)\nsys.stderr.flush()\nopen('printed', 'w').close()`);
  const deadline = Date.now() + 15_000;
  while (!fs.existsSync(flag) && Date.now() < deadline) { /* held on purpose */ }
  const hold = Date.now() + 300; // the cell's own end (its marker check) comes right after the file
  while (Date.now() < hold) { /* held on purpose */ }
  const frame = await done;
  expect(fs.existsSync(flag)).toBe(true);
  expect(frame.markers).toEqual({ stdout: true, stderr: true });
  // Give the markers time to come through, then: the output, then the marker, nothing else.
  await new Promise((r) => setTimeout(r, 200));
  expect(text(seen.stdout)).toBe(`${'y'.repeat(5000)}\n<END-3>`);
  expect(text(seen.stderr)).toBe(`${'e'.repeat(10)}<END-3>`);
});
