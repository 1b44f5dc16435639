import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { ConfigError, loadConfig, SETTINGS } from '../../src/config.js';
import { renderEnvExample } from '../../src/config-docs.js';
import { PROJECT_ROOT } from '../helpers/host-env.js';

describe('loadConfig', () => {
  test('defaults match the contract', () => {
    const c = loadConfig({}, '/srv/app', '/opt/bubble-sandbox');
    expect(c.host).toBe('127.0.0.1');
    expect(c.port).toBe(8000);
    expect(c.environmentsDir).toBe('/opt/bubble-sandbox/environments');
    expect(c.workspaceDir).toBe('/srv/app/workspace_data');
    expect(c.maxUploadSizeBytes).toBe(10485760);
    expect(c.allowedExtensions).toEqual(['.txt', '.csv', '.md', '.json', '.yaml', '.yml', '.tsv', '.xml', '.ipynb']);
    expect(c.executionTimeoutSeconds).toBe(30);
    expect(c.sessionIdleTimeoutSeconds).toBe(3600);
    expect(c.maxSessions).toBe(50);
    expect(c.allowPersistentSessions).toBe(true);
    expect(c.logLevel).toBe('info');
    expect(c.apiKey).toBeUndefined();
    expect(c.workspacePoolSize).toBe(4);
    expect(Object.isFrozen(c)).toBe(true);
  });

  test('the environments are the package\'s own from any working directory, unless ENVIRONMENTS_DIR is set', () => {
    expect(loadConfig({}, '/').environmentsDir).toBe(path.join(PROJECT_ROOT, 'environments'));
    expect(loadConfig({}, os.tmpdir()).environmentsDir).toBe(path.join(PROJECT_ROOT, 'environments'));
    expect(loadConfig({ BUBBLE_SANDBOX_ENVIRONMENTS_DIR: 'envs' }, '/srv/app', '/opt/bs').environmentsDir).toBe('/srv/app/envs');
    expect(loadConfig({ BUBBLE_SANDBOX_ENVIRONMENTS_DIR: '/data/envs' }, '/srv/app', '/opt/bs').environmentsDir).toBe('/data/envs');
    expect(loadConfig({}, '/srv/app', '/opt/bs').workspaceDir).toBe('/srv/app/workspace_data');
  });

  test('values are parsed from BUBBLE_SANDBOX_* variables', () => {
    const c = loadConfig({
      BUBBLE_SANDBOX_PORT: '9000',
      BUBBLE_SANDBOX_ALLOWED_EXTENSIONS: '[".CSV", ".parquet"]',
      BUBBLE_SANDBOX_ALLOW_PERSISTENT_SESSIONS: 'false',
      BUBBLE_SANDBOX_LOG_LEVEL: 'WARNING',
      BUBBLE_SANDBOX_CPU_CORES: '0.5',
    });
    expect(c.port).toBe(9000);
    expect(c.allowedExtensions).toEqual(['.csv', '.parquet']);
    expect(c.allowPersistentSessions).toBe(false);
    expect(c.logLevel).toBe('warn');
    expect(c.cpuCores).toBe(0.5);
    expect(loadConfig({ BUBBLE_SANDBOX_WORKSPACE_POOL_SIZE: '0' }).workspacePoolSize).toBe(0);
  });

  test.each([
    ['BUBBLE_SANDBOX_PORT', 'abc'],
    ['BUBBLE_SANDBOX_PORT', '70000'],
    ['BUBBLE_SANDBOX_MAX_SESSIONS', '0'],
    ['BUBBLE_SANDBOX_ALLOWED_EXTENSIONS', 'csv'],
    ['BUBBLE_SANDBOX_ALLOW_PERSISTENT_SESSIONS', 'maybe'],
    ['BUBBLE_SANDBOX_LOG_LEVEL', 'loud'],
    ['BUBBLE_SANDBOX_API_KEY', 'short'],
    ['BUBBLE_SANDBOX_SANDBOX_UID_COUNT', '10'],
    ['BUBBLE_SANDBOX_WORKSPACE_POOL_SIZE', '-1'],
    ['BUBBLE_SANDBOX_WORKSPACE_POOL_SIZE', '1.5'],
    ['BUBBLE_SANDBOX_EGRESS_ALLOW_PRIVATE_CIDRS', '10.0.0.0/8'],
    ['BUBBLE_SANDBOX_EGRESS_ALLOW_PRIVATE_CIDRS', '["10.0.0.0/33"]'],
    ['BUBBLE_SANDBOX_EGRESS_ALLOW_PRIVATE_CIDRS', '["intranet"]'],
  ])('a bad %s=%s stops start-up naming the variable', (name, value) => {
    expect(() => loadConfig({ [name]: value })).toThrow(ConfigError);
    expect(() => loadConfig({ [name]: value })).toThrow(name.replace('BUBBLE_SANDBOX_', ''));
  });

  test('EGRESS_ALLOW_PRIVATE_CIDRS is a JSON list of CIDRs, empty by default', () => {
    expect(loadConfig({}).egressAllowPrivateCidrs).toEqual([]);
    expect(loadConfig({ BUBBLE_SANDBOX_EGRESS_ALLOW_PRIVATE_CIDRS: '["127.0.0.1/32", "fd00::/8"]' }).egressAllowPrivateCidrs).toEqual(['127.0.0.1/32', 'fd00::/8']);
  });

  test('the default timeout may not exceed the maximum', () => {
    expect(() => loadConfig({ BUBBLE_SANDBOX_EXECUTION_TIMEOUT_SECONDS: '100', BUBBLE_SANDBOX_MAX_EXECUTION_TIMEOUT_SECONDS: '50' })).toThrow(/EXECUTION_TIMEOUT_SECONDS/);
  });

  describe('a HOST other machines can reach needs API_KEY', () => {
    const KEY = 'k'.repeat(32);
    test.each(['0.0.0.0', '::', '192.168.1.10', 'example.com'])('%s without API_KEY is refused, naming API_KEY and ALLOW_UNAUTHENTICATED', (host) => {
      const load = () => loadConfig({ BUBBLE_SANDBOX_HOST: host });
      expect(load).toThrow(ConfigError);
      expect(load).toThrow(/BUBBLE_SANDBOX_API_KEY/);
      expect(load).toThrow(/BUBBLE_SANDBOX_ALLOW_UNAUTHENTICATED=true/);
      expect(load).toThrow(`BUBBLE_SANDBOX_HOST=${host}`);
    });

    test('0.0.0.0 with API_KEY starts', () => {
      expect(loadConfig({ BUBBLE_SANDBOX_HOST: '0.0.0.0', BUBBLE_SANDBOX_API_KEY: KEY })).toMatchObject({ host: '0.0.0.0', apiKey: KEY });
    });

    test('0.0.0.0 with ALLOW_UNAUTHENTICATED=true starts, on purpose', () => {
      expect(loadConfig({ BUBBLE_SANDBOX_HOST: '0.0.0.0', BUBBLE_SANDBOX_ALLOW_UNAUTHENTICATED: 'true' })).toMatchObject({ host: '0.0.0.0', allowUnauthenticated: true });
      expect(() => loadConfig({ BUBBLE_SANDBOX_HOST: '0.0.0.0', BUBBLE_SANDBOX_ALLOW_UNAUTHENTICATED: 'false' })).toThrow(/API_KEY/);
    });

    test.each(['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', 'LOCALHOST'])('loopback %s needs no key', (host) => {
      expect(loadConfig({ BUBBLE_SANDBOX_HOST: host }).host).toBe(host);
    });
  });

  test('the README documents every setting', () => {
    const readme = fs.readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const missing = Object.keys(SETTINGS).filter((k) => !readme.includes(`\`${k}\``));
    expect(missing).toEqual([]);
  });

  test('.env.example lists every setting, in step with the code', () => {
    expect(fs.readFileSync(new URL('../../.env.example', import.meta.url), 'utf8')).toBe(renderEnvExample());
  });
});
