import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { createHostLayout, detectSystemMounts, removeStaleEtcDirs } from '../../src/sandbox/host-layout.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bs-layout-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function deadPid(): number {
  for (let pid = 4_000_000; pid > 1000; pid -= 997) {
    try {
      process.kill(pid, 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') return pid;
    }
  }
  throw new Error('no free pid found');
}

test('generated /etc directories of dead processes are removed, those of live ones kept', () => {
  const dead = path.join(tmp, `bubble-sandbox-etc-${deadPid()}-aaaa`);
  const alive = path.join(tmp, `bubble-sandbox-etc-${process.ppid}-bbbb`);
  const mine = path.join(tmp, `bubble-sandbox-etc-${process.pid}-cccc`);
  const other = path.join(tmp, 'unrelated-dir');
  for (const d of [dead, alive, mine, other]) fs.mkdirSync(d);
  fs.writeFileSync(path.join(dead, 'passwd'), 'x');
  expect(removeStaleEtcDirs(tmp)).toBe(1);
  expect(fs.existsSync(dead)).toBe(false);
  for (const d of [alive, mine, other]) expect(fs.existsSync(d)).toBe(true);
});

test('the layout mounts /usr read-only and generates a minimal /etc without host secrets', () => {
  const layout = createHostLayout();
  try {
    expect(detectSystemMounts()).toContainEqual({ kind: 'ro-bind', source: '/usr', dest: '/usr' });
    const dests = layout.etcFiles.map((f) => f.dest);
    expect(dests).toContain('/etc/passwd');
    expect(dests).not.toContain('/etc/shadow');
    const passwd = layout.etcFiles.find((f) => f.dest === '/etc/passwd');
    expect(fs.readFileSync(passwd?.source ?? '', 'utf8')).toContain('sandbox:x:1000:1000');
    expect(path.basename(layout.generatedEtcDir)).toMatch(new RegExp(`^bubble-sandbox-etc-${process.pid}-`));
  } finally {
    layout.dispose();
  }
  expect(fs.existsSync(layout.generatedEtcDir)).toBe(false);
});
