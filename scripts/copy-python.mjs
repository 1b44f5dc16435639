// Build step after tsc: copies the Python files that live beside the TypeScript in src/ (the
// kernel driver, the change watcher) to the same place under dist/, where the modules read them.
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
const copied = [];
for (const rel of fs.readdirSync(path.join(root, 'src'), { recursive: true })) {
  if (!String(rel).endsWith('.py')) continue;
  const to = path.join(root, 'dist', String(rel));
  fs.mkdirSync(path.dirname(to), { recursive: true });
  fs.copyFileSync(path.join(root, 'src', String(rel)), to);
  copied.push(String(rel));
}
if (copied.length === 0) throw new Error('copy-python: no .py file under src/');
