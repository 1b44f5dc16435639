// Regenerates .env.example from the settings table in src/config.ts (run after npm run build).
// A test checks that the committed file matches, so the two never drift apart.
import fs from 'node:fs';
import { renderEnvExample } from '../dist/config-docs.js';

fs.writeFileSync(new URL('../.env.example', import.meta.url), renderEnvExample());
