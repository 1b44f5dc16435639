#!/usr/bin/env node
// Entry point of the command line: the compiled CLI lives in dist/ (npm run build).
import('../dist/cli.js').then((m) => m.main(process.argv.slice(2))).then(
  (code) => { process.exitCode = code; },
  (err) => { console.error(err instanceof Error ? err.message : String(err)); process.exitCode = 2; },
);
