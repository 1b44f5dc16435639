// Root filesystem environments through the real service: `/` is the imported tree (its
// os-release and marker, not the host's /usr), and writable_root sessions keep their writes in
// an overlay of their own (seen by the next execution, not by another session, never in the
// shared tree or on the host, bounded by the disk quota, kept across a restart).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { PROJECT_ROOT } from '../helpers/host-env.js';
import { waitUntil } from '../helpers/host-processes.js';
import { api, runCli, startServer, useWorkspaceDir, type ExecResult } from '../helpers/server-process.js';

const canRun = process.getuid?.() === 0 || process.env.CI === 'true';
const workspace = useWorkspaceDir('bs-e2e-rootfs-', 'all');
const QUOTA = String(16 * 1024 * 1024);
const serverEnv = { BUBBLE_SANDBOX_WORKSPACE_QUOTA_BYTES: QUOTA, BUBBLE_SANDBOX_WORKSPACE_POOL_SIZE: '2' };

function treeOf(name: string): string {
  const root = path.join(workspace.path, 'rootfs');
  const rec = JSON.parse(fs.readFileSync(path.join(root, 'names', `${name}.json`), 'utf8')) as { sha256: string };
  return path.join(root, 'objects', rec.sha256);
}

describe.skipIf(!canRun)('rootfs environments', () => {
  beforeAll(async () => {
    const archive = path.join(workspace.path, 'mini.tar');
    expect(spawnSync('bash', [path.join(PROJECT_ROOT, 'test/fixtures/rootfs/make-mini-rootfs.sh'), archive]).status).toBe(0);
    const r = await runCli(['rootfs', 'import', 'mini', archive], { env: { BUBBLE_SANDBOX_WORKSPACE_DIR: workspace.path } });
    expect(r.code, r.stderr).toBe(0);
  });

  test('a rootfs environment is listed and is `/`, read-only, without the host /usr', async () => {
    const server = await startServer({ workspaceDir: workspace.path, env: serverEnv });
    const envs = await api<{ environments: { name: string; kind: string; python: boolean }[] }>(server.baseUrl, 'GET', '/v1/environments');
    expect(envs.body.environments).toContainEqual(expect.objectContaining({ name: 'mini', kind: 'rootfs', python: false }));
    expect(envs.body.environments).toContainEqual(expect.objectContaining({ name: 'bare', kind: 'venv' }));

    expect((await api(server.baseUrl, 'POST', '/v1/sessions', { session_id: 'ro', environment: 'mini' })).status).toBe(201);
    const r = await api<ExecResult>(server.baseUrl, 'POST', '/v1/sessions/ro/execute', {
      command: 'cat /etc/os-release /etc/marker; ls /usr/share 2>&1; id -u; touch /usr/local/x 2>&1; echo $?',
    });
    expect(r.body.stdout).toContain('PRETTY_NAME="Bubble Test Linux"');
    expect(r.body.stdout).toContain('mini-rootfs-marker');
    expect(r.body.stdout).toMatch(/cannot access '\/usr\/share'/); // the host's /usr/share is not there
    expect(r.body.stdout).toMatch(/^1000$/m);
    expect(r.body.stdout).toMatch(/Read-only file system\n1\n$/);

    // No python3 in it: script, run_code and processes are a clear 422, command and argv work.
    const script = await api(server.baseUrl, 'POST', '/v1/sessions/ro/execute', { script: 'print(1)' });
    expect(script.status).toBe(422);
    expect(script.body).toMatchObject({ code: 'NO_PYTHON' });
    const code = await api(server.baseUrl, 'POST', '/v1/sessions/ro/run_code', { code: '1' });
    expect(code.status).toBe(422);
    const proc = await api(server.baseUrl, 'POST', '/v1/sessions/ro/processes', { argv: ['cat', '/etc/marker'] });
    expect(proc.status).toBe(422);
    expect(proc.body).toMatchObject({ code: 'NO_PYTHON' });
    const argv = await api<ExecResult>(server.baseUrl, 'POST', '/v1/sessions/ro/execute', { argv: ['cat', '/etc/marker'] });
    expect(argv.body).toMatchObject({ status: 'ok', stdout: 'mini-rootfs-marker\n' });

    const oneShot = await api<ExecResult>(server.baseUrl, 'POST', '/v1/execute', { environment: 'mini', command: 'cat /etc/marker' });
    expect(oneShot.body).toMatchObject({ status: 'ok', stdout: 'mini-rootfs-marker\n' });

    // An import while the service runs is usable at once, without a restart.
    expect((await api(server.baseUrl, 'POST', '/v1/sessions', { environment: 'mini-later' })).status).toBe(404);
    const later = await runCli(['rootfs', 'import', 'mini-later', path.join(workspace.path, 'mini.tar')], { env: { BUBBLE_SANDBOX_WORKSPACE_DIR: workspace.path } });
    expect(later.code, later.stderr).toBe(0);
    expect((await api(server.baseUrl, 'POST', '/v1/sessions', { environment: 'mini-later' })).status).toBe(201);
    await server.stop();
  });

  test('writable_root: writes persist for the session only, count against its quota, survive a restart', async () => {
    const first = await startServer({ workspaceDir: workspace.path, env: serverEnv });
    const a = await api<{ writable_root: boolean }>(first.baseUrl, 'POST', '/v1/sessions', { session_id: 'wa', environment: 'mini', writable_root: true });
    expect(a.status).toBe(201);
    expect(a.body.writable_root).toBe(true);
    expect((await api(first.baseUrl, 'POST', '/v1/sessions', { session_id: 'wb', environment: 'mini', writable_root: true })).status).toBe(201);
    expect((await api(first.baseUrl, 'POST', '/v1/sessions', { session_id: 'wa', environment: 'mini' })).body).toMatchObject({ code: 'SESSION_CONFLICT' });

    const write = await api<ExecResult>(first.baseUrl, 'POST', '/v1/sessions/wa/execute', { command: 'id -u && mkdir -p /usr/local/lib/tool && echo installed > /usr/local/lib/tool/file && echo etc > /etc/added' });
    expect(write.body).toMatchObject({ status: 'ok', stdout: '0\n' });
    expect(write.body.files.created).toEqual([]); // nothing of it in /workspace
    const again = await api<ExecResult>(first.baseUrl, 'POST', '/v1/sessions/wa/execute', { command: 'cat /usr/local/lib/tool/file /etc/added' });
    expect(again.body.stdout).toBe('installed\netc\n');
    const other = await api<ExecResult>(first.baseUrl, 'POST', '/v1/sessions/wb/execute', { command: 'cat /usr/local/lib/tool/file' });
    expect(other.body.exit_code).not.toBe(0);
    expect(fs.existsSync(path.join(treeOf('mini'), 'usr/local/lib/tool'))).toBe(false);
    expect(fs.existsSync(path.join(treeOf('mini'), 'etc/added'))).toBe(false);
    expect(fs.existsSync('/usr/local/lib/tool/file')).toBe(false);
    const mountinfo = await api<ExecResult>(first.baseUrl, 'POST', '/v1/sessions/wa/execute', { argv: ['cat', '/proc/self/mountinfo'] });
    expect(mountinfo.body.stdout).toMatch(/ overlay overlay /);
    expect(mountinfo.body.stdout).not.toContain(workspace.path); // no host path in the overlay's options
    const listing = await api<{ files: { path: string }[] }>(first.baseUrl, 'GET', '/v1/sessions/wa/files');
    expect(listing.body.files).toEqual([]);

    // Past the quota: ENOSPC in the sandbox, the service carries on.
    const fill = await api<ExecResult>(first.baseUrl, 'POST', '/v1/sessions/wa/execute', { command: 'dd if=/dev/zero of=/opt/fill bs=1M count=64' });
    expect(fill.body.exit_code).not.toBe(0);
    expect(fill.body.stderr).toMatch(/No space left on device/);
    expect((await api(first.baseUrl, 'GET', '/healthz')).status).toBe(200);
    expect((await api<ExecResult>(first.baseUrl, 'POST', '/v1/sessions/wa/execute', { command: 'rm /opt/fill && echo freed' })).body.stdout).toBe('freed\n');
    await first.stop();

    const second = await startServer({ workspaceDir: workspace.path, env: serverEnv });
    const info = await api<{ writable_root: boolean }>(second.baseUrl, 'GET', '/v1/sessions/wa');
    expect(info.body.writable_root).toBe(true);
    expect((await api<ExecResult>(second.baseUrl, 'POST', '/v1/sessions/wa/execute', { command: 'cat /usr/local/lib/tool/file' })).body.stdout).toBe('installed\n');
    // Kept with clear_data=false, gone with the session.
    expect((await api(second.baseUrl, 'DELETE', '/v1/sessions/wa?clear_data=false')).status).toBe(204);
    expect((await api(second.baseUrl, 'POST', '/v1/sessions', { session_id: 'wa', environment: 'mini', writable_root: true })).status).toBe(201);
    expect((await api<ExecResult>(second.baseUrl, 'POST', '/v1/sessions/wa/execute', { command: 'cat /usr/local/lib/tool/file' })).body.stdout).toBe('installed\n');
    expect((await api(second.baseUrl, 'DELETE', '/v1/sessions/wa')).status).toBe(204);
    expect(fs.existsSync(path.join(workspace.path, 'sessions', 'wa'))).toBe(false);
    await second.stop();
    const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8');
    expect(mounts).not.toContain(path.join(workspace.path, 'sessions', 'wa'));
  });

  test('writable_root: the root layer and /workspace share one quota, and the layer stays out of the files API', async () => {
    const server = await startServer({ workspaceDir: workspace.path, env: serverEnv });
    const check = async (id: string) => {
      const exec = async (command: string) => (await api<ExecResult>(server.baseUrl, 'POST', `/v1/sessions/${id}/execute`, { command })).body;
      const tenMiB = 'bs=1M count=10'; // 62.5% of the 16 MiB quota: two of them cannot both fit
      // The root layer first: then /workspace has less than the quota left.
      expect((await exec(`dd if=/dev/zero of=/usr/local/big ${tenMiB} 2>&1 && echo root-ok`)).stdout).toContain('root-ok');
      const ws = await exec(`dd if=/dev/zero of=/workspace/big ${tenMiB}`);
      expect(ws.exit_code).not.toBe(0);
      expect(ws.stderr).toMatch(/No space left on device/);
      expect((await api(server.baseUrl, 'GET', '/healthz')).status).toBe(200);
      // The files API sees the workspace only: never the upper dir's /usr/local/big.
      const listing = await api<{ files: { path: string }[] }>(server.baseUrl, 'GET', `/v1/sessions/${id}/files`);
      expect(listing.body.files.map((f) => f.path)).toEqual(['big']);
      expect(JSON.stringify(listing.body)).not.toMatch(/usr|upper|local/);
      expect((await exec('ls -a /workspace')).stdout).toBe('.\n..\nbig\n');
      expect((await exec('rm /workspace/big /usr/local/big && echo freed')).stdout).toBe('freed\n');
      // And the other way round: /workspace first, then the root layer runs out.
      const first = await exec(`dd if=/dev/zero of=/workspace/big ${tenMiB} 2>&1 && echo ws-ok`);
      expect(first.stdout).toContain('ws-ok');
      expect(first.files.created).toEqual(['big']);
      const root = await exec(`dd if=/dev/zero of=/usr/local/big ${tenMiB}`);
      expect(root.exit_code).not.toBe(0);
      expect(root.stderr).toMatch(/No space left on device/);
      expect(root.files.created).toEqual([]);
      // One image for the session: no second one for the root layer.
      const dir = path.join(workspace.path, 'sessions', id);
      expect(fs.existsSync(path.join(dir, 'root-layer'))).toBe(false);
      expect(fs.statSync(path.join(dir, 'image')).mode & 0o777).toBe(0o700);
      // The workspace is a bind of the image's workspace/, as nosuid,nodev as the image itself.
      const wsMount = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === path.join(fs.realpathSync(dir), 'workspace'));
      expect(wsMount?.split(' ')[3]).toBe('/workspace');
      expect(wsMount?.split(' ')[5]).toMatch(/nosuid.*nodev|nodev.*nosuid/);
      expect((await api(server.baseUrl, 'DELETE', `/v1/sessions/${id}`)).status).toBe(204);
      expect(fs.existsSync(dir)).toBe(false);
    };
    // The log line may come a moment after the answer: wait for it.
    const sourceOf = (id: string) => waitUntil(() => server.jsonLogs().find((l) => l.audit === 'session.created' && l.session_id === id)?.workspace, (w) => w !== undefined, 10_000);
    // A shared-layout pool entry is ready once its workspace is the bind of the image's workspace/.
    const poolDir = path.join(fs.realpathSync(workspace.path), 'pool');
    const sharedEntryReady = () => fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' '))
      .some((f) => f[3] === '/workspace' && f[4]?.startsWith(`${poolDir}/`) === true && f[4].endsWith('/workspace'));
    // The first writable-root create re-lays a new workspace out; later ones claim pool entries built so.
    expect((await api(server.baseUrl, 'POST', '/v1/sessions', { session_id: 'wq', environment: 'mini', writable_root: true })).status).toBe(201);
    expect(await sourceOf('wq')).toBe('built');
    await check('wq');
    await waitUntil(sharedEntryReady, (ready) => ready, 30_000);
    expect((await api(server.baseUrl, 'POST', '/v1/sessions', { session_id: 'wq2', environment: 'mini', writable_root: true })).status).toBe(201);
    expect(await sourceOf('wq2')).toBe('pool');
    await check('wq2');
    await server.stop();
    expect(fs.readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(path.join(workspace.path, 'sessions', 'wq'));
    expect(fs.readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(path.join(workspace.path, 'pool'));
  });

  test('writable_root over a kept workspace without one, and with quotas off: the separate root layer', async () => {
    const server = await startServer({ workspaceDir: workspace.path, env: serverEnv });
    expect((await api(server.baseUrl, 'POST', '/v1/sessions', { session_id: 'wk', environment: 'mini' })).status).toBe(201);
    expect((await api<ExecResult>(server.baseUrl, 'POST', '/v1/sessions/wk/execute', { command: 'echo kept > /workspace/k' })).body.exit_code).toBe(0);
    expect((await api(server.baseUrl, 'DELETE', '/v1/sessions/wk?clear_data=false')).status).toBe(204);
    expect((await api(server.baseUrl, 'POST', '/v1/sessions', { session_id: 'wk', environment: 'mini', writable_root: true })).status).toBe(201);
    const r = await api<ExecResult>(server.baseUrl, 'POST', '/v1/sessions/wk/execute', { command: 'echo x > /usr/local/x && cat /workspace/k /usr/local/x' });
    expect(r.body.stdout).toBe('kept\nx\n');
    const dir = path.join(workspace.path, 'sessions', 'wk');
    expect(fs.existsSync(path.join(dir, 'root-layer'))).toBe(true);
    expect((await api(server.baseUrl, 'DELETE', '/v1/sessions/wk')).status).toBe(204);
    await server.stop();
    expect(fs.readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(dir);

    const off = await startServer({ workspaceDir: workspace.path, env: { ...serverEnv, BUBBLE_SANDBOX_WORKSPACE_QUOTA: 'off' } });
    expect((await api(off.baseUrl, 'POST', '/v1/sessions', { session_id: 'wo', environment: 'mini', writable_root: true })).status).toBe(201);
    expect((await api<ExecResult>(off.baseUrl, 'POST', '/v1/sessions/wo/execute', { command: 'echo y > /usr/local/y && cat /usr/local/y' })).body.stdout).toBe('y\n');
    expect((await api<{ files: unknown[] }>(off.baseUrl, 'GET', '/v1/sessions/wo/files')).body.files).toEqual([]);
    expect((await api(off.baseUrl, 'DELETE', '/v1/sessions/wo')).status).toBe(204);
    await off.stop();
    expect(fs.readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(path.join(workspace.path, 'sessions', 'wo'));
  });

  test('writable_root in a venv environment: /usr and the venv take writes, for the session only', async () => {
    const server = await startServer({ workspaceDir: workspace.path, env: serverEnv });
    expect((await api(server.baseUrl, 'POST', '/v1/sessions', { session_id: 'va', environment: 'bare', writable_root: true })).status).toBe(201);
    expect((await api(server.baseUrl, 'POST', '/v1/sessions', { session_id: 'vb', environment: 'bare', writable_root: true })).status).toBe(201);
    const site = '$(python -c "import sysconfig; print(sysconfig.get_paths()[\'purelib\'])")';
    const write = await api<ExecResult>(server.baseUrl, 'POST', '/v1/sessions/va/execute', {
      command: `id -u && echo 'VALUE = 7' > ${site}/bubble_added.py && mkdir -p /usr/local/share/bubble-added && echo usr > /usr/local/share/bubble-added/file`,
    });
    expect(write.body).toMatchObject({ status: 'ok', stdout: '0\n' });
    const use = await api<ExecResult>(server.baseUrl, 'POST', '/v1/sessions/va/execute', { script: 'import bubble_added\nprint(bubble_added.VALUE)\nprint(open("/usr/local/share/bubble-added/file").read(), end="")' });
    expect(use.body).toMatchObject({ status: 'ok', stdout: '7\nusr\n' });
    const other = await api<ExecResult>(server.baseUrl, 'POST', '/v1/sessions/vb/execute', { command: 'cat /usr/local/share/bubble-added/file || python -c "import bubble_added"' });
    expect(other.body.exit_code).not.toBe(0);
    expect(fs.existsSync('/usr/local/share/bubble-added')).toBe(false);
    expect(fs.readdirSync(path.join(PROJECT_ROOT, 'environments/bare/.venv/lib'), { recursive: true }).map(String).some((p) => p.endsWith('bubble_added.py'))).toBe(false);
    // Everything else of the host view stays read-only.
    const ro = await api<ExecResult>(server.baseUrl, 'POST', '/v1/sessions/va/execute', { command: 'touch /etc/x 2>&1; touch /newdir 2>&1; true' });
    expect(ro.body.stdout).toMatch(/touch: cannot touch '\/etc\/x'/);

    // After a crash the overlays are still mounted: the next start uses them, a delete removes them.
    expect(await server.stop('SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
    const again = await startServer({ workspaceDir: workspace.path, env: serverEnv });
    expect((await api<ExecResult>(again.baseUrl, 'POST', '/v1/sessions/va/execute', { command: 'cat /usr/local/share/bubble-added/file' })).body.stdout).toBe('usr\n');
    for (const id of ['va', 'vb']) expect((await api(again.baseUrl, 'DELETE', `/v1/sessions/${id}`)).status).toBe(204);
    await again.stop();
    const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8');
    expect(mounts).not.toContain(path.join(workspace.path, 'sessions', 'va'));
    expect(mounts).not.toContain(path.join(workspace.path, 'sessions', 'vb'));
    // Pool entries (of both layouts) the crash left mounted were removed by the next start.
    expect(mounts).not.toContain(path.join(workspace.path, 'pool'));
  });
});
