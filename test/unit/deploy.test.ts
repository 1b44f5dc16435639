// The Dockerfile and the Kubernetes manifests, checked statically (no Docker engine or cluster
// here): they parse, the probes hit /healthz and /readyz on the container's port, the workspace
// dir is on the per-replica volume, the Services and the PodDisruptionBudget select the pods,
// the peer pattern names the StatefulSet's stable names and its replica count, and every
// BUBBLE_SANDBOX_* setting they name exists in src/config.ts.
/* eslint-disable @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-argument, @typescript-eslint/no-unsafe-assignment -- parsed YAML: each field is checked by the expectation that reads it */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { ENV_PREFIX, SETTINGS, loadConfig } from '../../src/config.js';
import { PROJECT_ROOT } from '../helpers/host-env.js';

const K8S = path.join(PROJECT_ROOT, 'deploy', 'kubernetes');
const dockerfile = fs.readFileSync(path.join(PROJECT_ROOT, 'Dockerfile'), 'utf8');

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- parsed YAML, checked field by field

function manifests(): Obj[] {
  const out: Obj[] = [];
  for (const f of fs.readdirSync(K8S).filter((n) => n.endsWith('.yaml'))) {
    for (const doc of parseAllDocuments(fs.readFileSync(path.join(K8S, f), 'utf8'))) {
      expect(doc.errors, f).toEqual([]);
      const value = doc.toJS() as Obj | null;
      if (value !== null) out.push({ ...value, __file: f });
    }
  }
  return out;
}

const all = manifests();
const ofKind = (kind: string) => all.filter((m) => m.kind === kind);
const one = (kind: string) => {
  const list = ofKind(kind);
  expect(list.length, kind).toBe(1);
  return list[0] as Obj;
};
/** Every BUBBLE_SANDBOX_* name in a text. */
const settingNames = (text: string) => [...new Set([...text.matchAll(/BUBBLE_SANDBOX_([A-Z0-9_]+)/g)].map((m) => m[1] ?? ''))];

describe('Dockerfile', () => {
  const instructions = dockerfile.replace(/\\\n/g, ' ').split('\n').filter((l) => /^[A-Z]+\s/.test(l));
  const of = (name: string) => instructions.filter((l) => l.startsWith(`${name} `));

  test('Debian base, built from the lockfile, the host tools, a HEALTHCHECK on /healthz, serve as the command', () => {
    expect(dockerfile).toMatch(/^ARG NODE_IMAGE=node:[\d.]+-bookworm-slim$/m);
    expect(of('FROM').length).toBe(2);
    expect(of('RUN').join('\n')).toContain('npm ci');
    for (const pkg of ['bubblewrap', 'python3', 'python3-venv', 'util-linux', 'e2fsprogs', 'slirp4netns', 'nftables', 'tini']) expect(of('RUN').join(' ')).toMatch(new RegExp(`\\s${pkg}(\\s|;)`));
    expect(of('RUN').join('\n')).toContain('scripts/build-environments.sh');
    expect(of('HEALTHCHECK')[0]).toContain('/healthz');
    expect(of('CMD').at(-1)).toContain('"serve"');
    expect(of('EXPOSE')[0]).toBe('EXPOSE 8000');
  });

  test('every file it copies from the context exists, and .dockerignore keeps the local venvs and data out', () => {
    for (const line of of('COPY').filter((l) => !l.includes('--from='))) {
      const sources = line.split(/\s+/).slice(1, -1);
      for (const s of sources) expect(fs.existsSync(path.join(PROJECT_ROOT, s)), s).toBe(true);
    }
    const ignore = fs.readFileSync(path.join(PROJECT_ROOT, '.dockerignore'), 'utf8').split('\n');
    for (const p of ['node_modules', 'dist', 'workspace_data', 'environments/*/.venv', '.env']) expect(ignore).toContain(p);
  });

  test('the settings it sets exist and load', () => {
    const names = settingNames(dockerfile);
    expect(names.filter((n) => !(n in SETTINGS))).toEqual([]);
    const env = Object.fromEntries([...dockerfile.matchAll(/(BUBBLE_SANDBOX_[A-Z_]+)=(\S+)/g)].filter((m) => !m[2]?.startsWith('$')).map((m) => [m[1], m[2]]));
    expect(() => loadConfig({ ...env, BUBBLE_SANDBOX_API_KEY: 'k'.repeat(32) })).not.toThrow();
  });
});

