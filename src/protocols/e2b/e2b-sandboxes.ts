// What E2B knows of a sandbox that a session does not: the template it was asked for, its
// metadata and envVars, its E2B timeout (a deadline: E2B kills a sandbox `timeout` seconds after
// create, connect or setTimeout, whatever it is doing), and the numeric pids E2B's process
// service speaks of. Held in memory by the E2B adapter, which owns the deadline timer (stopped on
// close). After a restart the sessions are still there and still E2B sandboxes (template = their
// environment), but their metadata and deadlines are gone: the idle timeout applies alone, as it
// always does besides the deadline.
import type { Logger } from 'pino';
import type { SessionInfo, SessionManager } from '../../sessions/session-manager.js';
import { notFound } from './e2b-errors.js';

export interface E2bSandboxState {
  templateId: string;
  metadata: Record<string, string>;
  envVars: Record<string, string>;
  /** Epoch ms at which the E2B timeout ends the session; null: only the idle timeout. */
  endAt: number | null;
  pids: Map<number, string>;
  processIds: Map<string, number>;
  /** What each E2B command was started with (envd's List answers it). */
  configs: Map<number, CommandConfig>;
  nextPid: number;
  /** Cells run through /execute (E2B's execution_count). */
  executions: number;
}

export interface CommandConfig {
  cmd: string;
  args: string[];
  envs: Record<string, string>;
  cwd?: string | undefined;
  tag?: string | undefined;
}

const DEADLINE_CHECK_MS = 1000;

export class E2bSandboxes {
  private readonly states = new Map<string, E2bSandboxState>();
  private timer: NodeJS.Timeout | null = null;
  private sweeping = false;

  constructor(private readonly sessions: SessionManager, private readonly logger: Logger, private readonly now: () => number = Date.now) {}

  start(): void {
    this.timer ??= setInterval(() => {
      if (this.sweeping) return;
      this.sweeping = true;
      void this.endExpired().finally(() => {
        this.sweeping = false;
      });
    }, DEADLINE_CHECK_MS);
    this.timer.unref();
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.states.clear();
  }

  register(id: string, init: { templateId: string; metadata: Record<string, string>; envVars: Record<string, string>; timeoutSeconds: number | undefined }): void {
    const state = this.stateOf(id, init.templateId);
    state.templateId = init.templateId;
    state.metadata = init.metadata;
    state.envVars = init.envVars;
    if (init.timeoutSeconds !== undefined) this.setTimeout(id, init.timeoutSeconds);
  }

  /** E2B's state of a live session (made on first use for one created through /v1). */
  stateOf(id: string, templateId?: string): E2bSandboxState {
    let state = this.states.get(id);
    if (!state) {
      state = { templateId: templateId ?? '', metadata: {}, envVars: {}, endAt: null, pids: new Map(), processIds: new Map(), configs: new Map(), nextPid: 1000, executions: 0 };
      this.states.set(id, state);
    }
    return state;
  }

  setTimeout(id: string, seconds: number): void {
    this.stateOf(id).endAt = this.now() + seconds * 1000;
  }

  forget(id: string): void {
    this.states.delete(id);
  }

  /** The E2B pid of a session process, given on first sight. */
  pidOf(id: string, processId: string, config?: CommandConfig): number {
    const state = this.stateOf(id);
    let pid = state.processIds.get(processId);
    if (pid === undefined) {
      pid = state.nextPid++;
      state.processIds.set(processId, pid);
      state.pids.set(pid, processId);
    }
    if (config) state.configs.set(pid, config);
    return pid;
  }

  /** Forgets the pids of processes the session no longer lists (it keeps only the newest ended ones). */
  prunePids(id: string, listed: readonly string[]): void {
    const state = this.stateOf(id);
    const keep = new Set(listed);
    for (const [processId, pid] of state.processIds) {
      if (keep.has(processId)) continue;
      state.processIds.delete(processId);
      state.pids.delete(pid);
      state.configs.delete(pid);
    }
  }

  /** The newest command started with this tag. */
  pidOfTag(id: string, tag: string): number {
    const found = [...this.stateOf(id).configs].reverse().find(([, c]) => c.tag === tag);
    if (!found) throw notFound(`process with tag '${tag.slice(0, 100)}' not found`);
    return found[0];
  }

  processIdOf(id: string, pid: number): string {
    const processId = this.stateOf(id).pids.get(pid);
    if (processId === undefined) throw notFound(`process with pid ${pid} not found`);
    return processId;
  }

  /** When E2B says the sandbox ends: its deadline, or the idle expiry if that comes first. */
  endAtOf(session: SessionInfo): Date {
    const idle = Date.parse(session.expires_at);
    const deadline = this.states.get(session.session_id)?.endAt ?? null;
    return new Date(deadline !== null && deadline < idle ? deadline : idle);
  }

  private async endExpired(): Promise<void> {
    const live = new Set(this.sessions.list().map((s) => s.session_id));
    const now = this.now();
    for (const [id, state] of [...this.states]) {
      if (!live.has(id)) {
        this.states.delete(id);
        continue;
      }
      if (state.endAt === null || state.endAt > now) continue;
      this.states.delete(id);
      try {
        await this.sessions.delete(id, true);
        this.logger.info({ audit: 'session.deleted', session_id: id, reason: 'e2b_timeout' }, 'E2B sandbox timeout reached: session deleted');
      } catch (err) {
        this.logger.warn({ err, session_id: id }, 'could not delete a session at its E2B timeout');
      }
    }
  }
}
