#!/usr/bin/env node
// Prints one list of an environment's pyproject.toml, one item a line, for
// scripts/build-environments.sh:
//   node scripts/read-pyproject.mjs <pyproject.toml> dependencies      ([project] dependencies)
//   node scripts/read-pyproject.mjs <pyproject.toml> debian-packages   ([tool.bubble-sandbox])
// The same TOML parser and the same rules as parseProjectTable in src/sandbox/environments.ts
// (test/unit/pyproject-readers.test.ts holds them to it). Plain JavaScript, because it runs before
// the TypeScript is built. A malformed file exits 1 with a one-line error naming it.
import fs from 'node:fs';
import { parse, TomlError } from 'smol-toml';

const LISTS = {
  dependencies: ['project', 'dependencies'],
  'debian-packages': ['tool', 'bubble-sandbox', 'debian-packages'],
};

function fail(message) {
  process.stderr.write(`error: ${message}\n`);
  process.exit(1);
}

const [file, list] = process.argv.slice(2);
if (!file || !Object.hasOwn(LISTS, list ?? '')) fail('usage: read-pyproject.mjs <pyproject.toml> dependencies|debian-packages');

let text;
try {
  text = fs.readFileSync(file, 'utf8');
} catch (err) {
  fail(`${file}: cannot be read (${err.code ?? err.message})`);
}

let value;
try {
  value = parse(text);
} catch (err) {
  if (!(err instanceof TomlError)) throw err;
  const why = (err.message.split('\n')[0] ?? '').replace(/^Invalid TOML document: /, '');
  fail(`${file}: not valid TOML at line ${err.line}, column ${err.column}: ${why}`);
}

const keys = LISTS[list];
for (const [i, key] of keys.entries()) {
  const last = i === keys.length - 1;
  if (typeof value !== 'object' || value === null || Array.isArray(value) || value instanceof Date) fail(`${file}: ${keys.slice(0, i).join('.')} must be a table`);
  value = value[key];
  if (value === undefined) break;
  if (last && (!Array.isArray(value) || !value.every((v) => typeof v === 'string'))) fail(`${file}: ${keys.join('.')} must be a list of strings`);
}
for (const item of value ?? []) {
  const trimmed = item.trim();
  if (trimmed.length > 0) process.stdout.write(`${trimmed}\n`);
}
