// Renders the settings table as .env.example text (every line commented: the defaults apply).
import { ENV_PREFIX, SETTINGS } from './config.js';

const MACHINE_DEPENDENT: Record<string, string> = { MAX_CONCURRENT_EXECUTIONS: 'number of CPU cores', SANDBOXES_CPU_CORES: 'number of CPU cores - 1, at least 0.5' };

export function renderEnvExample(): string {
  const lines = [
    '# bubble-sandbox settings. Every variable is optional: the value shown is the default.',
    '# Copy to .env and uncomment what you change; real environment variables win over .env.',
    '',
  ];
  for (const [key, spec] of Object.entries(SETTINGS)) {
    lines.push(`# ${spec.doc}`);
    const value = MACHINE_DEPENDENT[key] ? `  (default: ${MACHINE_DEPENDENT[key]})` : spec.default === undefined ? '  (default: unset)' : (spec.default.startsWith('[') ? `'${spec.default}'` : spec.default);
    lines.push(`# ${ENV_PREFIX}${key}=${MACHINE_DEPENDENT[key] || spec.default === undefined ? '' : value}${MACHINE_DEPENDENT[key] || spec.default === undefined ? value : ''}`);
    lines.push('');
  }
  return lines.join('\n');
}