describe('Kubernetes manifests', () => {
  const sts = one('StatefulSet');
  const pod = sts.spec.template.spec as Obj;
  const container = pod.containers[0] as Obj;
  const podLabels = sts.spec.template.metadata.labels as Record<string, string>;
  const selects = (selector: Record<string, string>) => Object.entries(selector).every(([k, v]) => podLabels[k] === v);
  const configMap = one('ConfigMap');
  const settings = configMap.data as Record<string, string>;

  test('probes: liveness and startup on /healthz, readiness on /readyz, on the container port', () => {
    const port = (container.ports as Obj[]).find((p) => p.name === 'http');
    expect(port?.containerPort).toBe(Number(settings.BUBBLE_SANDBOX_PORT));
    expect(container.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'http' });
    expect(container.startupProbe.httpGet).toEqual({ path: '/healthz', port: 'http' });
    expect(container.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'http' });
  });

  test('the workspace dir is on a volume of each replica', () => {
    const claim = (sts.spec.volumeClaimTemplates as Obj[])[0];
    const mount = (container.volumeMounts as Obj[]).find((m) => m.name === claim?.metadata.name);
    expect(mount).toBeDefined();
    expect(`${settings.BUBBLE_SANDBOX_WORKSPACE_DIR}/`.startsWith(`${String(mount?.mountPath)}/`)).toBe(true);
    expect(sts.spec.persistentVolumeClaimRetentionPolicy).toEqual({ whenScaled: 'Retain', whenDeleted: 'Retain' });
    // The uid-range lock is shared by the pods of a node.
    const lock = (container.volumeMounts as Obj[]).find((m) => settings.BUBBLE_SANDBOX_UID_LOCK_DIR?.startsWith(`${String(m.mountPath)}/`));
    expect((pod.volumes as Obj[]).find((v) => v.name === lock?.name)?.hostPath).toBeDefined();
  });

  test('Services, peers and the PodDisruptionBudget fit the StatefulSet', () => {
    const services = ofKind('Service');
    const headless = services.find((s) => s.spec.clusterIP === 'None');
    expect(headless?.metadata.name).toBe(sts.spec.serviceName);
    expect(headless?.spec.publishNotReadyAddresses).toBe(true);
    expect(services.find((s) => s.spec.clusterIP !== 'None')?.spec.ports[0].targetPort).toBe('http');
    for (const s of services) expect(selects(s.spec.selector), s.metadata.name).toBe(true);
    const pdb = one('PodDisruptionBudget');
    expect(selects(pdb.spec.selector.matchLabels)).toBe(true);
    expect(pdb.spec.maxUnavailable).toBe(1);
    expect(settings.BUBBLE_SANDBOX_PEER_URL_PATTERN).toBe(`http://${String(sts.metadata.name)}-{i}.${String(sts.spec.serviceName)}:${String(settings.BUBBLE_SANDBOX_PORT)}`);
    expect(Number(settings.BUBBLE_SANDBOX_PEER_COUNT)).toBe(sts.spec.replicas);
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(Number(settings.BUBBLE_SANDBOX_SHUTDOWN_DRAIN_SECONDS) + Number(settings.BUBBLE_SANDBOX_SHUTDOWN_GRACE_SECONDS));
  });

  test('requests and limits, the securityContext, settings from the ConfigMap and the keys from the Secret', () => {
    for (const k of ['cpu', 'memory']) {
      expect(container.resources.requests[k], k).toBeDefined();
      expect(container.resources.limits[k], k).toBeDefined();
    }
    expect(container.securityContext.privileged).toBe(true);
    expect(container.envFrom).toEqual([{ configMapRef: { name: configMap.metadata.name } }, { secretRef: { name: one('Secret').metadata.name } }]);
    expect(Object.keys(one('Secret').stringData).sort()).toEqual(['BUBBLE_SANDBOX_API_KEY', 'BUBBLE_SANDBOX_CLUSTER_SECRET']);
  });

  test('every setting they name exists, and the ConfigMap with a Secret filled in loads as replica 2', () => {
    const text = fs.readdirSync(K8S).map((f) => fs.readFileSync(path.join(K8S, f), 'utf8')).join('\n');
    expect(settingNames(text).filter((n) => !(n in SETTINGS))).toEqual([]);
    expect(Object.keys(settings).every((k) => k.startsWith(ENV_PREFIX))).toBe(true);
    const config = loadConfig({ ...settings, BUBBLE_SANDBOX_API_KEY: 'k'.repeat(32), BUBBLE_SANDBOX_CLUSTER_SECRET: 's'.repeat(32), HOSTNAME: 'bubble-sandbox-2' });
    expect(config.nodeId).toBe('n2');
    expect(config.peers).toEqual({
      n0: 'http://bubble-sandbox-0.bubble-sandbox-peers:8000', n1: 'http://bubble-sandbox-1.bubble-sandbox-peers:8000', n2: 'http://bubble-sandbox-2.bubble-sandbox-peers:8000',
    });
  });

  test('the Prometheus scrape job reads /metrics of the pods the annotations mark', () => {
    const scrape = all.find((m) => m.__file === 'prometheus-scrape.yaml');
    const job = (scrape?.scrape_configs as Obj[])[0];
    expect(job?.metrics_path).toBe(sts.spec.template.metadata.annotations['prometheus.io/path']);
    expect(job?.kubernetes_sd_configs).toEqual([{ role: 'pod' }]);
  });
});
