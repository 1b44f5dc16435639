// The Node.js releases the service runs on are the ones package.json's engines names: older ones
// fail later and obscurely (some dependencies are ES modules loaded with require), so the command
// line refuses them at once, with one line saying what to install. semver reads the range as npm
// does.
import fs from 'node:fs';
import semver from 'semver';

/** package.json's engines.node (one level above both src/ and dist/). */
export const REQUIRED_NODE: string = (JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { engines: { node: string } }).engines.node;

/** Why `version` (process.versions.node by default) cannot run the service, or null when it can. */
export function unsupportedNodeReason(version: string = process.versions.node, required: string = REQUIRED_NODE): string | null {
  if (semver.satisfies(version, required)) return null;
  return `Node.js ${version} is not supported: bubble-sandbox needs ${required} (package.json engines); install a current LTS release (see the README's Quick start) and run it again`;
}
